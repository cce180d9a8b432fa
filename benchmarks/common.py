"""Shared benchmark helpers: wall-clock timing, a float32 matmul peak, and loading a
trained run for the diagnostic probes.

Every benchmark reports a ratio against a peak measured in the same run, so that the
numbers are comparable on a shared, noisy machine. Typical use:

  peak = matmul_peak_gflops()
  seconds = time_fn(jitted_fn, *args, repeats=5)
  print(f"ratio {flops / seconds / 1e9 / peak:.3f}")
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Square matmul sizes for the peak: the 6M model's largest matmuls are
# [B*L=10368, 384] x [384, 1536]; square float32 matmuls of 512..1024 run at the
# same per-core speed on CPU and take milliseconds, so several repeats are cheap.
DEFAULT_PEAK_SIZES: tuple[int, ...] = (768, 1024)


def block(x: Any) -> Any:
  """Waits until every array in the pytree `x` is computed."""
  return jax.tree_util.tree_map(
      lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_fn(fn: Callable[..., Any], *args: Any, repeats: int = 5,
            warmup: int = 1, inner: int = 1, clock: str = "wall") -> float:
  """Best-of-`repeats` seconds of one call `fn(*args)`.

  `fn` is called `warmup` times first (compilation), then `repeats` times `inner`
  back-to-back calls are timed (result blocked on); the minimum per-call time over
  repeats is returned. The minimum is the right statistic on a shared machine:
  interference from other processes only ever adds time.

  clock: 'wall' (time.perf_counter) or 'cpu' (time.process_time: CPU seconds of all
  this process's threads; much less sensitive to other processes competing for the
  cores, but counts every core used, so compare it only with another 'cpu' timing).
  """
  if repeats < 1 or inner < 1:
    raise ValueError(f"repeats and inner must be >= 1, got {repeats}, {inner}")
  if clock not in _CLOCKS:
    raise ValueError(f"clock must be one of {sorted(_CLOCKS)}, got {clock!r}")
  now = _CLOCKS[clock]
  for _ in range(warmup):
    block(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = now()
    out = None
    for _ in range(inner):
      out = fn(*args)
    block(out)
    best = min(best, (now() - start) / inner)
  return best


def matmul_peak_gflops(sizes: Sequence[int] = DEFAULT_PEAK_SIZES, *,
                       repeats: int = 7, dtype: Any = jnp.float32,
                       seed: int = 0, clock: str = "wall",
                       min_seconds: float = 0.02) -> float:
  """Best float32 GFLOP/s of jitted square matmuls `a @ b` (n x n) over `sizes`.

  Each size is timed `repeats` times (best-of); calls are batched (`inner`) so that
  each timing lasts at least `min_seconds` and dispatch overhead does not count
  (a longer `min_seconds` averages over the same load as a long measurement it is
  compared with). With clock='cpu' the result is GFLOP per CPU-second (`time_fn`).
  """
  if not sizes or any(n <= 0 for n in sizes):
    raise ValueError(f"sizes must be positive ints, got {sizes}")
  if min_seconds <= 0:
    raise ValueError(f"min_seconds must be > 0, got {min_seconds}")
  rng = np.random.default_rng(seed)
  matmul = jax.jit(jnp.matmul)
  best = 0.0
  for n in sizes:
    a = jnp.asarray(rng.standard_normal((n, n)), dtype)
    b = jnp.asarray(rng.standard_normal((n, n)), dtype)
    flops = 2.0 * n ** 3
    one = time_fn(matmul, a, b, repeats=1, warmup=1)
    inner = max(1, math.ceil(min_seconds / max(one, 1e-6)))
    seconds = time_fn(matmul, a, b, repeats=repeats, warmup=0, inner=inner,
                      clock=clock)
    best = max(best, flops / seconds / 1e9)
  return best


def load_run(workdir: str, task_name: str, step: int | None = None) -> tuple[Any, Any, Any]:
  """(params, task, apply_fn) of a trained run of `task_name`; ValueError naming the
  problem for a missing run or step, or a run of another task."""
  from mdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  params, _, task, apply_fn, _ = evaluate.load_model(workdir, step=step)
  if task.name != task_name:
    raise ValueError(f"{workdir} is a {task.name} run, not {task_name}")
  return params, task, apply_fn


def probe_parser(description: str) -> Any:
  """The probes' arguments: WORKDIR, --num held-out examples, --seed, --step."""
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=description)
  p.add_argument("workdir")
  p.add_argument("--num", type=int, default=1000)
  p.add_argument("--seed", type=int, default=123)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  return p
