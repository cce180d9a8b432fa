"""Training throughput and model FLOPs utilisation of the real jitted train step.

  .venv/bin/python benchmarks/train.py                       # 6M Sudoku MDM, batch 128
  .venv/bin/python benchmarks/train.py --grad_accum=16,8,1 --batch_chunks=0 --rounds=5

Times `mdm_jax.train`'s one jitted step (masking, forward, backward, AdamW with
clipping, EMA, NaN guard; state donated) for `configs/sudoku_mdm.py:paper` on
synthetic Sudoku-shaped batches (81 tokens, vocab 10, all answer cells maskable).
Variants: config.train.grad_accum (16 = micro-batches of 8 sequences, forward and
backward of each in cache: the CPU setting) x TransformerConfig.batch_chunk.
MFU = 3 x transformer.flops_per_token x tokens/s over a float32 matmul peak measured
in the same run (benchmarks/common.py): each round times peak, steps, peak, and
the steps are compared with the mean of the two peaks.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import block, matmul_peak_gflops  # noqa: E402
from mdm_jax import experiment  # noqa: E402
from mdm_jax import sharding  # noqa: E402
from mdm_jax import train  # noqa: E402
from mdm_jax.models import transformer as tfm  # noqa: E402

_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="sudoku_mdm.py:paper",
                 help="configs/<file>:<preset> to benchmark")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--grad_accum", default="16,1",
                 help="config.train.grad_accum values to time (micro-batches per step)")
  p.add_argument("--batch_chunks", default="0",
                 help="TransformerConfig.batch_chunk values to time (0 = whole batch, -1 = auto)")
  p.add_argument("--dropout", type=float, default=None,
                 help="override the preset's dropout (gpt2-6m: 0.1)")
  p.add_argument("--steps", type=int, default=5, help="train steps per timing")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--clock", default="wall", choices=sorted(_CLOCKS))
  args = p.parse_args(argv)
  if min(args.batch, args.steps, args.rounds) <= 0:
    p.error("batch, steps and rounds must be positive")
  args.batch_chunks = [int(c) for c in args.batch_chunks.split(",")]
  args.grad_accum = [int(a) for a in args.grad_accum.split(",")]
  if any(args.batch % a for a in args.grad_accum):
    p.error(f"--batch={args.batch} must be divisible by every --grad_accum value")
  return args


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(
      "bench_config", os.path.join(ROOT, "configs", path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main(argv=None) -> None:
  args = parse_args(argv)
  rng = np.random.default_rng(0)
  variants = {}
  for accum, chunk in [(a, c) for a in args.grad_accum for c in args.batch_chunks]:
    config = load_config(args.config)
    config.train.batch_size = args.batch
    config.train.grad_accum = accum
    config.model.dtype = args.dtype
    config.model.overrides.batch_chunk = chunk
    if args.dropout is not None:
      config.model.overrides.dropout = args.dropout
    config.train.warmup_steps = 10
    run = train.setup(config)
    layout = experiment.layout(config, run.task)
    if config.objective == "arm":
      batch = {"tokens": rng.integers(0, layout.vocab_size, (args.batch, layout.seq_len)),
               "loss_mask": np.ones((args.batch, layout.seq_len), bool)}
    else:
      batch = {"tokens": rng.integers(0, layout.mask_id, (args.batch, layout.seq_len)),
               "maskable": np.ones((args.batch, layout.seq_len), bool)}
    batch = sharding.global_batch({k: np.asarray(v, np.int32 if k == "tokens" else bool)
                                   for k, v in batch.items()}, run.mesh)
    state = run.init_state()
    step = run.jit_train_step()
    state, _ = step(state, batch)  # compile
    block(state)
    tokens = args.batch * layout.seq_len
    flops = 3 * tfm.flops_per_token(run.model_config) * tokens
    variants[f"accum={accum},chunk={chunk}"] = {"step": step, "state": state, "batch": batch,
                                  "flops": flops, "tokens": tokens}
  cfg = run.model_config
  print(f"{args.config} ({config.objective}): {cfg.num_layers}x{cfg.d_model} "
        f"{tfm.count_params(state['params']) / 1e6:.2f}M params, batch {args.batch} x "
        f"{cfg.seq_len} tokens, {args.dtype}, {jax.device_count()} {jax.default_backend()} "
        f"device(s), {os.cpu_count()} cores, {args.clock} clock")

  now = _CLOCKS[args.clock]
  results = {name: [] for name in variants}
  for r in range(args.rounds):
    line = [f"round {r}:"]
    for name, v in variants.items():
      t0 = now()
      v["state"], m = v["step"](v["state"], v["batch"])
      block(v["state"])
      one = now() - t0
      peak_kw = dict(repeats=1, clock=args.clock, min_seconds=max(one * args.steps / 2, 0.02))
      peak_before = matmul_peak_gflops(**peak_kw)
      t0 = now()
      for _ in range(args.steps):
        v["state"], m = v["step"](v["state"], v["batch"])
      block(v["state"])
      seconds = (now() - t0) / args.steps
      peak = (peak_before + matmul_peak_gflops(**peak_kw)) / 2
      gflops = v["flops"] / seconds / 1e9
      mfu = gflops / peak
      results[name].append((mfu, v["tokens"] / seconds, seconds))
      line.append(f"{name} {seconds * 1e3:7.1f} ms/step {v['tokens'] / seconds:9.0f} tok/s "
                  f"{gflops:6.1f} GFLOP/s peak {peak:6.1f} MFU {mfu:.3f} "
                  f"(loss {float(m['train/loss']):.3f})")
    print(" | ".join(line), flush=True)
  print("MFU = 3 x forward matmul FLOPs/token x tokens/s / float32 matmul peak (same run)")
  for name, rs in results.items():
    mfus = [x[0] for x in rs]
    print(f"{name}: MFU median {statistics.median(mfus):.3f} range [{min(mfus):.3f}, "
          f"{max(mfus):.3f}], tokens/s median {statistics.median(x[1] for x in rs):.0f} "
          f"over {len(rs)} rounds")


if __name__ == "__main__":
  main()
