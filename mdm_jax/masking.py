"""Time sampling and the forward (masking) process of a masked diffusion model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_batch_size(batch_size: object) -> int:
  if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
      or batch_size < 1):
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  return int(batch_size)


def sample_times(key: jax.Array, batch_size: int, *, antithetic: bool = True,
                 t_min: float = 1e-5) -> jax.Array:
  """Diffusion times t_B, float32 in (0, 1], and >= t_min.

  With `antithetic`, one shared u ~ U[0, 1) gives t_i = (i + 1 - u) / B: exactly one
  time in each bin (i/B, (i+1)/B] (the set {u' + i/B mod 1} of md4/MDLM, kept away
  from 0). Otherwise the times are i.i.d. uniform on (0, 1]. Both are > 0 even with
  t_min = 0; t_min (default 1e-5) caps the ELBO weight's spread.
  """
  b = _check_batch_size(batch_size)
  if not isinstance(t_min, (int, float)) or not 0.0 <= t_min < 1.0:
    raise ValueError(f"t_min must be a float in [0, 1), got {t_min!r}")
  if antithetic:
    u = jax.random.uniform(key, (), dtype=jnp.float32)
    t_B = (jnp.arange(b, dtype=jnp.float32) + (1.0 - u)) / b
  else:
    t_B = 1.0 - jax.random.uniform(key, (b,), dtype=jnp.float32)
  return jnp.clip(t_B, t_min, 1.0)


def sample_discrete_times(key: jax.Array, batch_size: int, num_steps: int, *,
                          antithetic: bool = True) -> jax.Array:
  """Discrete times t_B in {1/T, 2/T, ..., 1} (float32), uniform over the T values.

  Uses `sample_times` and rounds up to the grid, so antithetic sampling stays
  stratified (with B == T every grid time appears exactly once).
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  t_B = sample_times(key, batch_size, antithetic=antithetic, t_min=0.0)
  i_B = jnp.clip(jnp.ceil(t_B * num_steps), 1, num_steps)
  return (i_B / num_steps).astype(jnp.float32)


def mask_tokens(key: jax.Array, x0_BxL: jax.Array, maskable_BxL: jax.Array,
                alpha_B: jax.Array, mask_id: int) -> tuple[jax.Array, jax.Array]:
  """Forward process: each maskable token becomes `mask_id` with prob 1 - alpha_B[b].

  Returns (xt_BxL with x0's dtype, masked_BxL bool); non-maskable positions are never
  masked and keep their x0 value.
  """
  if len(getattr(x0_BxL, "shape", ())) != 2 or not jnp.issubdtype(x0_BxL.dtype, jnp.integer):
    raise ValueError("x0_BxL must be an integer array of shape [B, L], got "
                     f"{getattr(x0_BxL, 'dtype', type(x0_BxL))}"
                     f"{tuple(getattr(x0_BxL, 'shape', ()))}")
  b, l = x0_BxL.shape
  if getattr(maskable_BxL, "shape", None) != (b, l) or maskable_BxL.dtype != jnp.bool_:
    raise ValueError(f"maskable_BxL must be a bool array of shape {(b, l)}, got "
                     f"{getattr(maskable_BxL, 'dtype', type(maskable_BxL))}"
                     f"{tuple(getattr(maskable_BxL, 'shape', ()))}")
  alpha_B = jnp.asarray(alpha_B)
  if alpha_B.shape != (b,) or not jnp.issubdtype(alpha_B.dtype, jnp.floating):
    raise ValueError(f"alpha_B must be a float array of shape {(b,)}, got "
                     f"{alpha_B.dtype}{tuple(alpha_B.shape)}")
  if isinstance(mask_id, bool) or not isinstance(mask_id, (int, np.integer)) or mask_id < 0:
    raise ValueError(f"mask_id must be a non-negative int, got {mask_id!r}")
  u_BxL = jax.random.uniform(key, (b, l), dtype=jnp.float32)
  masked_BxL = (u_BxL < (1.0 - alpha_B.astype(jnp.float32))[:, None]) & maskable_BxL
  xt_BxL = jnp.where(masked_BxL, jnp.asarray(mask_id, x0_BxL.dtype), x0_BxL)
  return xt_BxL, masked_BxL
