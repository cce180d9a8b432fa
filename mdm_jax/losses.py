"""Training losses: MDM negative ELBO (continuous and T-step), AR and pi-learner losses.

All losses are pure, jit-friendly functions (pass the `Schedule` as a static
argument) that do their math in float32 whatever the logits' dtype, and return
(loss, metrics) with scalar metrics. Log-likelihoods are in nats;
`bits = nats / ln 2`.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax import schedules as schedules_lib

PI_KINDS = ("identity", "much_closer", "closer", "uniform")
LN2 = math.log(2.0)

Metrics = dict[str, jax.Array]


def nats_to_bits(x: jax.typing.ArrayLike) -> jax.Array:
  return jnp.asarray(x) / LN2


# ----------------------------------------------------------------------------------
# Argument checks (Python-side, before tracing; they only look at shapes and dtypes).


def _desc(x: Any) -> str:
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"{x.dtype}{tuple(x.shape)}"
  return type(x).__name__


def _check_logits(logits: Any) -> tuple[int, int, int]:
  if len(getattr(logits, "shape", ())) != 3 or not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be a float array of shape [B, L, V], got {_desc(logits)}")
  return tuple(logits.shape)


def _check_tokens(name: str, x: Any, b: int, l: int) -> None:
  if (len(getattr(x, "shape", ())) != 2 or not jnp.issubdtype(x.dtype, jnp.integer)):
    raise ValueError(f"{name} must be an integer array of shape [B, L]=[{b}, {l}], got {_desc(x)}")
  if tuple(x.shape) != (b, l):
    raise ValueError(f"{name} has shape {tuple(x.shape)} but logits imply [B, L]=[{b}, {l}]")


def _check_bool(name: str, x: Any, b: int, l: int) -> None:
  if tuple(getattr(x, "shape", ())) != (b, l) or x.dtype != jnp.bool_:
    raise ValueError(f"{name} must be a bool array of shape [{b}, {l}], got {_desc(x)}")


def _check_times(t: Any, b: int) -> None:
  if tuple(getattr(t, "shape", ())) != (b,) or not jnp.issubdtype(t.dtype, jnp.floating):
    raise ValueError(f"t_B must be a float array of shape [{b}], got {_desc(t)}")


def _check_mask_id(mask_id: Any, v: int) -> None:
  if mask_id is None:
    return
  if (isinstance(mask_id, bool) or not isinstance(mask_id, (int, np.integer))
      or not 0 <= mask_id < v):
    raise ValueError(f"mask_id must be None or an int in [0, V={v}), got {mask_id!r}")


def _check_int(name: str, x: Any, low: int) -> int:
  if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < low:
    raise ValueError(f"{name} must be an int >= {low}, got {x!r}")
  return int(x)


# ----------------------------------------------------------------------------------
# Shared pieces.


def _log_probs(logits_BxLxV: jax.Array, mask_id: int | None) -> jax.Array:
  """float32 log-softmax; the MASK logit (if given) gets probability 0."""
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  if mask_id is not None:
    is_mask_V = jnp.arange(logits_BxLxV.shape[-1]) == mask_id
    logits_BxLxV = jnp.where(is_mask_V, -jnp.inf, logits_BxLxV)
  return jax.nn.log_softmax(logits_BxLxV, axis=-1)


def _gather(logp_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None].astype(jnp.int32),
                             axis=-1)[..., 0]


WEIGHTINGS = ("elbo", "flat")


def _weighted_elbo(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, weight_B,
                   mask_id, weighting: str = "elbo") -> tuple[jax.Array, Metrics]:
  logp_BxLxV = _log_probs(logits_BxLxV, mask_id)
  ce_BxL = -_gather(logp_BxLxV, x0_BxL)
  on_BxL = masked_BxL & maskable_BxL
  on_f_BxL = on_BxL.astype(jnp.float32)
  ce_B = jnp.sum(jnp.where(on_BxL, ce_BxL, 0.0), axis=1)
  num_maskable = jnp.sum(maskable_BxL.astype(jnp.float32))
  num_masked = jnp.sum(on_f_BxL)
  elbo = jnp.sum(weight_B * ce_B) / jnp.maximum(num_maskable, 1.0)
  masked_ce = jnp.sum(ce_B) / jnp.maximum(num_masked, 1.0)
  loss = elbo if weighting == "elbo" else masked_ce
  correct_BxL = jnp.argmax(logp_BxLxV, axis=-1) == x0_BxL
  metrics = {
      "loss": loss,
      "nats_per_token": elbo,
      "bits_per_token": elbo / LN2,
      "masked_ce": masked_ce,
      "masked_accuracy": jnp.sum(correct_BxL & on_BxL) / jnp.maximum(num_masked, 1.0),
      "mask_rate": num_masked / jnp.maximum(num_maskable, 1.0),
      "num_maskable": num_maskable,
  }
  return loss, metrics


def _check_mdm_args(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B, mask_id,
                    weighting="elbo"):
  if weighting not in WEIGHTINGS:
    raise ValueError(f"weighting={weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
  b, l, v = _check_logits(logits_BxLxV)
  _check_tokens("x0_BxL", x0_BxL, b, l)
  _check_bool("masked_BxL", masked_BxL, b, l)
  _check_bool("maskable_BxL", maskable_BxL, b, l)
  _check_times(t_B, b)
  _check_mask_id(mask_id, v)


# ----------------------------------------------------------------------------------
# Masked diffusion losses.


def mdm_loss(logits_BxLxV: jax.Array, x0_BxL: jax.Array, masked_BxL: jax.Array,
             maskable_BxL: jax.Array, t_B: jax.Array,
             schedule: schedules_lib.Schedule | str, *,
             mask_id: int | None = None,
             weighting: str = "elbo") -> tuple[jax.Array, Metrics]:
  """Continuous-time negative ELBO per maskable token (a Monte Carlo estimate).

  loss = sum_b w(t_b) * sum_{i masked & maskable} -log p(x0[b, i] | x_t[b])
         / (number of maskable tokens in the batch), w(t) = -alpha'(t)/(1-alpha(t)).
  With t ~ U(0, 1] and masks from `mask_tokens(..., schedule.alpha(t), ...)` its
  expectation is the NELBO in nats per maskable token. If `mask_id` is given, the
  MASK logit is excluded from the softmax (the model never predicts MASK).

  weighting='flat' returns instead the unweighted mean cross-entropy over the
  masked maskable tokens of the batch (as Ye et al.'s puzzle code trains; no 1/t,
  so small-t batches do not dominate the gradient). metrics['nats_per_token'] is
  the ELBO estimate either way.
  """
  _check_mdm_args(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B, mask_id,
                  weighting)
  schedule = schedules_lib.get_schedule(schedule)
  weight_B = schedule.weight(t_B)
  return _weighted_elbo(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, weight_B, mask_id,
                        weighting)


def discrete_weight(schedule: schedules_lib.Schedule | str, t_B: jax.Array,
                    num_steps: int) -> jax.Array:
  """T * (alpha_s - alpha_t) / (1 - alpha_t), s = t - 1/T, alpha_0 := 1 exactly.

  t_B is rounded to the grid {1/T, ..., 1}.
  """
  schedule = schedules_lib.get_schedule(schedule)
  num_steps = _check_int("num_steps", num_steps, 1)
  i_B = jnp.clip(jnp.round(jnp.asarray(t_B, jnp.float32) * num_steps), 1, num_steps)
  t_B = i_B / num_steps
  s_B = (i_B - 1) / num_steps
  mask_t_B = schedule.mask_prob(t_B)
  mask_s_B = jnp.where(i_B > 1, schedule.mask_prob(s_B), 0.0)
  return num_steps * (mask_t_B - mask_s_B) / mask_t_B


def mdm_discrete_loss(logits_BxLxV: jax.Array, x0_BxL: jax.Array, masked_BxL: jax.Array,
                      maskable_BxL: jax.Array, t_B: jax.Array,
                      schedule: schedules_lib.Schedule | str, num_steps: int, *,
                      mask_id: int | None = None,
                      weighting: str = "elbo") -> tuple[jax.Array, Metrics]:
  """T-step negative ELBO per maskable token (a Monte Carlo estimate).

  Like `mdm_loss` with t_B in {1/T, ..., 1} (see `masking.sample_discrete_times`)
  and weight T * (alpha_s - alpha_t) / (1 - alpha_t), s = t - 1/T.
  """
  _check_mdm_args(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B, mask_id,
                  weighting)
  num_steps = _check_int("num_steps", num_steps, 1)
  weight_B = discrete_weight(schedule, t_B, num_steps)
  return _weighted_elbo(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, weight_B, mask_id,
                        weighting)


# ----------------------------------------------------------------------------------
# Autoregressive and pi-learner losses.


def _token_ce(logp_BxMxV: jax.Array, targets_BxM: jax.Array, on_BxM: jax.Array
              ) -> tuple[jax.Array, Metrics]:
  """Mean cross-entropy over the counted targets (on_BxM), with its metrics."""
  ce_BxM = -_gather(logp_BxMxV, targets_BxM)
  count = jnp.maximum(jnp.sum(on_BxM.astype(jnp.float32)), 1.0)
  loss = jnp.sum(jnp.where(on_BxM, ce_BxM, 0.0)) / count
  correct_BxM = jnp.argmax(logp_BxMxV, axis=-1) == targets_BxM
  metrics = {
      "loss": loss,
      "nats_per_token": loss,
      "bits_per_token": loss / LN2,
      "accuracy": jnp.sum(correct_BxM & on_BxM) / count,
      "num_tokens": jnp.sum(on_BxM.astype(jnp.float32)),
  }
  return loss, metrics


def ar_loss(logits_BxLxV: jax.Array, tokens_BxL: jax.Array,
            loss_mask_BxL: jax.Array) -> tuple[jax.Array, Metrics]:
  """Next-token cross-entropy of a causal model applied to tokens_BxL.

  logits[:, i] predicts tokens[:, i+1]; the term for target position j counts iff
  loss_mask[:, j] (loss_mask[:, 0] is never used). Mean over counted targets.
  """
  b, l, _ = _check_logits(logits_BxLxV)
  _check_tokens("tokens_BxL", tokens_BxL, b, l)
  _check_bool("loss_mask_BxL", loss_mask_BxL, b, l)
  if l < 2:
    raise ValueError(f"ar_loss needs sequences of length >= 2, got L={l}")
  return _token_ce(_log_probs(logits_BxLxV[:, :-1], None), tokens_BxL[:, 1:],
                   loss_mask_BxL[:, 1:])


def pi_permutation(kind: str, length: int, seed: int) -> np.ndarray:
  """A fixed order pi over positions, int32[L]; deterministic in `seed`.

  'identity'; 'much_closer': identity + round(sqrt(L)) random transpositions;
  'closer': identity + L // 10 random transpositions; 'uniform': a uniform random
  permutation. The pi-learner reads positions in the order perm[0], perm[1], ...
  """
  if kind not in PI_KINDS:
    raise ValueError(f"unknown permutation kind {kind!r}; choose one of {', '.join(PI_KINDS)}")
  length = _check_int("length", length, 1)
  seed = _check_int("seed", seed, 0)
  rng = np.random.default_rng(seed)
  perm = np.arange(length, dtype=np.int32)
  if kind == "uniform":
    return rng.permutation(length).astype(np.int32)
  num_swaps = {"identity": 0, "much_closer": int(round(math.sqrt(length))),
               "closer": length // 10}[kind]
  if length < 2:
    return perm
  for _ in range(num_swaps):
    i, j = rng.choice(length, size=2, replace=False)
    perm[i], perm[j] = perm[j], perm[i]
  return perm


def _check_perm(perm_L: Any, l: int) -> None:
  if tuple(getattr(perm_L, "shape", np.shape(perm_L))) != (l,):
    raise ValueError(f"perm_L must have shape [{l}], got {np.shape(perm_L)}")
  try:
    perm = np.asarray(perm_L)
  except jax.errors.TracerArrayConversionError:
    return  # traced: cannot check values
  if not np.issubdtype(perm.dtype, np.integer) or not np.array_equal(np.sort(perm), np.arange(l)):
    raise ValueError(f"perm_L must be a permutation of 0..{l - 1}")


def apply_permutation(x_BxL: jax.Array, perm_L: jax.Array) -> jax.Array:
  """x[:, perm]: the sequence in the pi-learner's order (feed this to the model)."""
  _check_perm(perm_L, x_BxL.shape[1])
  return jnp.asarray(x_BxL)[:, jnp.asarray(perm_L)]


def pi_learner_inputs(tokens_BxL: jax.Array, perm_L: jax.Array, start_id: int
                      ) -> jax.Array:
  """What the causal pi-learner reads: [start, x[perm[0]], ..., x[perm[L-2]]].

  `start_id` is a token the data never contains (the MDM layout's MASK id), so the
  first position in pi's order is predicted too and the loss covers the whole joint.
  """
  b, l = jnp.shape(tokens_BxL)
  _check_perm(perm_L, l)
  seq_BxL = apply_permutation(tokens_BxL, perm_L)
  start_Bx1 = jnp.full((b, 1), start_id, seq_BxL.dtype)
  return jnp.concatenate([start_Bx1, seq_BxL[:, :-1]], axis=1)


def pi_learner_loss(logits_BxLxV: jax.Array, tokens_BxL: jax.Array,
                    loss_mask_BxL: jax.Array, perm_L: jax.Array) -> tuple[jax.Array, Metrics]:
  """Next-token loss in pi's order; logits come from model(pi_learner_inputs(...)).

  logits[:, j] predicts x[:, perm[j]] for every j (the first from the start token
  alone), and the term counts iff loss_mask[:, perm[j]]: the mean over counted
  tokens is the negative log-likelihood of the whole sequence per token, the same
  unit as `mdm_loss`'s NELBO per maskable token.
  """
  b, l, _ = _check_logits(logits_BxLxV)
  _check_tokens("tokens_BxL", tokens_BxL, b, l)
  _check_bool("loss_mask_BxL", loss_mask_BxL, b, l)
  _check_perm(perm_L, l)
  return _token_ce(_log_probs(logits_BxLxV, None), apply_permutation(tokens_BxL, perm_L),
                   apply_permutation(loss_mask_BxL, perm_L))
