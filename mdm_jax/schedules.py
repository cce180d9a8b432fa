"""Masking schedules alpha(t) of the forward process, their derivatives and ELBO weights.

alpha(t) is the probability that a token is still clean at time t in [0, 1]:
alpha(0) = 1 (clean data), alpha(1) = 0 (every token masked). Names:

- 'linear': alpha = 1 - t
- 'cosine': alpha = 1 - cos(pi/2 (1 - t))
- 'polyK':  alpha = 1 - t^K for an integer K >= 1 ('poly1' is 'linear')

alpha is clipped into [eps, 1 - eps]; `dalpha` is the analytic derivative of the
unclipped alpha, and `weight(t) = -alpha'(t) / (1 - alpha(t))` is the continuous-time
ELBO weight (1/t for the linear schedule; > 0 on (0, 1)). Since the masking
probability 1 - alpha(t) cancels against the weight's denominator, the integrand
w(t) (1 - alpha(t)) = -alpha'(t) integrates to exactly 1 over [0, 1] despite the clip.

All methods are elementwise, accept Python floats or arrays and return float32.
`1 - alpha(t)` is computed directly (`mask_prob`) to avoid cancellation near t = 0.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re

import jax
import jax.numpy as jnp

VALID_NAMES = "'linear', 'cosine', 'polyK' (integer K >= 1, e.g. 'poly2', 'poly3')"
_POLY_RE = re.compile(r"^poly([1-9][0-9]*)$")
_HALF_PI = 0.5 * math.pi


def _parse(name: object) -> tuple[str, int]:
  """'linear' -> ('poly', 1); 'polyK' -> ('poly', K); 'cosine' -> ('cosine', 0)."""
  if isinstance(name, str):
    if name == "linear":
      return "poly", 1
    if name == "cosine":
      return "cosine", 0
    m = _POLY_RE.match(name)
    if m:
      return "poly", int(m.group(1))
  raise ValueError(f"unknown schedule {name!r}; valid names: {VALID_NAMES}")


def _as_time(t: jax.typing.ArrayLike) -> jax.Array:
  return jnp.clip(jnp.asarray(t, dtype=jnp.float32), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A masking schedule; hashable, so it can be a static argument of jax.jit."""
  name: str
  eps: float = 1e-4

  def __post_init__(self):
    _parse(self.name)
    if (isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real)
        or not 0.0 < self.eps < 0.5):
      raise ValueError(f"schedule eps must be a float in (0, 0.5), got {self.eps!r}")

  @property
  def power(self) -> int:
    """K of 'polyK' (1 for 'linear'); 0 for 'cosine'."""
    return _parse(self.name)[1]

  def mask_prob(self, t: jax.typing.ArrayLike) -> jax.Array:
    """1 - alpha(t): the probability that a token is masked at time t, in [eps, 1-eps]."""
    t = _as_time(t)
    kind, k = _parse(self.name)
    if kind == "cosine":
      m = jnp.sin(_HALF_PI * t)  # = cos(pi/2 (1 - t))
    else:
      m = t ** k
    return jnp.clip(m, self.eps, 1.0 - self.eps)

  def alpha(self, t: jax.typing.ArrayLike) -> jax.Array:
    """Probability that a token is still clean at time t, in [eps, 1-eps]."""
    return 1.0 - self.mask_prob(t)

  def dalpha(self, t: jax.typing.ArrayLike) -> jax.Array:
    """d alpha / dt of the unclipped schedule (<= 0)."""
    t = _as_time(t)
    kind, k = _parse(self.name)
    if kind == "cosine":
      # d/dt [1 - sin(pi t / 2)]; sin(pi/2 (1-t)) is exactly 0 at t = 1.
      return -_HALF_PI * jnp.sin(_HALF_PI * (1.0 - t))
    if k == 1:
      return -jnp.ones_like(t)
    return -k * t ** (k - 1)

  def weight(self, t: jax.typing.ArrayLike) -> jax.Array:
    """Continuous-time ELBO weight -alpha'(t) / (1 - alpha(t)) (>= 0)."""
    return -self.dalpha(t) / self.mask_prob(t)


def get_schedule(name: str | Schedule, eps: float = 1e-4) -> Schedule:
  """Schedule by name ('linear', 'cosine', 'poly2', ...); a Schedule passes through."""
  if isinstance(name, Schedule):
    return name
  return Schedule(name=name, eps=eps)
