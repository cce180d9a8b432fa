"""Forward-pass speed of a transformer preset as a fraction of float32 matmul peak.

  .venv/bin/python benchmarks/forward.py                    # 6M preset, batch 128
  .venv/bin/python benchmarks/forward.py --batch_chunks=0,8 --rounds=5 --train

Model GFLOP/s = flops_per_token(config) * batch * seq_len / seconds, i.e. only the
network's matmuls (projections, attention scores and values, MLP, head) count. The
peak is the best float32 GFLOP/s of square jitted matmuls (benchmarks/common.py).
Each round times, for every variant, the peak, the model and the peak again (each
peak timing lasting about as long as a model call), so that the model is compared
with a peak measured under the same load; the summary gives the median and range
of these ratios over rounds, and also best model / best peak over the whole run.
With --train, also times one jitted forward+backward (gradient of a sum of the
logits) and counts it as 3x the forward matmul FLOPs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import matmul_peak_gflops, time_fn  # noqa: E402
from mdm_jax.models import transformer as tfm  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="gpt2-6m")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--seq_len", type=int, default=81)
  p.add_argument("--vocab", type=int, default=10)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--batch_chunks", default="8,0",
                 help="comma-separated TransformerConfig.batch_chunk values to time "
                      "(0 = the whole batch at once, -1 = auto); the first is the headline")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3, help="best-of repeats per timing")
  p.add_argument("--train", action="store_true", help="also time forward+backward")
  p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                 help="wall: elapsed seconds; cpu: CPU seconds of this process (less "
                      "sensitive to other processes sharing the cores)")
  args = p.parse_args(argv)
  if args.batch <= 0 or args.seq_len <= 0 or args.vocab <= 0 or args.rounds <= 0:
    p.error("batch, seq_len, vocab and rounds must be positive")
  try:
    args.batch_chunks = [int(c) for c in args.batch_chunks.split(",")]
  except ValueError:
    p.error(f"--batch_chunks must be comma-separated ints, got {args.batch_chunks!r}")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq_len), 0,
                              args.vocab)
  variants = {}
  for chunk in args.batch_chunks:
    config = tfm.preset(args.preset, vocab_size=args.vocab, seq_len=args.seq_len,
                        dtype=args.dtype, batch_chunk=chunk)
    model = tfm.Transformer(config)
    params = model.init(jax.random.key(0), tokens[:1])
    flops = tfm.flops_per_token(config) * args.batch * args.seq_len
    fwd = jax.jit(lambda p, t, m=model: m.apply(p, t))
    variants[f"forward chunk={chunk}"] = (fwd, params, flops)
    if args.train:
      grad = jax.jit(jax.grad(lambda p, t, m=model: jnp.sum(m.apply(p, t))))
      variants[f"fwd+bwd chunk={chunk}"] = (grad, params, 3 * flops)
  n_params = tfm.count_params(params["params"])
  print(f"{args.preset}: {n_params / 1e6:.3f}M params, "
        f"{tfm.flops_per_token(config) / 1e6:.3f} MFLOP/token, batch {args.batch} x "
        f"{args.seq_len} tokens, vocab {args.vocab}, {args.dtype}, "
        f"{jax.default_backend()} x{os.cpu_count()} cores")
  for fn, params, _ in variants.values():  # compile outside the timed rounds
    jax.block_until_ready(fn(params, tokens))

  ratios = {name: [] for name in variants}
  best_gflops = {name: 0.0 for name in variants}
  best_peak = 0.0
  for r in range(args.rounds):
    line = [f"round {r}:"]
    for name, (fn, params, flops) in variants.items():
      # peak, model, peak: each lasting about as long as one model call, so that
      # the model is compared with the peak under the same load.
      one = time_fn(fn, params, tokens, repeats=1, warmup=0)
      peak_kw = dict(repeats=1, clock=args.clock, min_seconds=one / 2)
      peak_before = matmul_peak_gflops(**peak_kw)
      seconds = time_fn(fn, params, tokens, repeats=args.repeats, warmup=0,
                        clock=args.clock)
      peak = (peak_before + matmul_peak_gflops(**peak_kw)) / 2
      gflops = flops / seconds / 1e9
      ratios[name].append(gflops / peak)
      best_gflops[name] = max(best_gflops[name], gflops)
      best_peak = max(best_peak, peak)
      line.append(f"{name} {seconds * 1e3:7.1f} ms {gflops:6.1f} GFLOP/s, "
                  f"peak {peak:6.1f}: ratio {gflops / peak:.3f}")
    print(" | ".join(line), flush=True)
  print(f"ratio = model GFLOP/s / float32 matmul peak GFLOP/s ({args.clock} clock)")
  for name, rs in ratios.items():
    print(f"{name}: ratio median {statistics.median(rs):.3f}  range "
          f"[{min(rs):.3f}, {max(rs):.3f}] over {len(rs)} rounds;  best model / best "
          f"peak {best_gflops[name]:.1f} / {best_peak:.1f} = "
          f"{best_gflops[name] / best_peak:.3f}")

if __name__ == "__main__":
  main()
