"""Evaluation: adaptive-inference strategy tables for any task.

As in Kim et al. 2025 (arXiv 2502.06768), Tables 1-3 and 5.

Two levels:
- `evaluate_strategies(task, examples, logits_fn=... | apply_fn=..., params=...,
  strategies=..., key=...)` is a pure function (no files): it generates the
  answers of `examples` with each strategy, batched and jitted, and scores them
  with `task.check`. Strategy 'greedy' decodes a causal (ARM) model left to right
  in one of the task's ARM orderings.
- `evaluate(config, workdir)` loads a checkpoint and the held-out splits, runs
  `evaluate_strategies` and a num_steps sweep, and writes
  `<workdir>/eval/results.json`, `<workdir>/eval/results.md` (tables laid out like
  the paper's Tables 1, 2, 3 and 5: `mdm_jax.reports`) and pictures (see
  `mdm_jax.plots`).
- `sample_and_print(config, workdir)`: --mode=sample.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mdm_jax import config_schema
from mdm_jax import experiment
from mdm_jax import fileio
from mdm_jax import sampling
from mdm_jax.data import base
from mdm_jax.reports import (  # noqa: F401  (the tables live in reports.py)
    ARM_STRATEGY, EXTRA_LABELS, MDM_STRATEGIES, STRATEGIES, STRATEGY_LABELS,
    arm_decoding, combined_markdown, format_params, markdown_table, method_label,
    results_markdown)


LogitsFn = Callable[[jax.Array], jax.Array]
ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass
class StrategyResult:
  """What one strategy did on N examples (arrays in the task's MDM layout)."""
  strategy: str
  num_puzzles: int
  num_solved: int
  solved: float  # share of puzzles solved completely (task.check 'solved')
  cell_accuracy: float  # share of correct answer (maskable) positions
  mean_steps: float  # mean number of reverse steps (ARM: decoded tokens) per puzzle
  puzzles_per_sec: float  # generation throughput after compilation
  seconds: float  # generation time measured for puzzles_per_sec
  solved_N: np.ndarray  # bool[N]
  correct_NxL: np.ndarray  # bool[N, L]
  tokens_NxL: np.ndarray  # int32[N, L]
  steps_N: np.ndarray  # int32[N]
  order_NxL: np.ndarray | None  # int32[N, L] decoding step, -1 for givens; None (ARM)
  maskable_NxL: np.ndarray  # bool[N, L] answer positions (what was generated)
  # Means of the task's other per-example scores (e.g. L&O-NAE-SAT 'consistent_frac').
  extra: dict[str, float] = dataclasses.field(default_factory=dict)
  # Rank correlation of the decoding order with the task's solver order, per puzzle
  # (NaN where undefined), and that solver order; None when there is none.
  corr_N: np.ndarray | None = None
  solver_rank_NxL: np.ndarray | None = None
  # Mean forward passes per puzzle (SampleOutput.nfe; ARM: single-token forwards).
  mean_nfe: float = float("nan")

  def summary(self) -> dict[str, Any]:
    """The JSON-able scalars."""
    return dict(strategy=self.strategy, label=STRATEGY_LABELS[self.strategy],
                num_puzzles=self.num_puzzles, num_solved=self.num_solved,
                solved=self.solved, cell_accuracy=self.cell_accuracy,
                mean_steps=self.mean_steps, mean_nfe=self.mean_nfe,
                puzzles_per_sec=self.puzzles_per_sec, seconds=self.seconds, **self.extra)


# ----------------------------------------------------------------------------------
# Argument checks.


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def _check_examples(examples: Any) -> int:
  if not isinstance(examples, Mapping) or not examples:
    raise ValueError("examples must be a non-empty dict of numpy arrays (a task's Examples)")
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in examples.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise ValueError(f"examples' arrays must share their first dimension, got {sizes}")
  n = next(iter(sizes.values()))
  if n < 1:
    raise ValueError("examples hold no example")
  return int(n)


def _check_key(key: Any) -> None:
  dtype = getattr(key, "dtype", None)
  ok = dtype is not None and (
      (jnp.issubdtype(dtype, jax.dtypes.prng_key) and key.shape == ()) or
      (dtype == jnp.uint32 and key.shape == (2,)))
  if not ok:
    raise ValueError("key must be a single jax.random.key(seed) or "
                     f"jax.random.PRNGKey(seed), got {type(key).__name__} {key!r:.60}")


def check_strategies(strategies: Any) -> tuple[str, ...]:
  """Validates a strategy list: MDM strategies, or ('greedy',) alone."""
  if isinstance(strategies, str):
    strategies = (strategies,)
  try:
    strategies = tuple(strategies)
  except TypeError:
    raise ValueError(f"strategies must be a list of names, got {strategies!r}") from None
  if not strategies:
    raise ValueError(f"strategies is empty; choose from {', '.join(STRATEGIES)}")
  for s in strategies:
    if s not in STRATEGIES:
      raise ValueError(f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
  if len(set(strategies)) != len(strategies):
    raise ValueError(f"strategies has duplicates: {list(strategies)}")
  if ARM_STRATEGY in strategies and len(strategies) > 1:
    raise ValueError(f"strategy {ARM_STRATEGY!r} (causal models) cannot be mixed with "
                     f"masked-diffusion strategies, got {list(strategies)}")
  return strategies


def _check_sampler_options(strategies: Sequence[str], mask_id: int,
                           options: Mapping[str, Any]) -> None:
  """Checks every strategy's options before anything runs (cheap, no tracing)."""
  for s in strategies:
    if s == ARM_STRATEGY:
      continue
    opts = sampling.strategy_options(s, options)  # vanilla: no remask, no adaptive K
    sampling.make_sampler(lambda p, t: t, mask_id=mask_id, strategy=s, **opts)


# ----------------------------------------------------------------------------------
# Batched, jitted generation.


def _batch_sharding(batch_size: int, shard: bool | None) -> jax.sharding.Sharding | None:
  devices = jax.local_devices()
  if shard is None:  # auto: split over accelerators, not over (virtual) CPU devices
    shard = devices[0].platform != "cpu"
  if not shard or len(devices) < 2 or batch_size % len(devices):
    return None
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def _run_batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray], *,
                 batch_size: int, key: jax.Array, shard: bool | None,
                 time_it: bool = True) -> tuple[list[np.ndarray], float, int]:
  """Runs fn(*batch_arrays, key_b) over fixed-size batches (the last one padded).

  Returns (outputs concatenated over the N rows, seconds, puzzles timed). The
  first batch is run once to compile; timing covers the other batches, or a
  second run of the first batch when there is only one (not with time_it=False:
  then seconds and puzzles timed are 0).
  """
  n = arrays[0].shape[0]
  bs = min(batch_size, n)
  sharding = _batch_sharding(bs, shard)
  starts = list(range(0, n, bs))

  def run(i: int) -> tuple[Any, int]:
    idx = np.arange(starts[i], min(n, starts[i] + bs))
    count = idx.size
    idx = np.concatenate([idx, np.full(bs - count, idx[-1])])
    batch = [np.asarray(a[idx]) for a in arrays]
    if sharding is not None:
      batch = [jax.device_put(b, sharding) for b in batch]
    out = fn(*batch, jax.random.fold_in(key, i))
    return out, count

  first, first_count = run(0)
  jax.block_until_ready(first)
  outputs = [first]
  counts = [first_count]
  t0 = time.perf_counter()
  if len(starts) == 1:
    timed = 0
    if time_it:
      jax.block_until_ready(run(0)[0])
      timed = first_count
  else:
    for i in range(1, len(starts)):
      out, count = run(i)
      outputs.append(out)
      counts.append(count)
    jax.block_until_ready(outputs)
    timed = n - first_count
  seconds = time.perf_counter() - t0
  leaves = [jax.tree.leaves(o) for o in outputs]
  joined = [np.concatenate([np.asarray(l[j])[:c] for l, c in zip(leaves, counts)])
            for j in range(len(leaves[0]))]
  return joined, seconds, timed


def _with_rule_mask(task: base.Task, logits_fn: LogitsFn | None, apply_fn: ApplyFn | None
                    ) -> tuple[LogitsFn | None, ApplyFn | None]:
  """(logits_fn, apply_fn) whose logits are pushed to the floor where
  `task.rule_mask_fn()` forbids the token."""
  allowed_fn = task.rule_mask_fn()
  if allowed_fn is None:
    raise ValueError(f"task {task.name!r} has no rule mask (Task.rule_mask_fn)")

  def masked(tokens_BxL: jax.Array, logits_BxLxV: jax.Array) -> jax.Array:
    floor = jnp.asarray(jnp.finfo(logits_BxLxV.dtype).min / 2, logits_BxLxV.dtype)
    return jnp.where(allowed_fn(tokens_BxL), logits_BxLxV, floor)

  if logits_fn is not None:
    return (lambda tokens: masked(tokens, logits_fn(tokens))), None
  return None, lambda params, tokens: masked(tokens, apply_fn(params, tokens))


def _check_arm_pick(task: base.Task, arm_pick: str, arm_beam: int) -> int:
  """The number of keys `sampling.ar_pick` decodes over; a clear error otherwise."""
  if arm_pick not in sampling.PICK_SCORES:
    raise ValueError(f"arm_pick must be '' (the paper's greedy decoding) or one of "
                     f"{', '.join(sampling.PICK_SCORES)}, got {arm_pick!r}")
  if arm_beam != 1:
    raise ValueError(f"arm_pick={arm_pick!r} and arm_beam={arm_beam}: choose one")
  num_keys = task.arm_pick_keys()
  if num_keys is None:
    raise ValueError(f"arm_pick needs an ARM layout of (key, value) pairs; task "
                     f"{task.name!r} has none (Sudoku: task.params arm_vocab='cell')")
  return num_keys


class Generator:
  """Fills in the answers of a task's examples with one strategy: the generate step
  shared by evaluation (`evaluate_strategies`), the sample mode, `solve` and
  training's periodic solve rate.

  gen = Generator(task, "margin", apply_fn=apply_fn, options=sampler_options)
  inputs = gen.inputs(examples, key)       # prompts: MDM tokens, or ARM tokens + lengths
  out = gen(params, inputs, key)           # arrays (batched, jitted; any sharding)
  tokens_NxL = gen.answers(examples, out)  # MDM layout, for task.check

  MDM strategies return (tokens, order, steps, nfe); 'greedy' (causal models, in
  `arm_ordering`) returns (tokens,) of the ARM layout, written as legal moves only
  (`task.arm_legal_fn()`, where the task has one) unless `arm_legal=False`;
  `arm_beam` > 1 decodes by beam search of that width instead (`sampling.ar_beam`);
  `arm_pick` ('top_prob' | 'margin' | 'entropy') chooses which cell comes next by
  the model's confidence in its value (`sampling.ar_pick`; Sudoku 'cell' layout).
  `rule_mask` (MDM strategies) lets the model write only tokens that break none of
  the puzzle's rules given what is written (`task.rule_mask_fn()`; off by default,
  as in the paper). `logits_fn` (tokens -> logits, no params) replaces `apply_fn`;
  with `arm_model` (the causal Transformer behind apply_fn) greedy decoding uses its
  key/value cache (same tokens).
  """

  def __init__(self, task: base.Task, strategy: str, *, logits_fn: LogitsFn | None = None,
               apply_fn: ApplyFn | None = None, options: Mapping[str, Any] | None = None,
               arm_ordering: str | None = None, arm_model: Any = None,
               arm_legal: bool = True, arm_beam: int = 1, arm_pick: str = "",
               rule_mask: bool = False):
    if (logits_fn is None) == (apply_fn is None):
      raise ValueError("give exactly one of logits_fn or apply_fn")
    self.task, self.strategy = task, strategy
    self.arm = strategy == ARM_STRATEGY
    if rule_mask:
      if self.arm:
        raise ValueError("rule_mask is for MDM strategies; ARM decoding has arm_legal")
      logits_fn, apply_fn = _with_rule_mask(task, logits_fn, apply_fn)
    if self.arm:
      if arm_ordering not in task.arm_orderings:
        raise ValueError(f"strategy 'greedy' needs arm_ordering, one of "
                         f"{', '.join(task.arm_orderings) or '(none: task has no ARM layout)'};"
                         f" got {arm_ordering!r}")
      self.arm_ordering = arm_ordering
      legal = task.arm_legal_fn() if arm_legal else None
      # One decoder over full forwards (`full`), one over a key/value cache (`cached`).
      if arm_pick:
        pick = dict(num_keys=_check_arm_pick(task, arm_pick, arm_beam), score=arm_pick,
                    legal_fn=legal)
        full = functools.partial(sampling.ar_pick, **pick)
        cached = functools.partial(sampling.ar_pick_cached, **pick)
      elif arm_beam != 1:
        width = _check_int("arm_beam", arm_beam, 1)
        full = functools.partial(sampling.ar_beam, width=width, legal_fn=legal)
        cached = functools.partial(sampling.ar_beam_cached, width=width, legal_fn=legal)
      else:
        full = functools.partial(sampling.ar_greedy, legal_fn=legal)
        cached = functools.partial(sampling.ar_greedy_cached, legal_fn=legal)
      if logits_fn is not None:
        self._fn = lambda params, tokens, plen, key: full(logits_fn, tokens, plen)
      elif arm_model is not None:
        self._fn = jax.jit(lambda params, tokens, plen, key: cached(
            arm_model, params, tokens, plen))
      else:
        self._fn = jax.jit(lambda params, tokens, plen, key: full(
            functools.partial(apply_fn, params), tokens, plen))
      return
    mask_id = int(task.mdm_layout().mask_id)
    opts = sampling.strategy_options(strategy, dict(options or {}))
    if logits_fn is not None:
      sample = functools.partial(sampling.sample, logits_fn, mask_id=mask_id,
                                 strategy=strategy, **opts)
      self._fn = lambda params, tokens, key: _as_tuple(sample(tokens, key))
    else:
      sampler = sampling.make_sampler(apply_fn, mask_id=mask_id, strategy=strategy, **opts)
      self._fn = lambda params, tokens, key: _as_tuple(sampler(params, tokens, key))

  def inputs(self, examples: base.Examples, key: jax.Array) -> dict[str, np.ndarray]:
    """The prompts: every answer position MASK (MDM) or blanked (ARM; 'random'
    orderings drawn from `key`), so that no model sees an answer."""
    if not self.arm:
      return {"tokens": self.task.mdm_prompt(examples)}
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    tokens, plen = self.task.arm_prompt(examples, self.arm_ordering,
                                        rng=np.random.default_rng(seed))
    return {"tokens": tokens, "prompt_len": plen}

  def __call__(self, params: Any, inputs: Mapping[str, Any], key: jax.Array
               ) -> tuple[jax.Array, ...]:
    if self.arm:
      return (self._fn(params, inputs["tokens"], inputs["prompt_len"], key),)
    return self._fn(params, inputs["tokens"], key)

  def answers(self, examples: base.Examples, out: Sequence[Any]) -> np.ndarray:
    """int32[N, L] MDM-layout tokens of `out` (the first N rows), for task.check."""
    tokens = np.asarray(out[0])[:_check_examples(examples)]
    if self.arm:
      return np.asarray(self.task.arm_decode(examples, tokens), np.int32)
    return tokens.astype(np.int32)


def _average_ranks(x_K: np.ndarray) -> np.ndarray:
  """Ranks 0..K-1 with ties given their average rank."""
  order = np.argsort(x_K, kind="stable")
  ranks = np.empty(len(x_K), np.float64)
  ranks[order] = np.arange(len(x_K))
  _, inverse, counts = np.unique(x_K, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  return (sums / counts)[inverse]


def order_correlation(order_NxL: np.ndarray, rank_NxL: np.ndarray) -> np.ndarray:
  """float[N]: Spearman's rank correlation, per row, between the step at which a
  decoder fixed each position and the solver's fill rank, over the positions where
  both are >= 0 (ties get average ranks); NaN where fewer than 3 positions or either
  order is constant (e.g. all decoded in one step)."""
  out = np.full(order_NxL.shape[0], np.nan)
  for i, (a, b) in enumerate(zip(np.asarray(order_NxL), np.asarray(rank_NxL))):
    keep = (a >= 0) & (b >= 0)
    if keep.sum() < 3:
      continue
    ra, rb = _average_ranks(a[keep]), _average_ranks(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    if denom > 0:
      out[i] = float((ra * rb).sum() / denom)
  return out


def _score(task: base.Task, examples: base.Examples, strategy: str,
           tokens_NxL: np.ndarray, maskable_NxL: np.ndarray, steps_N: np.ndarray,
           order_NxL: np.ndarray | None, seconds: float, timed: int,
           nfe_N: np.ndarray | None = None) -> StrategyResult:
  checked = task.check(examples, tokens_NxL)
  solved_N = np.asarray(checked["solved"], bool)
  correct_NxL = np.asarray(checked["correct"], bool)
  n = solved_N.shape[0]
  num_answer = int(maskable_NxL.sum())
  cell_acc = float((correct_NxL & maskable_NxL).sum() / max(num_answer, 1))
  extra = {}
  for name, value in checked.items():
    value = np.asarray(value)
    if (name not in ("solved", "correct") and value.shape == (n,)
        and np.issubdtype(value.dtype, np.number)):
      extra[name] = float(np.mean(value))
  rank_NxL = task.solver_rank(examples) if order_NxL is not None else None
  corr_N = None
  if rank_NxL is not None:
    corr_N = order_correlation(order_NxL, rank_NxL)
    if np.isfinite(corr_N).any():
      extra["order_corr"] = float(np.nanmean(corr_N))
  return StrategyResult(
      strategy=strategy, num_puzzles=n, num_solved=int(solved_N.sum()),
      solved=float(solved_N.mean()), cell_accuracy=cell_acc,
      mean_steps=float(np.mean(steps_N)),
      puzzles_per_sec=(float(timed / seconds) if seconds > 0 else float("inf")) if timed
      else float("nan"),
      seconds=float(seconds), solved_N=solved_N, correct_NxL=correct_NxL,
      tokens_NxL=np.asarray(tokens_NxL, np.int32), steps_N=np.asarray(steps_N, np.int32),
      order_NxL=None if order_NxL is None else np.asarray(order_NxL, np.int32),
      maskable_NxL=maskable_NxL, extra=extra, corr_N=corr_N, solver_rank_NxL=rank_NxL,
      mean_nfe=float(np.mean(steps_N if nfe_N is None else nfe_N)))


def evaluate_strategies(task: base.Task, examples: base.Examples, *,
                        key: jax.Array,
                        logits_fn: LogitsFn | None = None,
                        apply_fn: ApplyFn | None = None,
                        params: Any = None,
                        strategies: Sequence[str] = ("vanilla", "top_prob", "margin"),
                        batch_size: int = 256,
                        num_steps: int = 50,
                        schedule: str = "linear",
                        k_mode: str = "deterministic",
                        gumbel: float = 0.0,
                        temperature: float = 0.0,
                        remask: bool = False,
                        gumbel_schedule: str = "constant",
                        score_space: str = "prob",
                        threshold: float | None = None,
                        factor: float | None = None,
                        entropy_budget: float | None = None,
                        block_length: int = 0,
                        top_k: int = 0,
                        top_p: float = 1.0,
                        slots: int = 0,
                        arm_ordering: str | None = None,
                        arm_model: Any = None,
                        arm_legal: bool = True,
                        arm_beam: int = 1,
                        arm_pick: str = "",
                        rule_mask: bool = False,
                        shard: bool | None = None,
                        time_it: bool = True,
                        verbose: bool = False) -> dict[str, StrategyResult]:
  """Generates the answers of `examples` with each strategy and scores them.

  Args:
    task: the puzzle task (`data.get_task(...)`).
    examples: the task's examples (e.g. `data.store.load_examples(path)`).
    key: jax.random key; same key, same result (each strategy uses the same key).
    logits_fn: tokens int32[B, L] -> logits [B, L, V]; or give `apply_fn` and
      `params` (apply_fn(params, tokens) -> logits), compiled once per strategy.
    params: the parameters passed to `apply_fn`.
    strategies: MDM strategies ('vanilla', 'random', 'top_prob', 'margin',
      'entropy'), or ('greedy',) for a causal model decoded in `arm_ordering`.
    batch_size: puzzles per generation call (the last batch is padded).
    num_steps, schedule, k_mode, gumbel, temperature, remask, gumbel_schedule,
      score_space, threshold, factor, entropy_budget, block_length, top_k, top_p,
      slots: `sampling.sample` options (slots > 0: all puzzles go to one call that
      streams them through `slots` slots; batch_size and shard are then unused)
      ('vanilla' ignores remask and adaptive k_modes: `sampling.strategy_options`).
    arm_ordering: one of `task.arm_orderings`, for 'greedy'.
    arm_model: for 'greedy' with apply_fn: the causal `models.Transformer` behind
      apply_fn; decodes with its key/value cache (`sampling.ar_greedy_cached`, the
      same tokens) instead of one full forward per token (`sampling.ar_greedy`).
    arm_legal: for 'greedy': write only legal moves (`task.arm_legal_fn()`: an
      empty cell, a value), as an MDM only fills masked positions; False: the
      unconstrained argmax.
    arm_beam: for 'greedy': 1 writes the argmax token; W > 1 keeps the W most
      probable hypotheses per puzzle (beam search, `sampling.ar_beam_cached`) and
      returns the best.
    arm_pick: for 'greedy' on a (cell, value) layout: '' (the paper's decoding)
      writes the model's next token; 'top_prob' | 'margin' | 'entropy' tries every
      empty cell and writes the one whose value the model is surest of
      (`sampling.ar_pick_cached`), the MDM's adaptive order for an ARM.
    rule_mask: for MDM strategies: write only tokens that break none of the
      puzzle's rules given what is written (`task.rule_mask_fn()`); the paper's
      decoders do not.
    shard: split each batch over the local devices (when it divides evenly);
      None = only when they are accelerators (GPU/TPU), not CPU devices.
    time_it: measure puzzles/s (a single batch then runs twice); False: one pass,
      puzzles_per_sec is NaN.
    verbose: print one line per strategy.

  Returns:
    {strategy: StrategyResult}, in the order given.
  """
  if not isinstance(task, base.Task):
    raise ValueError(f"task must be a mdm_jax.data.base.Task, got {type(task).__name__}")
  _check_examples(examples)
  strategies = check_strategies(strategies)
  if (logits_fn is None) == (apply_fn is None):
    raise ValueError("give exactly one of logits_fn or apply_fn (with params)")
  if logits_fn is not None and not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  if apply_fn is not None:
    if not callable(apply_fn):
      raise ValueError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    if params is None:
      raise ValueError("apply_fn needs params")
  batch_size = _check_int("batch_size", batch_size, 1)
  _check_key(key)
  options = dict(num_steps=num_steps, schedule=schedule, k_mode=k_mode, gumbel=gumbel,
                 temperature=temperature, remask=remask, gumbel_schedule=gumbel_schedule,
                 score_space=score_space, threshold=threshold, factor=factor,
                 entropy_budget=entropy_budget, block_length=block_length, top_k=top_k,
                 top_p=top_p, slots=slots)

  maskable_NxL = task.answer_mask(examples)
  results: dict[str, StrategyResult] = {}

  names = ("tokens", "prompt_len") if strategies == (ARM_STRATEGY,) else ("tokens",)

  def generate(gen: Generator, batch_size: int, shard: bool | None
               ) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray], float, int]:
    inputs = gen.inputs(examples, key)
    out, seconds, timed = _run_batched(
        lambda *a: gen(params, dict(zip(names, a[:-1])), a[-1]),
        [inputs[n] for n in names], batch_size=batch_size, key=key, shard=shard,
        time_it=time_it)
    return inputs, gen.answers(examples, out), out, seconds, timed

  if strategies == (ARM_STRATEGY,):
    gen = Generator(task, ARM_STRATEGY, logits_fn=logits_fn, apply_fn=apply_fn,
                    arm_ordering=arm_ordering, arm_model=arm_model, arm_legal=arm_legal,
                    arm_beam=arm_beam, arm_pick=arm_pick)
    inputs, decoded, out, seconds, timed = generate(gen, batch_size, shard)
    tokens_N = np.asarray(out[0]).shape[1] - inputs["prompt_len"]
    result = _score(task, examples, ARM_STRATEGY, decoded, maskable_NxL, tokens_N, None,
                    seconds, timed, _arm_forwards(task, tokens_N, arm_beam, arm_pick))
    results[ARM_STRATEGY] = result
    if verbose:
      print(_progress_line(result), flush=True)
    return results

  if not maskable_NxL.any():
    raise ValueError("the examples have no answer (maskable) position to generate")
  _check_sampler_options(strategies, int(task.mdm_layout().mask_id), options)
  n = _check_examples(examples)
  for strategy in strategies:
    gen = Generator(task, strategy, logits_fn=logits_fn, apply_fn=apply_fn,
                    options=options, rule_mask=rule_mask)
    streamed = bool(options["slots"])  # one call streams every puzzle
    _, out_tokens, (_, order, steps, nfe), seconds, timed = generate(
        gen, n if streamed else batch_size, False if streamed else shard)
    result = _score(task, examples, strategy, out_tokens, maskable_NxL, steps, order,
                    seconds, timed, nfe)
    results[strategy] = result
    if verbose:
      print(_progress_line(result), flush=True)
  return results


def _arm_forwards(task: base.Task, tokens_N: np.ndarray, arm_beam: int,
                  arm_pick: str) -> np.ndarray:
  """ARM NFE per puzzle, in single-token forwards of the causal model: one per decoded
  token (greedy), `arm_beam` per token (beam search), or per (key, value) pair one per
  tried key plus two that write the pair (`arm_pick`)."""
  if arm_pick:
    return tokens_N // 2 * (int(task.arm_pick_keys()) + 2)
  return tokens_N * max(int(arm_beam), 1)


def _as_tuple(out: sampling.SampleOutput
              ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  steps = jnp.broadcast_to(out.steps, out.tokens.shape[:1])
  return out.tokens, out.order, steps, jnp.broadcast_to(out.nfe, out.tokens.shape[:1])


def _progress_line(r: StrategyResult) -> str:
  return (f"  {STRATEGY_LABELS[r.strategy]:>16}: solved {r.num_solved}/{r.num_puzzles}"
          f" ({100 * r.solved:.2f}%), cells {100 * r.cell_accuracy:.2f}%, "
          f"{r.mean_steps:.1f} steps, {r.mean_nfe:.1f} NFE, {r.puzzles_per_sec:.1f} "
          "puzzles/s")


# ----------------------------------------------------------------------------------
# L&O-NAE-SAT: per-position error of the denoiser under random masking (Figure 2).


def position_errors(task: base.Task, examples: base.Examples, *, key: jax.Array,
                    logits_fn: LogitsFn | None = None, apply_fn: ApplyFn | None = None,
                    params: Any = None, batch_size: int = 256) -> dict[str, Any]:
  """Per-position error of the denoiser's predictions under random masking.

  Each example draws t ~ U(0, 1) and masks each answer position with probability
  t (the forward process at alpha = 1 - t); the model predicts every masked
  position in one pass. Error = 1 - p(true token) (and, 'argmax', whether the most
  likely token is wrong), averaged per position over the examples that masked it.

  Returns {'per_position': float[L], 'per_position_argmax': float[L],
  'masked_count': int[L]} plus the task's own summary when it has
  `latent_obs_errors` (L&O-NAE-SAT: 'latent', 'obs' means).
  """
  from mdm_jax import masking  # pylint: disable=g-import-not-at-top
  if not isinstance(task, base.Task):
    raise ValueError(f"task must be a mdm_jax.data.base.Task, got {type(task).__name__}")
  _check_examples(examples)
  if (logits_fn is None) == (apply_fn is None):
    raise ValueError("give exactly one of logits_fn or apply_fn (with params)")
  batch_size = _check_int("batch_size", batch_size, 1)
  _check_key(key)
  mask_id = int(task.mdm_layout().mask_id)
  encoded = task.mdm_encode(examples)
  x0_NxL = np.asarray(encoded["tokens"], np.int32)
  maskable_NxL = np.asarray(encoded["maskable"], bool)

  def predict(params, x0_BxL, maskable_BxL, key):
    key_t, key_m = jax.random.split(key)
    t_B = jax.random.uniform(key_t, x0_BxL.shape[:1], minval=1e-3, maxval=1.0)
    xt_BxL, masked_BxL = masking.mask_tokens(key_m, x0_BxL, maskable_BxL, 1.0 - t_B,
                                             mask_id)
    fn = logits_fn if logits_fn is not None else functools.partial(apply_fn, params)
    logits_BxLxV = fn(xt_BxL).astype(jnp.float32)
    logits_BxLxV = logits_BxLxV.at[..., mask_id].set(-jnp.inf)
    return jax.nn.softmax(logits_BxLxV, axis=-1), masked_BxL

  predict_jit = jax.jit(predict)
  (probs_NxLxV, masked_NxL), _, _ = _run_batched(
      lambda x0, mk, k: predict_jit(params, x0, mk, k), (x0_NxL, maskable_NxL),
      batch_size=batch_size, key=key, shard=False)
  probs_NxLxV = probs_NxLxV.astype(np.float64)
  p_true = np.take_along_axis(probs_NxLxV, x0_NxL[..., None], axis=2)[..., 0]
  wrong = np.argmax(probs_NxLxV, axis=2) != x0_NxL
  count = masked_NxL.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    per = np.where(count > 0, np.where(masked_NxL, 1 - p_true, 0).sum(0) / count, np.nan)
    per_argmax = np.where(count > 0, np.where(masked_NxL, wrong, 0).sum(0) / count, np.nan)
  out: dict[str, Any] = {"per_position": per, "per_position_argmax": per_argmax,
                         "masked_count": count}
  summary_fn = getattr(task, "latent_obs_errors", None)
  if callable(summary_fn):
    summary = summary_fn(x0_NxL, probs_NxLxV, masked_NxL, kind="prob")
    argmax = summary_fn(x0_NxL, probs_NxLxV, masked_NxL, kind="argmax")
    out.update({k: v for k, v in summary.items() if k != "per_position"})
    out.update({f"{k}_argmax": v for k, v in argmax.items() if k != "per_position"})
  return out


# ----------------------------------------------------------------------------------
# Grids for the pictures.


def answer_grid(task: base.Task) -> tuple[int, int, np.ndarray, tuple[int, int] | None] | None:
  """`task.answer_grid()`, checked: (rows, cols, positions int[rows*cols], box or
  None), or None when the task's answer is not a grid."""
  grid = task.answer_grid()
  if grid is None:
    return None
  rows, cols, positions, box = grid
  positions = np.asarray(positions, int)
  if positions.shape != (int(rows) * int(cols),):
    raise ValueError(f"{type(task).__name__}.answer_grid(): {positions.shape[0]} positions "
                     f"for a {rows} x {cols} grid")
  return int(rows), int(cols), positions, box


def _make_plots(result: dict[str, Any], raw: Mapping[str, Mapping[str, StrategyResult]],
                task: base.Task, workdir: str, out_dir: str) -> list[str]:
  from mdm_jax import plots  # pylint: disable=g-import-not-at-top
  paths = []
  grid = answer_grid(task)
  for split, per_strategy in raw.items():
    ordered = {s: r for s, r in per_strategy.items() if r.order_NxL is not None}
    title_base = f"{task.name} '{split}'"
    label = functools.partial(method_label, result["objective"],
                              ordering=result.get("arm_ordering"),
                              decoding=arm_decoding(result))
    subtitles = {s: f"{label(s)}"
                    f"\nsolved {100 * r.solved:.1f}%" for s, r in per_strategy.items()}
    if grid is not None:
      rows, cols, positions, box = grid
      if ordered:
        grids = {s: plots.cell_mean(r.order_NxL + 1, r.order_NxL >= 0, (rows, cols),
                                    positions) for s, r in ordered.items()}
        paths.append(plots.plot_cell_heatmaps(
            grids, os.path.join(out_dir, f"{split}_decode_order.png"),
            title=f"{title_base}: mean step at which each cell was decoded "
                  "(grey: never generated)",
            colorbar_label="mean decoding step (1 = first)", box=box, cmap="viridis",
            subtitles=subtitles))
        paths.append(_example_orders_plot(result, ordered, task, split, grid, out_dir))
      errs = {}
      for s, r in per_strategy.items():
        errs[s] = plots.cell_mean(~r.correct_NxL, r.maskable_NxL, (rows, cols), positions)
      paths.append(plots.plot_cell_heatmaps(
          errs, os.path.join(out_dir, f"{split}_cell_errors.png"),
          title=f"{title_base}: error rate per cell (over the puzzles where it was blank)",
          colorbar_label="share of wrong answers", box=box, cmap="magma_r",
          vmin=0.0, fmt="{:.2f}", subtitles=subtitles))
    elif ordered:
      curves = {}
      for s, r in ordered.items():
        curves[method_label(result["objective"], s)] = plots.position_mean(
            r.order_NxL + 1, r.order_NxL >= 0)
      paths.append(plots.plot_position_curves(
          curves, os.path.join(out_dir, f"{split}_decode_order.png"),
          title=f"{title_base}: mean step at which each position was decoded",
          ylabel="mean decoding step (1 = first)", boundary=_latent_boundary(task)))
    sweep = result["splits"][split].get("sweep")
    if sweep:
      named = {method_label("mdm", s): {int(k): v for k, v in acc.items()}
               for s, acc in sweep["accuracy"].items()}
      paths.append(plots.plot_accuracy_vs_steps(
          named, os.path.join(out_dir, f"{split}_accuracy_vs_steps.png"),
          title=f"{title_base}: accuracy against sampling steps "
                f"({sweep['num_puzzles']} puzzles)"))
  pe = result.get("position_errors")
  if pe is not None:
    boundary = _latent_boundary(task)
    is_latent = np.arange(len(pe["per_position"])) < (boundary or 0)
    paths.append(plots.plot_position_error(
        np.asarray(pe["per_position"], float), is_latent,
        os.path.join(out_dir, "position_errors.png"),
        title=f"{task.name}: denoiser error per position under random masking",
        ylabel="1 - p(true token)"))
  if fileio.isfile(fileio.join(workdir, "metrics.jsonl")):
    try:
      paths.append(plots.plot_loss_curves(workdir, fileio.join(out_dir, "loss_curves.png")))
    except ValueError as e:
      print(f"note: no loss curves ({e})", file=sys.stderr)
    try:
      paths.append(plots.plot_solve_rate_vs_time(
          workdir, os.path.join(out_dir, "solve_rate_vs_time.png"),
          title=f"{task.name}: validation solve rate during training"))
    except ValueError:
      pass  # no periodic solve rate in this run
  return paths


def _example_orders_plot(result: Mapping[str, Any], ordered: Mapping[str, StrategyResult],
                         task: base.Task, split: str, grid: tuple[Any, ...],
                         out_dir: str, num: int = 3) -> str:
  """Three single puzzles: each decoder's order and the solver's, cell by cell."""
  from mdm_jax import plots  # pylint: disable=g-import-not-at-top
  rows, cols, positions, box = grid
  positions = np.asarray(positions)
  first = next(iter(ordered.values()))
  pick = np.arange(min(num, first.num_puzzles))
  tokens = first.tokens_NxL[pick][:, positions]
  givens = np.where(first.maskable_NxL[pick][:, positions], 0, tokens + 1)
  steps, subtitles = {}, {}
  for s, r in ordered.items():
    steps[s] = r.order_NxL[pick][:, positions]
    corr = r.corr_N[pick] if r.corr_N is not None else np.full(len(pick), np.nan)
    subtitles[s] = [f"{method_label(result['objective'], s)}, "
                    f"{'solved' if r.solved_N[i] else 'wrong'}"
                    + (f"\nrank corr. with solver {corr[n]:.2f}" if np.isfinite(corr[n])
                       else "") for n, i in enumerate(pick)]
  if first.solver_rank_NxL is not None:
    steps["solver"] = first.solver_rank_NxL[pick][:, positions]
    subtitles["solver"] = [f"the {task.name} solver's order"] * len(pick)
  return plots.plot_example_orders(
      givens, steps, os.path.join(out_dir, f"{split}_example_orders.png"),
      grid_shape=(rows, cols), box=box,
      title=f"{task.name} '{split}': decoding step of each cell in {len(pick)} puzzles "
            "(grey digits: clues; dark = early)", subtitles=subtitles)


def _latent_boundary(task: base.Task) -> int | None:
  k = getattr(task, "num_latents", None)
  return int(k) if isinstance(k, int) else None


# ----------------------------------------------------------------------------------
# Evaluation of a checkpoint.


def load_model(path: str, *, step: int | None = None, ema: bool | None = None
               ) -> tuple[Any, ml_collections.ConfigDict, base.Task, ApplyFn, int]:
  """`experiment.restore` as a tuple: (params, the run's config, its task,
  apply_fn(params, tokens) -> logits, number of parameters)."""
  r = experiment.restore(path, step=step, ema=ema)
  return r.params, r.config, r.task, r.apply_fn, r.num_params


def _dataset(config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict,
             task: base.Task, split: str) -> base.Examples:
  from mdm_jax.data import store  # pylint: disable=g-import-not-at-top
  task.validate_split(split)
  sizes = {"train": "num_train", "test": "num_test", "hard": "num_hard"}
  num = int(saved.data[sizes.get(split, "num_test")] or saved.data.num_test)
  data_dir = fileio.expand(str(config.data.dir))
  # As in training: a stored dataset keeps its shard size; a new one takes the run's
  # (0 or none saved: the task's preferred size).
  shard_size = int(saved.data.shard_size or 0) or None
  workers = store.default_workers(int(config.data.gen_workers or 0))
  path = store.ensure_dataset(task, split, num, int(saved.data.seed),
                              data_dir, shard_size=shard_size, keep_stored_shard_size=True,
                              progress=jax.process_index() == 0, workers=workers)
  return store.load_examples(path)


def _to_json(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_json(v) for v in x]
  if isinstance(x, np.ndarray):
    return _to_json(x.tolist())
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(float(x)) else None
  return x


def evaluate(config: ml_collections.ConfigDict | None, workdir: str, *,
             split: str | None = None, strategies: Sequence[str] | None = None,
             checkpoint: str | None = None, num_puzzles: int | None = None,
             plots: bool = True) -> dict[str, Any]:
  """Evaluates a trained checkpoint; writes `<workdir>/eval/results.{json,md}` + PNGs.

  The model, task, objective and data identity come from the checkpoint's saved
  config; sampler and evaluation settings (config.sampler.*, config.eval.*,
  config.data.dir) from `config` (None: the saved config's).

  Args:
    config: the experiment config (e.g. from main --config), or None.
    workdir: the run directory; results go to `<workdir>/eval/`.
    split: one split instead of config.eval.splits.
    strategies: instead of config.sampler.strategies (MDM checkpoints); ARM
      checkpoints always decode greedily in their training ordering.
    checkpoint: a checkpoint directory or workdir to load instead of `workdir`.
    num_puzzles: instead of config.eval.num_puzzles.
    plots: write the PNG pictures.

  Also read from config.eval: sweep_steps (default (5, 10, 25, 50); [] turns the
  num_steps sweep off), sweep_puzzles (default min(N, 1000)), error_puzzles (L&O
  per-position errors; default min(N, 1000)).

  Returns the results dict written to results.json.
  """
  workdir = fileio.normalize(workdir)
  # A given config is an experiment config: fields it lacks take the schema's defaults.
  user = None if config is None else config_schema.merge_saved(config)
  which = None if user is None else str(user.eval.params)
  if which not in (None, "ema", "raw"):
    raise ValueError(f"config.eval.params={which!r}; choose 'ema' or 'raw'")
  params, saved, task, apply_fn, num_params = load_model(
      checkpoint or workdir, ema=None if which is None else which == "ema")
  which = which or str(saved.eval.params)
  cfg = user if user is not None else saved
  if cfg.task.name != saved.task.name:
    raise ValueError(f"config.task.name={cfg.task.name!r} but the checkpoint was trained "
                     f"on {saved.task.name!r}; pass the run's own config")
  objective = str(saved.objective)
  out_dir = fileio.join(workdir, "eval")
  write = jax.process_index() == 0
  result: dict[str, Any] = {
      "workdir": workdir, "checkpoint": fileio.normalize(checkpoint or workdir),
      "step": experiment.saved_step(checkpoint or workdir), "objective": objective,
      "task": {"name": task.name, "params": task.params()},
      "model": {"preset": str(saved.model.preset)}, "num_params": num_params,
      "params": which,
      "splits": {},
  }
  if objective == "pi":
    print("pi-learner checkpoints are evaluated by their loss only (see "
          "plots.plot_pi_learners); writing the loss curves", flush=True)
    if write and plots:
      result["plots"] = _make_plots(result, {}, task, workdir, out_dir)
    return result

  if strategies is None:
    strategies = ((ARM_STRATEGY,) if objective == "arm" else
                  tuple(cfg.sampler.strategies))
  strategies = check_strategies(strategies)
  if objective == "arm" and strategies != (ARM_STRATEGY,):
    raise ValueError(f"an autoregressive checkpoint decodes with strategy "
                     f"{ARM_STRATEGY!r} only, got {list(strategies)}")
  if objective == "mdm" and ARM_STRATEGY in strategies:
    raise ValueError(f"strategy {ARM_STRATEGY!r} needs an autoregressive checkpoint; "
                     f"this one is a masked diffusion model")
  splits = [split] if split is not None else list(cfg.eval.splits)
  for s in splits:
    task.validate_split(s)
  n_want = num_puzzles if num_puzzles is not None else cfg.eval.num_puzzles
  n_want = _check_int("num_puzzles", n_want, 1)
  sampler_options = sampling.config_options(cfg.sampler)
  rule_mask = bool(cfg.eval.get("rule_mask", False))
  if objective == "mdm":
    _check_sampler_options(strategies, int(task.mdm_layout().mask_id), sampler_options)
    result["sampler"] = sampler_options
    result["rule_mask"] = rule_mask
    if rule_mask and task.rule_mask_fn() is None:
      raise ValueError(f"eval.rule_mask: task {task.name!r} has no rule mask")
  arm_ordering = str(saved.data.ordering or "") or None
  result["arm_ordering"] = arm_ordering if objective == "arm" else None
  arm_model = None
  arm_legal = bool(cfg.eval.get("arm_legal", True))
  arm_beam = _check_int("eval.arm_beam", cfg.eval.get("arm_beam", 1), 1)
  arm_pick = str(cfg.eval.get("arm_pick", "") or "")
  if objective == "arm":  # greedy (or beam) decoding with the model's key/value cache
    if arm_pick:
      _check_arm_pick(task, arm_pick, arm_beam)
    result["arm_legal"] = arm_legal
    result["arm_beam"] = arm_beam
    result["arm_pick"] = arm_pick
    arm_model = experiment.build_model(saved, task)[0]
  batch_size = _check_int("eval.batch_size", int(cfg.eval.batch_size), 1)
  key = jax.random.PRNGKey(int(cfg.eval.seed))
  sweep_steps = [int(s) for s in cfg.eval.sweep_steps]
  raw: dict[str, dict[str, StrategyResult]] = {}

  for split_name in splits:
    examples = _dataset(cfg, saved, task, split_name)
    n_all = _check_examples(examples)
    n = min(n_want, n_all)
    if n < n_want:
      print(f"note: split '{split_name}' holds {n_all} puzzles; evaluating {n}",
            flush=True)
    examples = {k: np.asarray(v[:n]) for k, v in examples.items()}
    print(f"{task.name} '{split_name}': {n} puzzles, {num_params:,} params", flush=True)
    per = evaluate_strategies(
        task, examples, key=key, apply_fn=apply_fn, params=params, strategies=strategies,
        batch_size=batch_size, arm_ordering=arm_ordering, arm_model=arm_model,
        arm_legal=arm_legal, arm_beam=arm_beam, arm_pick=arm_pick, verbose=True,
        **(dict(sampler_options, rule_mask=rule_mask) if objective == "mdm" else {}))
    raw[split_name] = per
    entry: dict[str, Any] = {"num_puzzles": n,
                             "strategies": {s: r.summary() for s, r in per.items()}}
    if objective == "mdm" and sweep_steps and split_name == splits[0]:
      m = min(n, int(cfg.eval.sweep_puzzles))
      sub = {k: v[:m] for k, v in examples.items()}
      acc: dict[str, dict[str, float]] = {s: {} for s in strategies}
      for steps in sweep_steps:
        opts = dict(sampler_options, num_steps=steps, rule_mask=rule_mask)
        swept = evaluate_strategies(task, sub, key=key, apply_fn=apply_fn, params=params,
                                    strategies=strategies, batch_size=batch_size, **opts)
        for s, r in swept.items():
          acc[s][str(steps)] = r.solved
      entry["sweep"] = {"num_puzzles": m, "accuracy": acc}
      print("  accuracy vs steps: " + "; ".join(
          f"{STRATEGY_LABELS[s]} " + " ".join(f"{k}:{100 * v:.1f}%" for k, v in a.items())
          for s, a in acc.items()), flush=True)
    result["splits"][split_name] = entry

  if objective == "mdm" and callable(getattr(task, "latent_obs_errors", None)):
    examples = _dataset(cfg, saved, task, splits[0])
    m = min(_check_examples(examples), int(cfg.eval.error_puzzles))
    pe = position_errors(task, {k: np.asarray(v[:m]) for k, v in examples.items()},
                         key=jax.random.fold_in(key, 1), apply_fn=apply_fn,
                         params=params, batch_size=batch_size)
    pe["num_puzzles"] = m
    result["position_errors"] = pe
    print(f"  denoiser error (1 - p(true)): latents {pe['latent']:.4f}, "
          f"observations {pe['obs']:.4f}", flush=True)

  if write:
    fileio.makedirs(out_dir)
    if plots:
      result["plots"] = _make_plots(result, raw, task, workdir, out_dir)
    result = _to_json(result)
    md = results_markdown(result)
    fileio.atomic_write_json(fileio.join(out_dir, "results.json"), result, indent=1,
                             sort_keys=False)
    fileio.atomic_write(fileio.join(out_dir, "results.md"), md + "\n")
    print(md, flush=True)
    print(f"wrote {out_dir}/results.json, results.md"
          + (f" and {len(result.get('plots', []))} pictures" if plots else ""), flush=True)
  else:
    result = _to_json(result)
  return result


# ----------------------------------------------------------------------------------
# --mode=sample.


def sample_and_print(config: ml_collections.ConfigDict, workdir: str, *, num: int = 4,
                     split: str = "test") -> dict[str, Any]:
  """Solves `num` held-out puzzles with the trained (EMA) model and prints them.

  MDM: each strategy of config.sampler.strategies; ARM / pi: greedy decoding in
  the model's order. Prints the puzzles (answer tokens) and whether each is solved.
  """
  if num < 1:
    raise ValueError(f"--num_samples must be >= 1, got {num}")
  from mdm_jax.data import store  # pylint: disable=g-import-not-at-top
  restored = experiment.restore(workdir, ema=True)
  params, saved, task, model = (restored.params, restored.config, restored.task,
                                restored.model)
  path = store.ensure_dataset(task, split, int(saved.data.num_test), int(saved.data.seed),
                              fileio.expand(config.data.dir),
                              progress=False)
  examples = {k: np.asarray(v[:num]) for k, v in store.load_examples(path).items()}
  if saved.objective not in ("mdm", "arm"):
    raise ValueError("--mode=sample needs an 'mdm' or 'arm' model; pi-learners only "
                     "have a loss")
  arm = saved.objective == "arm"
  scored = evaluate_strategies(
      task, examples, key=jax.random.PRNGKey(int(config.seed)),
      apply_fn=restored.apply_fn, params=params,
      strategies=(ARM_STRATEGY,) if arm else tuple(config.sampler.strategies),
      arm_ordering=str(saved.data.ordering) if arm else None, arm_model=model,
      arm_legal=bool(config.eval.get("arm_legal", True)),
      arm_beam=_check_int("eval.arm_beam", config.eval.get("arm_beam", 1), 1),
      arm_pick=str(config.eval.get("arm_pick", "") or "") if arm else "",
      rule_mask=bool(config.eval.get("rule_mask", False)) and not arm,
      batch_size=num, time_it=False, **experiment.sampler_options(config))
  for name, r in scored.items():
    print(f"== {name}: solved {r.num_solved}/{num}")
    for i in range(num):
      print(f"puzzle {i} {'solved' if r.solved_N[i] else 'FAILED'}: "
            f"{r.tokens_NxL[i].tolist()}")
  return {name: r.solved_N for name, r in scored.items()}


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m mdm_jax.evaluate table WORKDIR...`: one table over several runs."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m mdm_jax.evaluate",
      description="Combine evaluated runs (their eval/results.json) into one table.")
  sub = parser.add_subparsers(dest="what", required=True)
  p_table = sub.add_parser("table", help="print one markdown table over the runs")
  p_table.add_argument("workdirs", nargs="+")
  p_table.add_argument("--out", default=None, help="also write the table here")
  args = parser.parse_args(argv)
  results = []
  for w in args.workdirs:
    path = w if w.endswith(".json") else fileio.join(w, "eval", "results.json")
    try:
      results.append(fileio.read_json(path))
    except (OSError, ValueError) as e:
      print(f"error: cannot read {path} ({' '.join(str(e).split())}); run "
            "--mode=eval on that workdir first", file=sys.stderr)
      return 2
  md = combined_markdown(results)
  print(md)
  if args.out:
    fileio.atomic_write(args.out, md + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
