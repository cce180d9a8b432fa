"""Adaptive-order sampling for masked diffusion models (Kim et al. 2025, section 3).

One `jax.lax.while_loop` over a small state runs every strategy. Each reverse step
t -> s on the grid t_i = 1 - i/T (i = 0..T-1) does, per row:

1. one forward pass `logits_fn(tokens_BxL) -> logits_BxLxV` (the MASK logit is set
   to -inf: MASK is never written and never counts in a score);
2. a candidate value per position: the argmax, or at temperature > 0 a sample from
   softmax(logits / temperature), optionally restricted to the `top_k` most likely
   tokens and then to the `top_p` nucleus (the fewest best tokens holding
   probability >= top_p of the remaining ones), by Gumbel-max;
3. a set of positions to fix:
   - 'vanilla': every masked position independently with probability
     p_i = (alpha_s - alpha_t) / (1 - alpha_t) (the ancestral step);
   - 'random' | 'top_prob' | 'margin' | 'entropy': exactly K positions with the
     highest score (random / max prob / top-1 minus top-2 prob / minus entropy), plus
     `gumbel` times Gumbel noise; ties go to the lower position. K = round(m p_i)
     clipped to [1, m] for m masked positions ('deterministic'), or Binomial(m, p_i)
     ('binomial'). The last step fixes every remaining position (p_{T-1} = 1).
   Scores use the model's own distribution softmax(logits) whatever the temperature.
   `score_space='log'` ranks the log of the score instead (log max prob, log margin;
   the entropy score, already in nats, is unchanged): the same order without noise,
   but Gumbel noise then perturbs the score multiplicatively, as in Ye et al.'s
   puzzle decoding, which ranks log-probabilities. `gumbel_schedule='annealed'`
   scales the noise by t_i = 1 - i/T, from `gumbel` at the first step down to
   gumbel/T at the last (Ye et al.'s "stochastic0.5": 0.5 * t/T); 'constant' adds
   `gumbel` x Gumbel at every step (the paper's literal description).
   With `remask=True` (Ye et al. 2024) every position masked at the start is
   re-predicted at each step and only the best-scoring ones stay fixed, so that the
   number of fixed positions follows the same K schedule. It ranks written positions
   by the denoiser's output there, so it needs a denoiser trained to predict visible
   positions too: `losses.mdm_loss` trains masked positions only, and a model trained
   with it solves 0% with remask (the packaged 9x9 model: 63% without; REPRODUCTION.md).

Adaptive k_modes (not with 'vanilla') let the model's confidence set the number
of positions fixed per step instead of the schedule; each fixes at least one
masked position per step while any remain, and the last step (i = T-1) still
fixes everything left, so `num_steps` is a budget (it never forces anything when
T >= the number of masked positions; with blocks, when S >= block_length). With c_i
the model's probability of the value written at i (softmax(logits) with MASK
excluded, whatever the temperature; at temperature 0 the top probability):
   - 'threshold' (Fast-dLLM, `threshold` tau in (0, 1]): every masked position with
     c_i >= tau;
   - 'factor' (Fast-dLLM, `factor` f > 0): with the masked positions ordered by c
     (ties to the lower position) and c_(n) the n-th, the first n* of them, n* the
     largest n with (n + 1)(1 - c_(n)) < f (the left side never decreases in n);
   - 'entropy_bounded' (EB-sampler, `entropy_budget` gamma >= 0): with the masked
     positions ordered by the strategy's score, the longest prefix whose entropies
     (nats, of softmax(logits)) sum to at most gamma plus their largest one.
   When a rule picks no position (threshold, factor), the row fixes its best
   position by the strategy's score. So the strategy, with its Gumbel noise, orders
   the EB-sampler's prefix and picks the fallback; the threshold and factor sets
   themselves depend on c only (with 'top_prob' at temperature 0 and no noise, the
   fallback is the most confident position, as in Fast-dLLM). With `remask=True`
   the rule only sets the count: K = the size of the rule's set on the masked
   positions, and, as for the other k_modes, the best (already fixed + K) of all
   generated positions by the strategy's score stay fixed.

With `block_length` = b > 0 (semi-autoregressive decoding, LLaDA) the sequence is
cut into L / b blocks of b consecutive positions, over all L positions (the
"generated span" is the whole sequence: b must divide L). Each row decodes only in
its current block, the first block that still holds a MASK: blocks with no MASK
(all given) are skipped, and the row moves on as soon as its block has no MASK left.
Each block runs on its own step grid of S = num_steps / (L / b) steps (num_steps
must be a multiple of the number of blocks): the K schedule, m (masked positions in
the block), the 'annealed' Gumbel scale (1 - s/S at the block's step s) and the
"last step fixes everything left" rule all apply within the block, so a block takes
at most S steps and a row at most num_steps. Remasking touches only the current
block's generated positions (finished blocks are frozen). `order` keeps the global
step. block_length = L is the same as no blocks.

A step that fixes nothing ('vanilla', 'binomial': possible when m p is small)
leaves the tokens unchanged, so the next forward pass would return the same logits:
when no row changed since the last forward pass, the loop reuses its logits (carried
in the loop state; a lax.cond around the call) instead of calling the model, as
MDLM's cache does. This assumes `logits_fn` is a function of the tokens (no
dropout, no state), and leaves every result unchanged. `SampleOutput.nfe` counts
per row the forward passes the row needed: its active steps, less those after a
step that changed none of its tokens (a row that is done stops counting). The model
is called for the whole batch whenever some active row needs it. Other k_modes fix
at least one position per active row and step, so there nfe = steps.

Gumbel noise in float32 (value sampling and the ordering noise): G = -log(-log u)
with u from jax.random.uniform(minval=tiny, maxval=1), whose 23 random mantissa bits
give u in {tiny} U {k 2^-23 : k = 1 .. 2^23 - 1}. u never rounds to 1 (1 - u >= 2^-23,
so -log u >= 1.19e-7 > 0) nor to 0, so G is always finite, in [-4.47, 15.94]
(tests/test_sampling.py checks the extremes). The price is a truncated, stepped
upper tail: P(G > g) is exact at the grid points g_k = -log(-log(1 - k 2^-23)) but
G never exceeds 15.94 (true probability 1.2e-7), so a token whose tempered logit
trails the best by more than ~18.7 is never drawn, and the sampled distribution
differs from the softmax by roughly V x 1e-7 per draw. That is negligible for this
project's vocabularies (tens of tokens; tests check peaked and flat distributions
empirically); it is the float32 Gumbel-max bias reported for 50k-token language
models, where the maximum of V Gumbels nears the cap (JAX's gumbel(mode='high')
spends a second uniform to raise the cap to ~32).

The loop stops as soon as no row has a MASK left. Positions given at the start never
change. All shapes are static; per-row counts are dynamic, so batches may be sharded
over devices along their first axis without any gathering.

Causal (ARM) models: `ar_greedy` decodes left to right with one full forward pass
per position (the reference); `ar_greedy_cached` gives the same tokens with a
key/value cache (models/kv_cache.py), one single-token step per position.
`ar_beam` / `ar_beam_cached` keep the `width` best partial sequences by summed
log-probability instead (width 1 is greedy; `config.eval.arm_beam`).
`ar_pick` / `ar_pick_cached` decode a layout of (key, value) pairs, e.g. Sudoku's
(cell, digit), choosing *which* key comes next as the MDM samplers choose which
position to fix: every unwritten key is tried, and the one whose value the model is
surest of (top prob, margin or entropy of p(value | prefix, key)) is written with its
best value (`config.eval.arm_pick`). Not the paper's ARM decoding, which is greedy.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax import schedules
from mdm_jax.models import kv_cache

STRATEGIES = ("vanilla", "random", "top_prob", "margin", "entropy")
K_MODES = ("deterministic", "binomial", "threshold", "factor", "entropy_bounded")
# The k_modes whose count adapts to the model's confidence, and the option each reads
# (None in `sample` = not given; the default below is then used).
ADAPTIVE_K_MODES = {"threshold": "threshold", "factor": "factor",
                    "entropy_bounded": "entropy_budget"}
DEFAULT_THRESHOLD = 0.9  # Fast-dLLM's confidence threshold tau
DEFAULT_FACTOR = 1.0  # Fast-dLLM's factor f
DEFAULT_ENTROPY_BUDGET = 0.1  # EB-sampler's gamma
GUMBEL_SCHEDULES = ("constant", "annealed")
SCORE_SPACES = ("prob", "log")
PICK_SCORES = ("top_prob", "margin", "entropy")  # ar_pick's confidence of a key

LogitsFn = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class SampleOutput:
  """Result of `sample`.

  tokens: int32[B, L], no MASK left.
  order: int32[B, L], the step at which each position was (last) fixed; -1 where the
    position was given at the start.
  steps: int32[B], the number of reverse steps the row needed (<= num_steps).
  nfe: int32[B], the forward passes the row needed: its active steps, less those
    that follow a step that changed none of its tokens (their logits are reused;
    only 'vanilla' and 'binomial' steps can fix nothing). <= steps.
  """
  tokens: jax.Array
  order: jax.Array
  steps: jax.Array
  nfe: jax.Array


@flax.struct.dataclass
class _State:
  step: jax.Array  # int32 scalar
  tokens_BxL: jax.Array
  order_BxL: jax.Array
  steps_B: jax.Array
  block_B: jax.Array  # int32[B]: the row's current block (block_length > 0)
  sub_B: jax.Array  # int32[B]: steps the row has spent in that block
  nfe_B: jax.Array  # int32[B]: forward passes the row needed
  stale_B: jax.Array  # bool[B]: the row changed since the last forward pass
  logits_BxLxV: jax.Array | None  # the last forward's logits (when they can be reused)
  given_BxL: jax.Array  # bool[B, L]: the row's prompt positions (never change)


@flax.struct.dataclass
class _Stream:
  """`_State` over B slots, plus the queue of N rows they work through."""
  slots: _State
  row_B: jax.Array  # int32[B]: the queue row in each slot, -1 once the queue is empty
  next_row: jax.Array  # int32 scalar: the first queue row not yet started
  tokens_NxL: jax.Array  # the results, written when a row finishes
  order_NxL: jax.Array
  steps_N: jax.Array
  nfe_N: jax.Array


# ----------------------------------------------------------------------------------
# Argument checks (Python, before tracing).


def _check_float(name: str, value: Any, *, low: float, low_open: bool,
                 high: float | None = None) -> float:
  """A finite Python/numpy float (ints allowed, not bools) in the given range."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{name} must be a float, got {value!r}")
  value = float(value)
  ok = np.isfinite(value) and (value > low if low_open else value >= low)
  if high is not None:
    ok = ok and value <= high
  if not ok:
    where = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
    raise ValueError(f"{name} must be a finite float in {where}, got {value!r}")
  return value


def _adaptive_options(*, strategy: str, k_mode: str, threshold: Any, factor: Any,
                      entropy_budget: Any) -> dict[str, float | None]:
  """Checks the options of the adaptive k_modes; -> {name: float or None}.

  Each option belongs to one k_mode: given (not None) with another k_mode it is an
  error; not given with its own k_mode it takes its default.
  """
  given = dict(threshold=threshold, factor=factor, entropy_budget=entropy_budget)
  own = ADAPTIVE_K_MODES.get(k_mode)
  for name, value in given.items():
    if value is not None and name != own:
      mode = next(m for m, o in ADAPTIVE_K_MODES.items() if o == name)
      raise ValueError(f"{name}={value!r} is only used by k_mode={mode!r}, but "
                       f"k_mode={k_mode!r}; leave {name} unset (None)")
  if own is not None and strategy == "vanilla":
    raise ValueError(f"k_mode={k_mode!r} needs an ordering strategy ('random', "
                     "'top_prob', 'margin', 'entropy'), not 'vanilla' (which fixes "
                     "each position independently)")
  out: dict[str, float | None] = {name: None for name in given}
  if own == "threshold":
    out["threshold"] = _check_float(
        "threshold", DEFAULT_THRESHOLD if threshold is None else threshold,
        low=0.0, low_open=True, high=1.0)
  elif own == "factor":
    out["factor"] = _check_float("factor", DEFAULT_FACTOR if factor is None else factor,
                                 low=0.0, low_open=True)
  elif own == "entropy_budget":
    out["entropy_budget"] = _check_float(
        "entropy_budget", DEFAULT_ENTROPY_BUDGET if entropy_budget is None
        else entropy_budget, low=0.0, low_open=False)
  return out


def _check_options(*, mask_id: Any, strategy: Any, num_steps: Any, schedule: Any,
                   k_mode: Any, gumbel: Any, temperature: Any,
                   remask: Any, gumbel_schedule: Any = "constant",
                   score_space: Any = "prob", threshold: Any = None,
                   factor: Any = None, entropy_budget: Any = None,
                   block_length: Any = 0, top_k: Any = 0, top_p: Any = 1.0,
                   slots: Any = 0) -> schedules.Schedule:
  """Validates the static options; returns the Schedule object."""
  if isinstance(mask_id, bool) or not isinstance(mask_id, (int, np.integer)):
    raise ValueError(f"mask_id must be a Python int, got {mask_id!r}")
  if mask_id < 0:
    raise ValueError(f"mask_id must be >= 0, got {mask_id}")
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
    raise ValueError(f"num_steps must be a Python int >= 1, got {num_steps!r}")
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if k_mode not in K_MODES:
    raise ValueError(f"unknown k_mode {k_mode!r}; valid: {', '.join(K_MODES)}")
  if gumbel_schedule not in GUMBEL_SCHEDULES:
    raise ValueError(f"unknown gumbel_schedule {gumbel_schedule!r}; valid: "
                     f"{', '.join(GUMBEL_SCHEDULES)}")
  if score_space not in SCORE_SPACES:
    raise ValueError(f"unknown score_space {score_space!r}; valid: {', '.join(SCORE_SPACES)}")
  for name, value in (("gumbel", gumbel), ("temperature", temperature)):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
      raise ValueError(f"{name} must be a float >= 0, got {value!r}")
    if not value >= 0.0 or not np.isfinite(value):
      raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
  if not isinstance(remask, (bool, np.bool_)):
    raise ValueError(f"remask must be a bool, got {remask!r}")
  if remask and strategy == "vanilla":
    raise ValueError("remask=True needs an ordering strategy ('random', 'top_prob', "
                     "'margin', 'entropy'), not 'vanilla'")
  _adaptive_options(strategy=strategy, k_mode=k_mode, threshold=threshold,
                    factor=factor, entropy_budget=entropy_budget)
  if (isinstance(block_length, bool) or not isinstance(block_length, (int, np.integer))
      or block_length < 0):
    raise ValueError(f"block_length must be an int >= 0 (0 = no blocks), got "
                     f"{block_length!r}")
  if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 0:
    raise ValueError(f"slots must be an int >= 0 (0 = no streaming), got {slots!r}")
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be an int >= 0 (0 = all tokens), got {top_k!r}")
  top_p = _check_float("top_p", top_p, low=0.0, low_open=True, high=1.0)
  if (top_k or top_p < 1.0) and not temperature > 0.0:
    raise ValueError(f"top_k={top_k}, top_p={top_p} restrict sampled values: they need "
                     "temperature > 0 (temperature 0 writes the argmax)")
  if isinstance(schedule, schedules.Schedule):
    return schedule
  if not isinstance(schedule, str):
    raise ValueError(f"schedule must be a name or a Schedule, got {schedule!r}")
  return schedules.get_schedule(schedule)  # ValueError on unknown names


def _check_blocks(block_length: int, length: int, num_steps: int) -> None:
  """Blocks tile the whole sequence (the generated span is all L positions), and
  every block gets the same number of steps."""
  if not block_length:
    return
  if length % block_length:
    raise ValueError(f"block_length={block_length} does not divide the sequence length "
                     f"{length} (blocks tile all L positions; blocks without a MASK are "
                     f"skipped)")
  num_blocks = length // block_length
  if num_steps % num_blocks:
    raise ValueError(f"num_steps={num_steps} is not a multiple of the number of blocks "
                     f"{num_blocks} (= {length} / block_length {block_length}): each block "
                     f"runs num_steps / num_blocks steps")


def _is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_tokens(tokens_BxL: Any, name: str = "tokens") -> None:
  """Static checks: an integer array of rank 2 with a non-empty batch and length."""
  shape = getattr(tokens_BxL, "shape", None)
  dtype = getattr(tokens_BxL, "dtype", None)
  if shape is None or dtype is None:
    raise ValueError(f"{name} must be an integer array [batch, length], got "
                     f"{type(tokens_BxL).__name__}")
  if len(shape) != 2:
    raise ValueError(f"{name} must have rank 2 [batch, length], got shape {shape}")
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
    raise ValueError(f"{name} must hold integer token ids, got dtype {dtype}")
  if shape[0] < 1 or shape[1] < 1:
    raise ValueError(f"{name} must have a non-empty batch and length, got {shape}")


def _check_has_mask(tokens_BxL: Any, mask_id: int) -> None:
  """Value check on concrete inputs: at least one MASK to generate."""
  if not _is_concrete(tokens_BxL):
    return
  if isinstance(tokens_BxL, jax.Array):
    has_mask = bool(jnp.any(tokens_BxL == mask_id))
  else:
    has_mask = bool(np.any(np.asarray(tokens_BxL) == mask_id))
  if not has_mask:
    raise ValueError(f"tokens contain no MASK (mask_id={mask_id}): nothing to generate; "
                     "set the positions to generate to mask_id")


def _check_key(key: Any) -> None:
  dtype = getattr(key, "dtype", None)
  if dtype is None:
    raise ValueError(f"key must be a jax.random key, got {type(key).__name__}")
  if jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"key must be a single jax.random key, got shape {key.shape}")
    return
  if dtype != jnp.uint32 or key.shape != (2,):
    raise ValueError("key must be a jax.random.key(seed) or jax.random.PRNGKey(seed), "
                     f"got dtype {dtype} shape {key.shape}")


def _check_logits_shape(logits: jax.Array, shape_BxL: tuple[int, ...],
                        mask_id: int | None) -> None:
  """Trace-time check of the model output (shapes are static)."""
  if logits.ndim != 3 or logits.shape[:2] != tuple(shape_BxL):
    raise ValueError(f"logits_fn must map tokens {tuple(shape_BxL)} to logits "
                     f"[batch, length, vocab], got shape {logits.shape}")
  if mask_id is not None and mask_id >= logits.shape[-1]:
    raise ValueError(f"mask_id={mask_id} is out of range for the model's vocabulary "
                     f"of size {logits.shape[-1]}")


# ----------------------------------------------------------------------------------
# Pieces of one step.


def unmask_probs(schedule: str | schedules.Schedule, num_steps: int) -> np.ndarray:
  """float32[T]: p_i = (alpha(s_i) - alpha(t_i)) / (1 - alpha(t_i)) on t_i = 1 - i/T.

  s_i = 1 - (i+1)/T. The last entry is 1 (the last step fixes every position left).
  """
  schedule = schedules.get_schedule(schedule)
  t = 1.0 - np.arange(num_steps, dtype=np.float64) / num_steps
  s = 1.0 - np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
  with jax.ensure_compile_time_eval():
    alpha_t = np.asarray(schedule.alpha(jnp.asarray(t, jnp.float32)), np.float64)
    alpha_s = np.asarray(schedule.alpha(jnp.asarray(s, jnp.float32)), np.float64)
  p = np.clip((alpha_s - alpha_t) / (1.0 - alpha_t), 0.0, 1.0)
  p[-1] = 1.0
  return p.astype(np.float32)


def _noise_channels(*, strategy: str, k_mode: str, gumbel: float, temperature: float,
                    vocab_size: int) -> dict[str, slice]:
  """Which uniforms a step needs: slices of one [B, L, N] draw (one RNG call/step)."""
  sizes = {}
  if temperature > 0.0:
    sizes["value"] = vocab_size  # Gumbel-max sampling of the written token
  if strategy == "random":
    sizes["score"] = 1
  if gumbel > 0.0 and strategy != "vanilla":
    sizes["gumbel"] = 1
  if strategy == "vanilla" or k_mode == "binomial":
    sizes["count"] = 1  # Bernoulli(p_i) draws
  channels, start = {}, 0
  for name, size in sizes.items():
    channels[name] = slice(start, start + size)
    start += size
  return channels


def _gumbel(u: jax.Array) -> jax.Array:
  """Standard Gumbel noise from uniforms in (0, 1) (see the module docstring on
  float32 precision: finite for every uniform the loop draws)."""
  return -jnp.log(-jnp.log(u))


# Up to this vocabulary size, top-k / top-p ranks come from pairwise comparisons
# ([B, L, V, V]); beyond it from sorts.
_PAIRWISE_MAX_VOCAB = 32


def _truncate(scaled_BxLxV: jax.Array, *, top_k: int, top_p: float,
              pairwise_max: int = _PAIRWISE_MAX_VOCAB) -> jax.Array:
  """Logits with the tokens outside the top-k, then outside the top-p nucleus, set
  to -inf (ties go to the lower token id; the best token always stays).

  The nucleus is the smallest set of the best tokens whose probability under
  softmax(scaled) (after top-k) reaches top_p: token j stays when the tokens ranked
  before it hold less than top_p.
  """
  vocab_size = scaled_BxLxV.shape[-1]
  key_BxLxV = -scaled_BxLxV  # lower first; -inf logits (MASK) rank last
  if 0 < top_k < vocab_size:
    rank_BxLxV = _ranks(key_BxLxV, pairwise_max)
    scaled_BxLxV = jnp.where(rank_BxLxV < top_k, scaled_BxLxV, -jnp.inf)
    key_BxLxV = -scaled_BxLxV
  if top_p < 1.0:
    p_BxLxV = jax.nn.softmax(scaled_BxLxV, axis=-1)
    upto_BxLxV, _ = _prefix_sum_max(key_BxLxV, p_BxLxV, pairwise_max)
    scaled_BxLxV = jnp.where(upto_BxLxV - p_BxLxV < top_p, scaled_BxLxV, -jnp.inf)
  return scaled_BxLxV


def _scores_and_values(logits_BxLxV: jax.Array, noise: dict[str, jax.Array], *,
                       strategy: str, temperature: float, score_space: str = "prob",
                       k_mode: str = "deterministic", top_k: int = 0,
                       top_p: float = 1.0
                       ) -> tuple[jax.Array | None, jax.Array, dict[str, jax.Array]]:
  """-> (score_BxL, higher first; None for 'vanilla'), values_BxL int32, extras.

  `noise` holds uniforms in (0, 1): 'value' [B, L, V] when temperature > 0, 'score'
  [B, L] for 'random'. `extras` holds what the adaptive k_modes read, from the
  model's own distribution softmax(logits): 'conf' (the probability of the written
  value; 'threshold', 'factor') and 'entropy' (nats; 'entropy_bounded').
  """
  if temperature > 0.0:
    scaled_BxLxV = _truncate(logits_BxLxV / temperature, top_k=top_k, top_p=top_p)
    values_BxL = jnp.argmax(scaled_BxLxV + _gumbel(noise["value"]), axis=-1)
  else:
    values_BxL = jnp.argmax(logits_BxLxV, axis=-1)
  values_BxL = values_BxL.astype(jnp.int32)
  need_stats = strategy in ("top_prob", "margin", "entropy") or k_mode in ADAPTIVE_K_MODES
  if not need_stats:
    return (None if strategy == "vanilla" else noise["score"]), values_BxL, {}

  max_BxL = jnp.max(logits_BxLxV, axis=-1)
  z_BxLxV = logits_BxLxV - max_BxL[..., None]
  sumexp_BxL = jnp.sum(jnp.exp(z_BxLxV), axis=-1)
  iota_V = jnp.arange(logits_BxLxV.shape[-1])

  def neg_entropy() -> jax.Array:
    p_BxLxV = jnp.exp(z_BxLxV) / sumexp_BxL[..., None]
    logp_BxLxV = z_BxLxV - jnp.log(sumexp_BxL)[..., None]
    return jnp.sum(jnp.where(p_BxLxV > 0, p_BxLxV * logp_BxLxV, 0.0), axis=-1)

  extras = {}
  if k_mode in ("threshold", "factor"):
    if temperature > 0.0:  # z of the written value (a select, not a gather)
      z_value_BxL = jnp.max(jnp.where(iota_V == values_BxL[..., None], z_BxLxV, -jnp.inf),
                            axis=-1)
      extras["conf"] = jnp.exp(z_value_BxL) / sumexp_BxL
    else:  # the argmax: z = 0
      extras["conf"] = 1.0 / sumexp_BxL
  elif k_mode == "entropy_bounded":
    extras["entropy"] = -neg_entropy()

  if strategy == "random":
    score_BxL = noise["score"]
  elif strategy == "top_prob":
    if score_space == "log":
      score_BxL = -jnp.log(sumexp_BxL)  # = log max_j p(j)
    else:
      score_BxL = 1.0 / sumexp_BxL  # = max_j p(j)
  elif strategy == "margin":
    # Second largest logit: drop one (the first) argmax, so that ties give margin 0.
    top1_BxL = jnp.argmax(logits_BxLxV, axis=-1)
    second_BxL = jnp.max(jnp.where(iota_V == top1_BxL[..., None], -jnp.inf, z_BxLxV),
                         axis=-1)
    if score_space == "log":  # log(p(j1) - p(j2)); -inf on exact ties
      score_BxL = jnp.log1p(-jnp.exp(second_BxL)) - jnp.log(sumexp_BxL)
    else:
      score_BxL = (1.0 - jnp.exp(second_BxL)) / sumexp_BxL  # = p(j1) - p(j2)
  elif strategy == "entropy":
    score_BxL = -extras["entropy"] if "entropy" in extras else neg_entropy()
  elif strategy == "vanilla":
    score_BxL = None
  else:
    raise ValueError(f"unknown strategy {strategy!r}")
  return score_BxL, values_BxL, extras


# Up to this length, ranks come from all pairwise comparisons (L^2 per row, fused into
# one reduction); beyond it from two sorts. XLA's sort is slow on CPU: for L = 81 the
# comparisons are ~20x faster.
_PAIRWISE_MAX_LEN = 256


def _rank_key(score: jax.Array, candidates: jax.Array) -> jax.Array:
  """float32 sort key (lower first) of (-score) for candidates, +inf for the others.

  -inf/NaN scores become finite (NaN ranks last among candidates), so that every
  candidate ranks before every non-candidate.
  """
  big = jnp.finfo(jnp.float32).max
  return jnp.where(candidates, jnp.nan_to_num(-score.astype(jnp.float32), nan=big),
                   jnp.inf)


def _ahead(key: jax.Array, *, or_self: bool) -> jax.Array:
  """bool[..., N, N]: [i, j] = element j ranks before element i by (key, index)."""
  n = key.shape[-1]
  iota = jnp.arange(n)
  key_i, key_j = key[..., :, None], key[..., None, :]
  earlier = iota[None, :] <= iota[:, None] if or_self else iota[None, :] < iota[:, None]
  return (key_j < key_i) | ((key_j == key_i) & earlier)


def _sorted_order(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(perm, rank) along the last axis by (key, index): perm[r] = element of rank r."""
  iota = jax.lax.broadcasted_iota(jnp.int32, key.shape, key.ndim - 1)
  _, perm = jax.lax.sort((key, iota), dimension=key.ndim - 1, is_stable=True, num_keys=1)
  _, rank = jax.lax.sort((perm, iota), dimension=key.ndim - 1, is_stable=True, num_keys=1)
  return perm, rank


def _ranks(key: jax.Array, pairwise_max: int = _PAIRWISE_MAX_LEN) -> jax.Array:
  """int32 rank of each element along the last axis by (key, index), from 0.

  Exact ranks without gathers or scatters (which partition badly over a sharded
  batch): pairwise comparisons up to `pairwise_max` elements, else two sorts.
  """
  if key.shape[-1] <= pairwise_max:
    return jnp.sum(_ahead(key, or_self=False), axis=-1, dtype=jnp.int32)
  return _sorted_order(key)[1]


def _prefix_sum_max(key: jax.Array, values: jax.Array,
                    pairwise_max: int = _PAIRWISE_MAX_LEN) -> tuple[jax.Array, jax.Array]:
  """(sum, max) of `values` over each element and every element ranked before it.

  Ranked along the last axis by (key, index) as `_ranks`; float32.
  """
  values = values.astype(jnp.float32)
  if key.shape[-1] <= pairwise_max:
    upto = _ahead(key, or_self=True)  # [..., i, j]: j ranks before i, or j = i
    total = jnp.sum(jnp.where(upto, values[..., None, :], 0.0), axis=-1)
    most = jnp.max(jnp.where(upto, values[..., None, :], -jnp.inf), axis=-1)
    return total, most
  axis = key.ndim - 1
  iota = jax.lax.broadcasted_iota(jnp.int32, key.shape, axis)
  _, perm, sorted_values = jax.lax.sort((key, iota, values), dimension=axis,
                                        is_stable=True, num_keys=1)
  total = jnp.cumsum(sorted_values, axis=axis)
  most = jax.lax.cummax(sorted_values, axis=axis)
  _, total, most = jax.lax.sort((perm, total, most), dimension=axis, is_stable=True,
                                num_keys=1)
  return total, most


def _select_top(score_BxL: jax.Array, candidates_BxL: jax.Array,
                count_B: jax.Array) -> jax.Array:
  """bool[B, L]: exactly min(count, #candidates) candidates per row, best scores first.

  Candidates are ranked by (-score, position), so ties go to the lower position;
  -inf/NaN scores become finite, so every candidate ranks before every non-candidate.
  No threshold on score values is involved, only exact ranks.
  """
  rank_BxL = _ranks(_rank_key(score_BxL, candidates_BxL))
  return candidates_BxL & (rank_BxL < count_B[:, None])


def _adaptive_select(k_mode: str, *, score_BxL: jax.Array, candidates_BxL: jax.Array,
                     conf_BxL: jax.Array | None, entropy_BxL: jax.Array | None,
                     threshold: float | None, factor: float | None,
                     entropy_budget: float | None) -> jax.Array:
  """bool[B, L]: the candidates an adaptive k_mode fixes (at least one per row that
  has a candidate; see the module docstring)."""
  if k_mode == "threshold":
    rule_BxL = candidates_BxL & (conf_BxL >= threshold)
  elif k_mode == "factor":
    # n-th best confidence (n = rank + 1): fix it when (n + 1)(1 - c_(n)) < f. The
    # left side never decreases with n, so the fixed ones are a prefix by confidence.
    rank_BxL = _ranks(_rank_key(conf_BxL, candidates_BxL))
    rule_BxL = candidates_BxL & (
        (rank_BxL.astype(jnp.float32) + 2.0) * (1.0 - conf_BxL) < factor)
  elif k_mode == "entropy_bounded":
    # Prefix in the strategy's order: sum of entropies minus their max <= gamma (never
    # decreases along the order, so a prefix; its first element always qualifies).
    key_BxL = _rank_key(score_BxL, candidates_BxL)
    total_BxL, most_BxL = _prefix_sum_max(
        key_BxL, jnp.where(candidates_BxL, entropy_BxL, 0.0))
    rule_BxL = candidates_BxL & (total_BxL - most_BxL <= entropy_budget)
  else:
    raise ValueError(f"unknown adaptive k_mode {k_mode!r}")
  # At least one: the best candidate by the strategy's score when the rule has none.
  none_B = ~jnp.any(rule_BxL, axis=-1)
  first_BxL = _select_top(score_BxL, candidates_BxL, jnp.ones_like(none_B, jnp.int32))
  return rule_BxL | (first_BxL & none_B[:, None])


def _sample_loop(logits_fn: LogitsFn, tokens_BxL: jax.Array, key: jax.Array, *,
                 mask_id: int, strategy: str, num_steps: int,
                 schedule: schedules.Schedule, k_mode: str, gumbel: float,
                 temperature: float, remask: bool, gumbel_schedule: str = "constant",
                 score_space: str = "prob", threshold: float | None = None,
                 factor: float | None = None, entropy_budget: float | None = None,
                 block_length: int = 0, top_k: int = 0, top_p: float = 1.0,
                 slots: int = 0, reuse_logits: bool = True) -> SampleOutput:
  """The sampler itself (traceable; arguments already validated).

  slots: 0 decodes the B rows of `tokens_BxL` together; > 0 streams them through
    that many slots (`sample`'s docstring).
  reuse_logits: skip the forward pass when no row changed since the last one (only
  built when a step can fix nothing: 'vanilla' or 'binomial'); False is for tests.
  """
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  queue_NxL = tokens_BxL
  if slots:  # the loop below works on the slots; the queue is refilled from
    tokens_BxL = jnp.zeros((slots, queue_NxL.shape[1]), jnp.int32)
  shape_BxL = tokens_BxL.shape
  length = shape_BxL[1]
  _check_blocks(block_length, length, num_steps)
  num_blocks = length // block_length if block_length else 1
  block_steps = num_steps // num_blocks  # S: the K schedule's steps within a block
  p_S = jnp.asarray(unmask_probs(schedule, block_steps))
  block_id_L = jnp.arange(length) // block_length if block_length else None
  reuse = reuse_logits and (strategy == "vanilla" or k_mode == "binomial")

  def forward(tokens_BxL: jax.Array) -> jax.Array:
    logits_BxLxV = logits_fn(tokens_BxL)
    _check_logits_shape(logits_BxLxV, shape_BxL, mask_id)
    is_mask_V = jnp.arange(logits_BxLxV.shape[-1]) == mask_id
    return jnp.where(is_mask_V, -jnp.inf, logits_BxLxV.astype(jnp.float32))

  def cond(state: _State) -> jax.Array:
    return (state.step < num_steps) & jnp.any(state.tokens_BxL == mask_id)

  def uniforms(state: _State, size: int, row_B: jax.Array | None) -> jax.Array:
    """float32[B, L, size] in (0, 1): one RNG call per step, keyed by the step; in
    a stream, per row, keyed by (queue row, the row's own step)."""
    kw = dict(minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    if row_B is None:
      return jax.random.uniform(jax.random.fold_in(key, state.step),
                                shape_BxL + (size,), **kw)
    one = lambda r, s: jax.random.uniform(
        jax.random.fold_in(jax.random.fold_in(key, r), s), (length, size), **kw)
    return jax.vmap(one)(row_B, state.steps_B)

  def body(state: _State, row_B: jax.Array | None = None) -> _State:
    step = state.steps_B  # int32[B]: each row's own step (while it is active)
    given_BxL = state.given_BxL
    masked_BxL = state.tokens_BxL == mask_id
    active_B = jnp.any(masked_BxL, axis=-1)
    if block_length:  # the row's current block: the first one with a MASK
      block_B = jnp.min(jnp.where(masked_BxL, block_id_L, num_blocks), axis=-1)
      in_block_BxL = block_id_L == block_B[:, None]
      sub_B = jnp.where(block_B == state.block_B, state.sub_B, 0)  # step in the block
      iota_S = jnp.arange(block_steps)
      p_B = jnp.sum(jnp.where(iota_S == sub_B[:, None], p_S, 0.0), axis=-1)  # no gather
      last_B = sub_B == block_steps - 1
      t_B = 1.0 - sub_B.astype(jnp.float32) / block_steps
      cand_BxL = masked_BxL & in_block_BxL  # positions that may be fixed now
      gen_BxL = ~given_BxL & in_block_BxL  # positions remasking may touch
    else:
      block_B = sub_B = state.block_B
      p_B = p_S[jnp.minimum(step, num_steps - 1)]
      last_B = step == num_steps - 1
      t_B = 1.0 - step.astype(jnp.float32) / num_steps
      cand_BxL, gen_BxL = masked_BxL, ~given_BxL
    num_cand_B = jnp.sum(cand_BxL, axis=-1, dtype=jnp.int32)
    p_Bx1, last_Bx1, t_Bx1 = p_B[..., None], last_B[..., None], t_B[..., None]

    if reuse:  # MDLM's cache: unchanged tokens, unchanged logits (a pure model)
      need_B = active_B & state.stale_B
      logits_BxLxV = jax.lax.cond(jnp.any(need_B), forward,
                                  lambda _: state.logits_BxLxV, state.tokens_BxL)
    else:  # every step changes every active row
      need_B = active_B
      logits_BxLxV = forward(state.tokens_BxL)
    vocab_size = logits_BxLxV.shape[-1]

    channels = _noise_channels(strategy=strategy, k_mode=k_mode, gumbel=gumbel,
                               temperature=temperature, vocab_size=vocab_size)
    noise = {}
    if channels:  # one RNG call per step, sliced into independent uniforms
      u_BxLxN = uniforms(state, max(c.stop for c in channels.values()), row_B)
      noise = {name: u_BxLxN[..., c] if name == "value" else u_BxLxN[..., c.start]
               for name, c in channels.items()}
    score_BxL, values_BxL, extras = _scores_and_values(
        logits_BxLxV, noise, strategy=strategy, temperature=temperature,
        score_space=score_space, k_mode=k_mode, top_k=top_k, top_p=top_p)

    if strategy == "vanilla":
      select_BxL = cand_BxL & (noise["count"] < p_Bx1)
    else:
      if gumbel > 0.0:
        scale = gumbel * (t_Bx1 if gumbel_schedule == "annealed" else 1.0)
        score_BxL = score_BxL + scale * _gumbel(noise["gumbel"])
      adaptive_BxL = None
      if k_mode == "deterministic":
        count_B = jnp.round(num_cand_B.astype(jnp.float32) * p_B).astype(jnp.int32)
        count_B = jnp.minimum(jnp.maximum(count_B, 1), num_cand_B)
      elif k_mode == "binomial":  # the same mean
        count_B = jnp.sum(cand_BxL & (noise["count"] < p_Bx1), axis=-1, dtype=jnp.int32)
      else:  # adaptive: the rule's positions (the last step fixes all that is left)
        adaptive_BxL = _adaptive_select(
            k_mode, score_BxL=score_BxL, candidates_BxL=cand_BxL,
            conf_BxL=extras.get("conf"), entropy_BxL=extras.get("entropy"),
            threshold=threshold, factor=factor, entropy_budget=entropy_budget)
        adaptive_BxL = adaptive_BxL | (cand_BxL & last_Bx1)
        count_B = jnp.sum(adaptive_BxL, axis=-1, dtype=jnp.int32)
      if adaptive_BxL is not None and not remask:
        select_BxL = adaptive_BxL
      elif remask:  # keep the best (already fixed + count) of the generated positions
        num_gen_B = jnp.sum(gen_BxL, axis=-1, dtype=jnp.int32)
        select_BxL = _select_top(score_BxL, gen_BxL, num_gen_B - num_cand_B + count_B)
      else:
        select_BxL = _select_top(score_BxL, cand_BxL, count_B)

    if remask:
      select_BxL = select_BxL & active_B[:, None]  # finished rows are frozen
      fresh_BxL = select_BxL & (masked_BxL | (values_BxL != state.tokens_BxL))
      unfix_BxL = active_B[:, None] & gen_BxL & ~select_BxL
      tokens_BxL = jnp.where(select_BxL, values_BxL,
                             jnp.where(unfix_BxL, mask_id, state.tokens_BxL))
      order_BxL = jnp.where(fresh_BxL, step[:, None],
                            jnp.where(unfix_BxL, -1, state.order_BxL))
    else:
      tokens_BxL = jnp.where(select_BxL, values_BxL, state.tokens_BxL)
      order_BxL = jnp.where(select_BxL, step[:, None], state.order_BxL)
    active_i32_B = active_B.astype(jnp.int32)
    return _State(step=state.step + 1, tokens_BxL=tokens_BxL, order_BxL=order_BxL,
                  steps_B=state.steps_B + active_i32_B, block_B=block_B,
                  sub_B=sub_B + active_i32_B if block_length else sub_B,
                  nfe_B=state.nfe_B + need_B.astype(jnp.int32),
                  stale_B=jnp.any(tokens_BxL != state.tokens_BxL, axis=-1),
                  logits_BxLxV=logits_BxLxV if reuse else None, given_BxL=given_BxL)

  zeros_B = jnp.zeros(shape_BxL[:1], jnp.int32)
  logits0 = None
  if reuse:
    logits_shape = jax.eval_shape(logits_fn, tokens_BxL).shape
    logits0 = jnp.zeros(logits_shape, jnp.float32)
  init = _State(step=jnp.zeros((), jnp.int32), tokens_BxL=tokens_BxL,
                order_BxL=jnp.full(shape_BxL, -1, jnp.int32), steps_B=zeros_B,
                block_B=zeros_B, sub_B=zeros_B, nfe_B=zeros_B,
                stale_B=jnp.ones(shape_BxL[:1], bool), logits_BxLxV=logits0,
                given_BxL=tokens_BxL != mask_id)
  if not slots:
    final = jax.lax.while_loop(cond, body, init)
    return SampleOutput(tokens=final.tokens_BxL, order=final.order_BxL,
                        steps=final.steps_B, nfe=final.nfe_B)
  return _stream(body, init, queue_NxL, mask_id=mask_id)


def _stream(body: Callable[[_State, jax.Array], _State], init: _State,
            queue_NxL: jax.Array, *, mask_id: int) -> SampleOutput:
  """Continuous batching: B slots decode the N queue rows; after each step every
  slot whose row has no MASK left hands its result back and takes the next row."""
  num = queue_NxL.shape[0]
  num_slots = init.tokens_BxL.shape[0]

  def refill(state: _Stream, done_B: jax.Array) -> _Stream:
    s = state.slots
    new_B = state.next_row + jnp.cumsum(done_B.astype(jnp.int32)) - 1
    take_B = done_B & (new_B < num)
    src_BxL = jnp.take(queue_NxL, jnp.clip(new_B, 0, num - 1), axis=0)
    tokens_BxL = jnp.where(take_B[:, None], src_BxL, s.tokens_BxL)
    reset_B, reset_BxL = ~take_B, ~take_B[:, None]
    slots = s.replace(
        tokens_BxL=tokens_BxL,
        given_BxL=jnp.where(take_B[:, None], src_BxL != mask_id, s.given_BxL),
        order_BxL=jnp.where(reset_BxL, s.order_BxL, -1),
        steps_B=jnp.where(reset_B, s.steps_B, 0), block_B=jnp.where(reset_B, s.block_B, 0),
        sub_B=jnp.where(reset_B, s.sub_B, 0), nfe_B=jnp.where(reset_B, s.nfe_B, 0),
        stale_B=s.stale_B | take_B)
    return state.replace(
        slots=slots, row_B=jnp.where(done_B, jnp.where(take_B, new_B, -1), state.row_B),
        next_row=state.next_row + jnp.sum(done_B, dtype=jnp.int32))

  def finish(state: _Stream) -> _Stream:
    s = state.slots
    done_B = (state.row_B >= 0) & ~jnp.any(s.tokens_BxL == mask_id, axis=-1)
    dest_B = jnp.where(done_B, state.row_B, num)  # out of range: dropped
    put = lambda out, x: out.at[dest_B].set(x, mode="drop")
    state = state.replace(tokens_NxL=put(state.tokens_NxL, s.tokens_BxL),
                          order_NxL=put(state.order_NxL, s.order_BxL),
                          steps_N=put(state.steps_N, s.steps_B),
                          nfe_N=put(state.nfe_N, s.nfe_B))
    return refill(state, done_B)

  def cond(state: _Stream) -> jax.Array:
    return jnp.any(state.row_B >= 0)

  def step(state: _Stream) -> _Stream:
    slots = body(state.slots, jnp.maximum(state.row_B, 0))
    return finish(state.replace(slots=slots))

  empty_B = jnp.full((num_slots,), -1, jnp.int32)
  zeros_N = jnp.zeros((num,), jnp.int32)
  start = _Stream(slots=init, row_B=empty_B, next_row=jnp.zeros((), jnp.int32),
                  tokens_NxL=queue_NxL, order_NxL=jnp.full(queue_NxL.shape, -1, jnp.int32),
                  steps_N=zeros_N, nfe_N=zeros_N)
  start = refill(start, jnp.ones((num_slots,), bool))  # every slot takes a row
  final = jax.lax.while_loop(cond, step, start)
  return SampleOutput(tokens=final.tokens_NxL, order=final.order_NxL,
                      steps=final.steps_N, nfe=final.nfe_N)


_STATIC = ("logits_fn", "mask_id", "strategy", "num_steps", "schedule", "k_mode",
           "gumbel", "temperature", "remask", "gumbel_schedule", "score_space",
           "threshold", "factor", "entropy_budget", "block_length", "top_k", "top_p",
           "slots")
_sample_jit = jax.jit(_sample_loop, static_argnames=_STATIC)


# ----------------------------------------------------------------------------------
# Public API.


def sample(logits_fn: LogitsFn, tokens_BxL: jax.Array, key: jax.Array, *, mask_id: int,
           strategy: str = "margin", num_steps: int = 50,
           schedule: str | schedules.Schedule = "linear",
           k_mode: str = "deterministic", gumbel: float = 0.0,
           temperature: float = 0.0, remask: bool = False,
           gumbel_schedule: str = "constant", score_space: str = "prob",
           threshold: float | None = None, factor: float | None = None,
           entropy_budget: float | None = None, block_length: int = 0,
           top_k: int = 0, top_p: float = 1.0, slots: int = 0) -> SampleOutput:
  """Generates every MASK position of `tokens_BxL`; traceable (usable inside jit).

  Args:
    logits_fn: tokens int32[B, L] -> logits float[B, L, V] (e.g. a closure over
      params). Called once per step on the whole batch.
    tokens_BxL: integer token ids; `mask_id` marks the positions to generate, every
      other position is a given (prompt) and is returned unchanged.
    key: a jax.random key; same key, same result.
    mask_id: the MASK token id (< V). Its logit is ignored.
    strategy: 'vanilla', 'random', 'top_prob', 'margin' or 'entropy'.
    num_steps: T, the number of reverse steps at most (the loop ends when no row
      has a MASK left); for adaptive k_modes a budget (the last step fixes all).
    schedule: schedule name or `schedules.Schedule` giving alpha(t).
    k_mode: 'deterministic' (K = round(m p), at least 1) or 'binomial'
      (K ~ Binomial(m, p)); not used by 'vanilla'. Adaptive (see the module
      docstring; not with 'vanilla'): 'threshold', 'factor', 'entropy_bounded'.
    threshold: tau in (0, 1] of k_mode 'threshold' (None: DEFAULT_THRESHOLD).
    factor: f > 0 of k_mode 'factor' (None: DEFAULT_FACTOR).
    entropy_budget: gamma >= 0 of k_mode 'entropy_bounded' (None:
      DEFAULT_ENTROPY_BUDGET). Each of these three must stay None with another
      k_mode.
    block_length: 0, or semi-autoregressive decoding in blocks of this many
      positions (it must divide L, and L / block_length must divide num_steps; see
      the module docstring).
    gumbel: coefficient of the Gumbel noise added to the ordering score (the
      paper states 0.5 on puzzles); not used by 'vanilla'.
    gumbel_schedule: 'constant' (the coefficient at every step) or 'annealed'
      (scaled by t = 1 - i/T, so the noise fades out over the steps).
    score_space: 'prob' ranks the score itself, 'log' its logarithm (the order
      is the same without noise; the noise acts differently).
    temperature: 0 writes the argmax; > 0 samples from softmax(logits / temperature).
    top_k: with temperature > 0, sample among the k most likely tokens only (0 = all).
    top_p: with temperature > 0, then sample within the nucleus: the fewest most
      likely tokens whose (tempered, top-k) probability reaches top_p (1 = all).
    remask: re-predict all generated positions each step and keep only the
      best-scoring ones (Ye et al. 2024); `order` then holds the last fixing step.
    slots: 0 decodes the B rows together: every forward pass runs on all B rows
      until the slowest is done. slots = S > 0 streams them (continuous batching):
      S rows at a time, and after each step every slot whose row has no MASK left
      takes the next row, so the model runs on S busy rows while the queue lasts
      (with adaptive k_modes rows finish at different steps). The random numbers
      are then keyed by (row, the row's own step), so a row's result does not
      depend on S or on the other rows; without noise (gumbel 0, temperature 0,
      k_mode not 'binomial', strategy not 'vanilla' or 'random') it equals the
      slots=0 result.

  Returns:
    SampleOutput(tokens int32[B, L], order int32[B, L], steps int32[B], nfe
    int32[B]).
  """
  schedule = _check_options(mask_id=mask_id, strategy=strategy, num_steps=num_steps,
                            schedule=schedule, k_mode=k_mode, gumbel=gumbel,
                            temperature=temperature, remask=remask,
                            gumbel_schedule=gumbel_schedule, score_space=score_space,
                            threshold=threshold, factor=factor,
                            entropy_budget=entropy_budget, block_length=block_length,
                            top_k=top_k, top_p=top_p, slots=slots)
  adaptive = _adaptive_options(strategy=strategy, k_mode=k_mode, threshold=threshold,
                               factor=factor, entropy_budget=entropy_budget)
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  _check_tokens(tokens_BxL)
  _check_key(key)
  _check_has_mask(tokens_BxL, mask_id)
  _check_blocks(int(block_length), tokens_BxL.shape[1], int(num_steps))
  try:  # compiled once per logits_fn object (a static argument must be hashable)
    hash(logits_fn)
    run = _sample_jit
  except TypeError:
    run = _sample_loop
  return run(logits_fn, tokens_BxL, key, mask_id=int(mask_id), strategy=strategy,
             num_steps=int(num_steps), schedule=schedule, k_mode=k_mode,
             gumbel=float(gumbel), temperature=float(temperature), remask=bool(remask),
             gumbel_schedule=gumbel_schedule, score_space=score_space,
             block_length=int(block_length), top_k=int(top_k), top_p=float(top_p),
             slots=int(slots), **adaptive)


# Options of `sample` that a config's `sampler` section sets, with their defaults.
CONFIG_OPTIONS: dict[str, Any] = dict(
    num_steps=50, schedule="linear", k_mode="deterministic", gumbel=0.0,
    gumbel_schedule="constant", score_space="prob", temperature=0.0, remask=False,
    threshold=DEFAULT_THRESHOLD, factor=DEFAULT_FACTOR,
    entropy_budget=DEFAULT_ENTROPY_BUDGET, block_length=0, top_k=0, top_p=1.0, slots=0)


def config_options(sampler_config: Any = None, **overrides: Any) -> dict[str, Any]:
  """`sample` keyword arguments from a config's `sampler` section (a ConfigDict or
  a dict, e.g. an older run's saved config); missing fields take CONFIG_OPTIONS'
  defaults, `overrides` that are not None replace fields.

  The option of an adaptive k_mode ('threshold', 'factor', 'entropy_budget') is
  None unless the resulting k_mode is its own: a config holds all three, but
  `sample` accepts only the one its k_mode reads. An override given for another
  k_mode is kept, so that `sample` rejects it."""
  options = {}
  for name, default in CONFIG_OPTIONS.items():
    value = None
    if sampler_config is not None:
      try:
        value = sampler_config[name]
      except (KeyError, AttributeError, TypeError):
        value = None
    if overrides.get(name) is not None:
      value = overrides[name]
    options[name] = type(default)(default if value is None else value)
  for mode, name in ADAPTIVE_K_MODES.items():
    if options["k_mode"] != mode and overrides.get(name) is None:
      options[name] = None
  unknown = set(overrides) - set(CONFIG_OPTIONS)
  if unknown:
    raise ValueError(f"unknown sampler options {sorted(unknown)}; valid: "
                     f"{', '.join(CONFIG_OPTIONS)}")
  return options


def strategy_options(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
  """`options` (e.g. from `config_options`) as `strategy` takes them: 'vanilla' fixes
  each position independently, so it drops remask and an adaptive k_mode (and that
  k_mode's option); other strategies take them unchanged. For tables that run one
  configured sampler with several strategies, vanilla included."""
  opts = dict(options)
  if strategy == "vanilla":
    opts["remask"] = False
    if opts.get("k_mode") in ADAPTIVE_K_MODES:
      opts["k_mode"] = "deterministic"
    for name in ADAPTIVE_K_MODES.values():
      if name in opts:
        opts[name] = None
  return opts


def make_sampler(apply_fn: Callable[[Any, jax.Array], jax.Array], **options: Any
                 ) -> Callable[[Any, jax.Array, jax.Array], SampleOutput]:
  """-> fn(params, tokens_BxL, key) -> SampleOutput, compiled once per input shape.

  `apply_fn(params, tokens_BxL) -> logits_BxLxV`; `options` are `sample`'s keyword
  arguments (mask_id is required). Options are checked here, inputs on each call.
  With a `models.Transformer` (train=False), each forward on CPU runs in
  cache-sized batch chunks by default (TransformerConfig.batch_chunk = AUTO_CHUNK,
  `transformer.inference_batch_chunk`; 2x faster for the 6M preset at batch 256);
  an explicit batch_chunk (0 = off) overrides it.
  """
  if not callable(apply_fn):
    raise ValueError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
  if "mask_id" not in options:
    raise ValueError("make_sampler needs mask_id=<MASK token id>")
  unknown = set(options) - set(_STATIC[1:])
  if unknown:
    raise ValueError(f"unknown sampler options {sorted(unknown)}; valid: "
                     f"{', '.join(_STATIC[1:])}")
  opts = dict(strategy="margin", num_steps=50, schedule="linear",
              k_mode="deterministic", gumbel=0.0, temperature=0.0, remask=False,
              gumbel_schedule="constant", score_space="prob", threshold=None,
              factor=None, entropy_budget=None, block_length=0, top_k=0, top_p=1.0,
              slots=0)
  opts.update(options)
  opts["schedule"] = _check_options(**opts)
  opts.update(_adaptive_options(strategy=opts["strategy"], k_mode=opts["k_mode"],
                                threshold=opts["threshold"], factor=opts["factor"],
                                entropy_budget=opts["entropy_budget"]))
  opts.update(mask_id=int(opts["mask_id"]), num_steps=int(opts["num_steps"]),
              gumbel=float(opts["gumbel"]), temperature=float(opts["temperature"]),
              remask=bool(opts["remask"]), block_length=int(opts["block_length"]),
              top_k=int(opts["top_k"]), top_p=float(opts["top_p"]),
              slots=int(opts["slots"]))

  @jax.jit
  def run(params: Any, tokens_BxL: jax.Array, key: jax.Array) -> SampleOutput:
    return _sample_loop(functools.partial(apply_fn, params), tokens_BxL, key, **opts)

  def sampler(params: Any, tokens_BxL: jax.Array, key: jax.Array) -> SampleOutput:
    _check_tokens(tokens_BxL)
    _check_key(key)
    _check_has_mask(tokens_BxL, opts["mask_id"])
    _check_blocks(opts["block_length"], tokens_BxL.shape[1], opts["num_steps"])
    return run(params, tokens_BxL, key)

  return sampler


LegalFn = Callable[[jax.Array, jax.Array], jax.Array]


def _legal(legal_fn: LegalFn, tokens_BxL: jax.Array, pos: jax.Array,
           shape: tuple[int, ...]) -> jax.Array:
  """bool `shape` ([B, V]): `legal_fn(tokens_BxL, pos)`, checked against the logits'
  shape at one position."""
  legal_BxV = legal_fn(tokens_BxL, pos)
  if legal_BxV.shape != tuple(shape):
    raise ValueError(f"legal_fn returned shape {legal_BxV.shape}; the logits at one "
                     f"position have shape {tuple(shape)}")
  return legal_BxV


def _legal_argmax(logits_BxV: jax.Array, tokens_BxL: jax.Array, pos: jax.Array,
                  legal_fn: LegalFn | None) -> jax.Array:
  """int32[B]: the best token, among `legal_fn(tokens_BxL, pos)` when given."""
  if legal_fn is not None:
    logits_BxV = jnp.where(_legal(legal_fn, tokens_BxL, pos, logits_BxV.shape),
                           logits_BxV, -jnp.inf)
  return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)


def _ar_loop(logits_fn: LogitsFn, tokens_BxL: jax.Array,
             prompt_len_B: jax.Array, legal_fn: LegalFn | None = None) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)
  length = tokens_BxL.shape[1]
  iota_L = jnp.arange(length)

  def body(pos: jax.Array, tokens_BxL: jax.Array) -> jax.Array:
    logits_BxLxV = logits_fn(tokens_BxL)
    _check_logits_shape(logits_BxLxV, tokens_BxL.shape, None)
    prev_BxV = jax.lax.dynamic_index_in_dim(logits_BxLxV, pos - 1, axis=1,
                                            keepdims=False)
    next_B = _legal_argmax(prev_BxV, tokens_BxL, pos, legal_fn)
    write_BxL = (iota_L == pos) & (pos >= prompt_len_B)[:, None]
    return jnp.where(write_BxL, next_B[:, None], tokens_BxL)

  start = jnp.maximum(jnp.min(prompt_len_B), 1)
  return jax.lax.fori_loop(start, length, body, tokens_BxL)


_ar_jit = jax.jit(_ar_loop, static_argnames=("logits_fn", "legal_fn"))


def ar_greedy(logits_fn: LogitsFn, tokens_BxL: jax.Array,
              prompt_len_B: jax.Array, legal_fn: LegalFn | None = None) -> jax.Array:
  """Greedy left-to-right decoding with a causal model; traceable.

  `logits_fn(tokens_BxL)[:, i]` predicts token i+1. Positions >= prompt_len_B[b] of
  row b are rewritten left to right (one full forward pass per position); positions
  < prompt_len are kept. `legal_fn(tokens_BxL, pos) -> bool[B, V]`, when given,
  restricts the token written at `pos` (e.g. `task.arm_legal_fn()`: moves into empty
  cells only). Returns int32[B, L].
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  _check_legal_fn(legal_fn)
  _check_prompt(tokens_BxL, prompt_len_B)
  return _ar_jit(logits_fn, tokens_BxL, prompt_len_B, legal_fn)


def _check_legal_fn(legal_fn: Any) -> None:
  if legal_fn is not None and not callable(legal_fn):
    raise ValueError(f"legal_fn must be callable or None, got {type(legal_fn).__name__}")


def _check_prompt(tokens_BxL: Any, prompt_len_B: Any, min_len: int = 1
                  ) -> np.ndarray | None:
  """Checks tokens and prompt lengths in [min_len, L]; the lengths where concrete."""
  _check_tokens(tokens_BxL)
  shape = getattr(prompt_len_B, "shape", None)
  dtype = getattr(prompt_len_B, "dtype", None)
  if shape is None or len(shape) != 1 or shape[0] != tokens_BxL.shape[0]:
    raise ValueError(f"prompt_len_B must be an integer array [batch={tokens_BxL.shape[0]}]"
                     f", got shape {shape}")
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
    raise ValueError(f"prompt_len_B must hold integers, got dtype {dtype}")
  if not _is_concrete(prompt_len_B):
    return None
  lengths = np.asarray(prompt_len_B)
  if lengths.min() < min_len or lengths.max() > tokens_BxL.shape[1]:
    why = " (at least one prompt token)" if min_len == 1 else ""
    raise ValueError(f"prompt_len_B must lie in [{min_len}, {tokens_BxL.shape[1]}]{why}, "
                     f"got values in [{lengths.min()}, {lengths.max()}]")
  return lengths


def _ar_cached_loop(config: Any, params: Any, tokens_BxL: jax.Array,
                    prompt_len_B: jax.Array, legal_fn: LegalFn | None = None) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)
  length = tokens_BxL.shape[1]
  iota_L = jnp.arange(length)
  # Positions < min(prompt_len) are final in every row: their keys and values come
  # from one causal pass over the whole (partly blank) sequence; later slots are
  # rewritten one by one below before anything attends to them.
  cache = kv_cache.prefill(config, params, tokens_BxL)

  def body(pos: jax.Array, carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
    tokens_BxL, cache = carry
    prev_B = jax.lax.dynamic_index_in_dim(tokens_BxL, pos - 1, axis=1, keepdims=False)
    logits_BxV, cache = kv_cache.decode_step(config, params, cache, prev_B, pos - 1)
    next_B = _legal_argmax(logits_BxV, tokens_BxL, pos, legal_fn)
    write_BxL = (iota_L == pos) & (pos >= prompt_len_B)[:, None]  # else: the prompt's
    return jnp.where(write_BxL, next_B[:, None], tokens_BxL), cache

  start = jnp.maximum(jnp.min(prompt_len_B), 1)
  return jax.lax.fori_loop(start, length, body, (tokens_BxL, cache))[0]


_ar_cached_jit = jax.jit(_ar_cached_loop, static_argnames=("config", "legal_fn"))


def ar_greedy_cached(model: Any, params: Any, tokens_BxL: jax.Array,
                     prompt_len_B: jax.Array, legal_fn: LegalFn | None = None
                     ) -> jax.Array:
  """`ar_greedy` for a causal `models.Transformer`, with a key/value cache; traceable.

  The same decoding, token for token (tests/test_sampling.py), in one
  lax.fori_loop: one causal pass fills the cache (`models.kv_cache.prefill`), then
  each position costs one single-token step (`kv_cache.decode_step`) instead of a
  full forward pass. Rows may have different prompt lengths: the loop starts after
  the shortest prompt, and a row whose prompt is longer feeds its own prompt token
  (positions < prompt_len_B[b] are never rewritten).

  Args:
    model: a causal `models.Transformer`, or its TransformerConfig.
    params: its parameters, as `model.apply({'params': params}, ...)` takes them
      (the {'params': ...} wrapper is accepted too).
    tokens_BxL: int32[B, L], L <= config.seq_len; positions >= prompt_len_B[b] are
      overwritten (their input values are never used).
    prompt_len_B: int[B] in [1, L].
    legal_fn: as for `ar_greedy`.

  Returns int32[B, L].
  """
  config = kv_cache.check_config(model)
  kv_cache.network_params(params)
  _check_legal_fn(legal_fn)
  _check_prompt(tokens_BxL, prompt_len_B)
  if tokens_BxL.shape[1] > config.seq_len:
    raise ValueError(f"sequence length {tokens_BxL.shape[1]} exceeds the model's "
                     f"seq_len={config.seq_len}")
  return _ar_cached_jit(config, params, tokens_BxL, prompt_len_B, legal_fn)


def _beam_select(logp_BWxV: jax.Array, score_BxW: jax.Array, tokens_BWxL: jax.Array,
                 pos: jax.Array, prompt_len_B: jax.Array, legal_fn: LegalFn | None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One beam step at `pos`: (new tokens [BW, L], scores [B, W], parents int32[BW],
  flat indices into the old beams). A row still inside its prompt keeps its token."""
  batch, width = score_BxW.shape
  vocab = logp_BWxV.shape[-1]
  if legal_fn is not None:
    logp_BWxV = jnp.where(_legal(legal_fn, tokens_BWxL, pos, logp_BWxV.shape),
                          logp_BWxV, -jnp.inf)
  active_BW = jnp.repeat(pos >= prompt_len_B, width)
  kept_BWxV = jax.nn.one_hot(tokens_BWxL[:, pos], vocab, dtype=jnp.bool_)
  logp_BWxV = jnp.where(active_BW[:, None], logp_BWxV,
                        jnp.where(kept_BWxV, 0.0, -jnp.inf))
  cand_BxWV = (score_BxW[:, :, None] + logp_BWxV.reshape(batch, width, vocab)
               ).reshape(batch, width * vocab)
  score_BxW, idx_BxW = jax.lax.top_k(cand_BxWV, width)
  parent_BW = (jnp.arange(batch)[:, None] * width + idx_BxW // vocab).reshape(-1)
  token_BW = (idx_BxW % vocab).reshape(-1).astype(jnp.int32)
  tokens_BWxL = tokens_BWxL[parent_BW].at[:, pos].set(token_BW)
  return tokens_BWxL, score_BxW, parent_BW


def _beam_init(tokens_BxL: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  batch = tokens_BxL.shape[0]
  score_BxW = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)
  return (jnp.repeat(tokens_BxL, width, axis=0),
          jnp.broadcast_to(score_BxW, (batch, width)).astype(jnp.float32))


def _beam_best(tokens_BWxL: jax.Array, width: int) -> jax.Array:
  return tokens_BWxL[::width]  # top_k sorts each row's beams, best first


def _ar_beam_loop(logits_fn: LogitsFn, tokens_BxL: jax.Array, prompt_len_B: jax.Array,
                  legal_fn: LegalFn | None, width: int) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)

  def body(pos: jax.Array, carry: tuple[jax.Array, jax.Array]
           ) -> tuple[jax.Array, jax.Array]:
    tokens_BWxL, score_BxW = carry
    logits_BWxLxV = logits_fn(tokens_BWxL)
    _check_logits_shape(logits_BWxLxV, tokens_BWxL.shape, None)
    prev_BWxV = jax.lax.dynamic_index_in_dim(logits_BWxLxV, pos - 1, axis=1,
                                             keepdims=False)
    logp_BWxV = jax.nn.log_softmax(prev_BWxV.astype(jnp.float32), axis=-1)
    tokens_BWxL, score_BxW, _ = _beam_select(logp_BWxV, score_BxW, tokens_BWxL, pos,
                                             prompt_len_B, legal_fn)
    return tokens_BWxL, score_BxW

  start = jnp.maximum(jnp.min(prompt_len_B), 1)
  out = jax.lax.fori_loop(start, tokens_BxL.shape[1], body, _beam_init(tokens_BxL, width))
  return _beam_best(out[0], width)


_ar_beam_jit = jax.jit(_ar_beam_loop, static_argnames=("logits_fn", "legal_fn", "width"))


def _check_width(width: Any) -> int:
  if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
    raise ValueError(f"beam width must be an integer >= 1, got {width!r}")
  return int(width)


def ar_beam(logits_fn: LogitsFn, tokens_BxL: jax.Array, prompt_len_B: jax.Array,
            width: int, legal_fn: LegalFn | None = None) -> jax.Array:
  """Beam search with a causal model: `width` hypotheses per row, ranked by the sum
  of their tokens' log-probabilities (all hypotheses have the same length); traceable.

  As `ar_greedy` (positions < prompt_len_B[b] kept, `legal_fn` restricts each
  written token, one full forward pass per position), but each step extends every
  hypothesis by every token and keeps the `width` best; returns the best, int32[B, L].
  width=1 is greedy decoding. On a puzzle written as (cell, value) pairs this ranks a
  move by p(cell) p(value | cell), so a cell whose value is sure wins over a cell
  the model names first but cannot fill.
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  width = _check_width(width)
  _check_legal_fn(legal_fn)
  _check_prompt(tokens_BxL, prompt_len_B)
  return _ar_beam_jit(logits_fn, tokens_BxL, prompt_len_B, legal_fn, width)


def _ar_beam_cached_loop(config: Any, params: Any, tokens_BxL: jax.Array,
                         prompt_len_B: jax.Array, legal_fn: LegalFn | None, width: int
                         ) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)
  cache = jax.tree.map(lambda x: jnp.repeat(x, width, axis=0),
                       kv_cache.prefill(config, params, tokens_BxL))

  def body(pos: jax.Array, carry: tuple[jax.Array, jax.Array, Any]
           ) -> tuple[jax.Array, jax.Array, Any]:
    tokens_BWxL, score_BxW, cache = carry
    prev_BW = jax.lax.dynamic_index_in_dim(tokens_BWxL, pos - 1, axis=1, keepdims=False)
    logits_BWxV, cache = kv_cache.decode_step(config, params, cache, prev_BW, pos - 1)
    logp_BWxV = jax.nn.log_softmax(logits_BWxV, axis=-1)
    tokens_BWxL, score_BxW, parent_BW = _beam_select(
        logp_BWxV, score_BxW, tokens_BWxL, pos, prompt_len_B, legal_fn)
    return tokens_BWxL, score_BxW, jax.tree.map(lambda x: x[parent_BW], cache)

  start = jnp.maximum(jnp.min(prompt_len_B), 1)
  tokens_BWxL, score_BxW = _beam_init(tokens_BxL, width)
  out = jax.lax.fori_loop(start, tokens_BxL.shape[1], body, (tokens_BWxL, score_BxW, cache))
  return _beam_best(out[0], width)


_ar_beam_cached_jit = jax.jit(_ar_beam_cached_loop,
                              static_argnames=("config", "legal_fn", "width"))


def ar_beam_cached(model: Any, params: Any, tokens_BxL: jax.Array,
                   prompt_len_B: jax.Array, width: int, legal_fn: LegalFn | None = None
                   ) -> jax.Array:
  """`ar_beam` for a causal `models.Transformer`, with a key/value cache (reordered
  with the hypotheses each step); the same tokens (tests/test_ar_decode.py). Args as
  for `ar_greedy_cached`, plus `width`."""
  config = kv_cache.check_config(model)
  kv_cache.network_params(params)
  width = _check_width(width)
  _check_legal_fn(legal_fn)
  _check_prompt(tokens_BxL, prompt_len_B)
  if tokens_BxL.shape[1] > config.seq_len:
    raise ValueError(f"sequence length {tokens_BxL.shape[1]} exceeds the model's "
                     f"seq_len={config.seq_len}")
  return _ar_beam_cached_jit(config, params, tokens_BxL, prompt_len_B, legal_fn, width)


def _check_pick(tokens_BxL: Any, prompt_len_B: Any, num_keys: Any, score: Any,
                legal_fn: Any) -> int:
  """Validates ar_pick's arguments; returns num_keys as an int."""
  if score not in PICK_SCORES:
    raise ValueError(f"score must be one of {', '.join(PICK_SCORES)}, got {score!r}")
  if (isinstance(num_keys, bool) or not isinstance(num_keys, (int, np.integer))
      or num_keys < 1):
    raise ValueError(f"num_keys must be an integer >= 1, got {num_keys!r}")
  _check_legal_fn(legal_fn)
  _check_tokens(tokens_BxL)
  if tokens_BxL.shape[1] % 2:
    raise ValueError(f"ar_pick decodes (key, value) pairs: the sequence length must be "
                     f"even, got {tokens_BxL.shape[1]}")
  lengths = _check_prompt(tokens_BxL, prompt_len_B, min_len=0)
  if lengths is not None and np.any(lengths % 2):
    raise ValueError("ar_pick decodes (key, value) pairs: every prompt_len must be "
                     f"even (whole pairs), got {sorted(set(lengths[lengths % 2].tolist()))}")
  return int(num_keys)


def _pick_keys(tokens_BxL: jax.Array, pos: jax.Array, num_keys: int,
               legal_fn: LegalFn | None, vocab: int) -> jax.Array:
  """bool[B, num_keys]: the keys that may go at `pos` (a key slot): not written in an
  earlier pair, and legal (`legal_fn`) where given."""
  batch, length = tokens_BxL.shape
  keys_BxP = tokens_BxL[:, 0::2]
  before_P = jnp.arange(length // 2) < pos // 2
  written_BxK = jnp.any((keys_BxP[..., None] == jnp.arange(num_keys))
                        & before_P[None, :, None], axis=1)
  ok_BxK = ~written_BxK
  if legal_fn is not None:
    ok_BxK &= _legal(legal_fn, tokens_BxL, pos, (batch, vocab))[:, :num_keys]
  return ok_BxK


def _pick_value(logits_BxV: jax.Array, tokens_BxL: jax.Array, pos: jax.Array,
                num_keys: int, score: str, legal_fn: LegalFn | None
                ) -> tuple[jax.Array, jax.Array]:
  """(confidence float32[B], best value int32[B]) of the value at `pos` (a value slot),
  over the legal values (ids >= num_keys, and `legal_fn` where given), renormalised:
  the MDM samplers' `score` of that distribution (`_scores_and_values`)."""
  ok_BxV = jnp.broadcast_to(jnp.arange(logits_BxV.shape[-1]) >= num_keys,
                            logits_BxV.shape)
  if legal_fn is not None:
    ok_BxV &= _legal(legal_fn, tokens_BxL, pos, logits_BxV.shape)
  masked_Bx1xV = jnp.where(ok_BxV, logits_BxV.astype(jnp.float32), -jnp.inf)[:, None]
  score_Bx1, value_Bx1, _ = _scores_and_values(masked_Bx1xV, {}, strategy=score,
                                               temperature=0.0)
  return score_Bx1[:, 0], value_Bx1[:, 0]


def _pick_choose(score_KxB: jax.Array, value_KxB: jax.Array, ok_BxK: jax.Array,
                 tokens_BxL: jax.Array, pos: jax.Array, prompt_len_B: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """(key, value) int32[B] to write at pos, pos + 1: the most confident allowed key
  (ties to the lower id) and its best value; a row still in its prompt keeps its own."""
  key_B = jnp.argmax(jnp.where(ok_BxK, score_KxB.T, -jnp.inf), axis=-1).astype(jnp.int32)
  value_B = jnp.take_along_axis(value_KxB.T, key_B[:, None], axis=1)[:, 0]
  active_B = pos >= prompt_len_B
  return (jnp.where(active_B, key_B, tokens_BxL[:, pos]),
          jnp.where(active_B, value_B, tokens_BxL[:, pos + 1]))


def _pick_write(tokens_BxL: jax.Array, pos: jax.Array, key_B: jax.Array,
                value_B: jax.Array) -> jax.Array:
  iota_L = jnp.arange(tokens_BxL.shape[1])
  tokens_BxL = jnp.where(iota_L == pos, key_B[:, None], tokens_BxL)
  return jnp.where(iota_L == pos + 1, value_B[:, None], tokens_BxL)


def _ar_pick_loop(logits_fn: LogitsFn, tokens_BxL: jax.Array, prompt_len_B: jax.Array,
                  num_keys: int, score: str, legal_fn: LegalFn | None) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)
  iota_L = jnp.arange(tokens_BxL.shape[1])

  def body(pair: jax.Array, tokens_BxL: jax.Array) -> jax.Array:
    pos = 2 * pair

    def candidate(key: jax.Array) -> tuple[jax.Array, jax.Array]:
      tried_BxL = jnp.where(iota_L == pos, key, tokens_BxL)
      logits_BxLxV = logits_fn(tried_BxL)
      _check_logits_shape(logits_BxLxV, tried_BxL.shape, None)
      logits_BxV = jax.lax.dynamic_index_in_dim(logits_BxLxV, pos, axis=1, keepdims=False)
      return _pick_value(logits_BxV, tried_BxL, pos + 1, num_keys, score, legal_fn)

    score_KxB, value_KxB = jax.lax.map(candidate, jnp.arange(num_keys, dtype=jnp.int32))
    vocab = jax.eval_shape(logits_fn, tokens_BxL).shape[-1]
    ok_BxK = _pick_keys(tokens_BxL, pos, num_keys, legal_fn, vocab)
    key_B, value_B = _pick_choose(score_KxB, value_KxB, ok_BxK, tokens_BxL, pos,
                                  prompt_len_B)
    return _pick_write(tokens_BxL, pos, key_B, value_B)

  return jax.lax.fori_loop(jnp.min(prompt_len_B) // 2, tokens_BxL.shape[1] // 2, body,
                           tokens_BxL)


_ar_pick_jit = jax.jit(_ar_pick_loop,
                       static_argnames=("logits_fn", "num_keys", "score", "legal_fn"))


def ar_pick(logits_fn: LogitsFn, tokens_BxL: jax.Array, prompt_len_B: jax.Array, *,
            num_keys: int, score: str = "top_prob", legal_fn: LegalFn | None = None
            ) -> jax.Array:
  """Confident-key decoding of (key, value) pairs with a causal model; traceable.

  The sequence is pairs (key at 2k, value at 2k + 1) from position 0, keys being the
  ids [0, num_keys) (Sudoku 'cell' layout: a cell id, then its digit). For each pair
  slot after the prompt, every key not written earlier in the row (and legal by
  `legal_fn(tokens, 2k)`, where given) is tried: one forward pass with the key at 2k
  gives p(value | prefix, key) at 2k + 1 over the values (ids >= num_keys, legal by
  `legal_fn(tokens, 2k + 1)`), renormalised. The key with the highest `score` of
  that distribution ('top_prob': its largest probability; 'margin': largest minus
  second; 'entropy': minus its entropy; ties to the lower key) is written with its
  most probable value. This is the MDM's adaptive order (Kim et al. 2025, section 3)
  brought to a causal model: the model's own p(key | prefix) is not used. Costs
  num_keys full forward passes per pair (`ar_pick_cached`: single-token steps).

  prompt_len_B: int[B], even (whole pairs), in [0, L]; positions < prompt_len_B[b]
  are kept, later ones overwritten. Returns int32[B, L].
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  num_keys = _check_pick(tokens_BxL, prompt_len_B, num_keys, score, legal_fn)
  return _ar_pick_jit(logits_fn, tokens_BxL, prompt_len_B, num_keys, score, legal_fn)


def _ar_pick_cached_loop(config: Any, params: Any, tokens_BxL: jax.Array,
                         prompt_len_B: jax.Array, num_keys: int, score: str,
                         legal_fn: LegalFn | None) -> jax.Array:
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  prompt_len_B = jnp.asarray(prompt_len_B).astype(jnp.int32)
  batch = tokens_BxL.shape[0]
  iota_L = jnp.arange(tokens_BxL.shape[1])
  # Positions before the shortest prompt are final: one causal pass caches them.
  cache = kv_cache.prefill(config, params, tokens_BxL)

  def body(pair: jax.Array, carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
    tokens_BxL, cache = carry
    pos = 2 * pair

    def candidate(key: jax.Array) -> tuple[jax.Array, jax.Array]:
      logits_BxV, _ = kv_cache.decode_step(config, params, cache,
                                           jnp.full((batch,), key, jnp.int32), pos)
      tried_BxL = jnp.where(iota_L == pos, key, tokens_BxL)
      return _pick_value(logits_BxV, tried_BxL, pos + 1, num_keys, score, legal_fn)

    score_KxB, value_KxB = jax.lax.map(candidate, jnp.arange(num_keys, dtype=jnp.int32))
    ok_BxK = _pick_keys(tokens_BxL, pos, num_keys, legal_fn, config.vocab_size)
    key_B, value_B = _pick_choose(score_KxB, value_KxB, ok_BxK, tokens_BxL, pos,
                                  prompt_len_B)
    _, cache = kv_cache.decode_step(config, params, cache, key_B, pos)
    _, cache = kv_cache.decode_step(config, params, cache, value_B, pos + 1)
    return _pick_write(tokens_BxL, pos, key_B, value_B), cache

  return jax.lax.fori_loop(jnp.min(prompt_len_B) // 2, tokens_BxL.shape[1] // 2, body,
                           (tokens_BxL, cache))[0]


_ar_pick_cached_jit = jax.jit(_ar_pick_cached_loop,
                              static_argnames=("config", "num_keys", "score", "legal_fn"))


def ar_pick_cached(model: Any, params: Any, tokens_BxL: jax.Array,
                   prompt_len_B: jax.Array, *, num_keys: int, score: str = "top_prob",
                   legal_fn: LegalFn | None = None) -> jax.Array:
  """`ar_pick` for a causal `models.Transformer`, with a key/value cache: each tried
  key is one single-token step from the cached prefix, then two steps write the pair;
  the same tokens (tests/test_ar_decode.py). Args as for `ar_greedy_cached` and
  `ar_pick`."""
  config = kv_cache.check_config(model)
  kv_cache.network_params(params)
  num_keys = _check_pick(tokens_BxL, prompt_len_B, num_keys, score, legal_fn)
  if tokens_BxL.shape[1] > config.seq_len:
    raise ValueError(f"sequence length {tokens_BxL.shape[1]} exceeds the model's "
                     f"seq_len={config.seq_len}")
  if num_keys >= config.vocab_size:
    raise ValueError(f"num_keys={num_keys} leaves no value ids in the model's "
                     f"vocab_size={config.vocab_size}")
  return _ar_pick_cached_jit(config, params, tokens_BxL, prompt_len_B, num_keys, score,
                             legal_fn)
