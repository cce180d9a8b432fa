"""Adaptive sampler overhead: S sampler steps vs S bare forward passes of the model.

  .venv/bin/python benchmarks/sampler.py                 # gpt2-6m, batch 256, 50 steps
  .venv/bin/python benchmarks/sampler.py --batch=64 --rounds=2   # quicker

ratio = seconds(make_sampler(margin, gumbel 0.5, S steps)) / (S * seconds(jit forward))
on the same model, params and batch (every answer position masked, and S chosen so
that the loop really runs all S steps; checked). 1.00 means the per-step work of the
sampler (scores, Gumbel noise, exact top-K selection, writes) is free; the goal is
<= 1.10. Each round times S back-to-back forward calls and then one sampler call, so
that both last equally long and share the machine's load; the summary prints the
range over rounds (best is the most representative on a shared machine). For a
low-noise view of the same overhead, the sampler is also timed with a free "model"
(a fixed function of the tokens, no matmuls): its time per step over the forward's
time is printed as `overhead`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import time_fn  # noqa: E402
from mdm_jax import sampling  # noqa: E402
from mdm_jax.models import transformer as tfm  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="gpt2-6m")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--seq_len", type=int, default=81)
  p.add_argument("--vocab", type=int, default=10, help="including MASK (= vocab - 1)")
  p.add_argument("--num_steps", type=int, default=50)
  p.add_argument("--strategy", default="margin", choices=sampling.STRATEGIES)
  p.add_argument("--gumbel", type=float, default=0.5)
  p.add_argument("--batch_chunk", type=int, default=0,
                 help="TransformerConfig.batch_chunk (0 = whole batch at once, -1 = auto)")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3,
                 help="best-of repeats of the free-model sampler")
  args = p.parse_args(argv)
  for name in ("batch", "seq_len", "vocab", "num_steps", "rounds", "repeats"):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be positive")
  if args.vocab < 2:
    p.error("--vocab must be >= 2 (tokens plus MASK)")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  mask_id = args.vocab - 1
  config = tfm.preset(args.preset, vocab_size=args.vocab, seq_len=args.seq_len,
                      batch_chunk=args.batch_chunk)
  model = tfm.Transformer(config)
  tokens_BxL = jnp.full((args.batch, args.seq_len), mask_id, jnp.int32)
  params = model.init(jax.random.key(0), tokens_BxL[:1])
  apply_fn = lambda p, t: model.apply(p, t)  # noqa: E731

  forward = jax.jit(apply_fn)
  sampler = sampling.make_sampler(apply_fn, mask_id=mask_id, strategy=args.strategy,
                                  num_steps=args.num_steps, gumbel=args.gumbel)
  bias_LxV = jax.random.normal(jax.random.key(2), (args.seq_len, args.vocab))
  free_sampler = sampling.make_sampler(
      lambda p, t: jax.nn.one_hot(t, args.vocab) * p + bias_LxV, mask_id=mask_id,
      strategy=args.strategy, num_steps=args.num_steps, gumbel=args.gumbel)
  key = jax.random.key(1)
  print(f"{args.preset}: {tfm.count_params(params['params']) / 1e6:.3f}M params, batch "
        f"{args.batch} x {args.seq_len}, vocab {args.vocab}, {args.strategy} gumbel "
        f"{args.gumbel}, {args.num_steps} steps, {jax.default_backend()} x"
        f"{os.cpu_count()} cores", flush=True)
  out = jax.block_until_ready(sampler(params, tokens_BxL, key))  # compiles
  jax.block_until_ready(forward(params, tokens_BxL))
  jax.block_until_ready(free_sampler(jnp.float32(1.0), tokens_BxL, key))
  steps = int(jnp.max(out.steps))
  if steps != args.num_steps or bool(jnp.any(out.tokens == mask_id)):
    raise SystemExit(f"the sampler ran {steps} steps, not {args.num_steps}: choose "
                     "--num_steps <= seq_len so that every step has work")

  ratios, overheads = [], []
  for r in range(args.rounds):
    fwd_s = time_fn(forward, params, tokens_BxL, repeats=1, warmup=0, inner=steps)
    smp_s = time_fn(sampler, params, tokens_BxL, key, repeats=1, warmup=0)
    free_s = time_fn(free_sampler, jnp.float32(1.0), tokens_BxL, key,
                     repeats=args.repeats, warmup=0)
    ratios.append(smp_s / (steps * fwd_s))
    overheads.append(free_s / (steps * fwd_s))
    print(f"round {r}: forward {fwd_s * 1e3:8.1f} ms (mean of {steps}) | sampler "
          f"{smp_s:7.2f} s = {smp_s / steps * 1e3:8.1f} ms/step | ratio "
          f"{ratios[-1]:.3f} | free-model sampler {free_s / steps * 1e3:6.2f} ms/step, "
          f"overhead {overheads[-1]:.4f}",
          flush=True)
  print(f"sampler time / ({steps} x forward): best {min(ratios):.3f}  median "
        f"{statistics.median(ratios):.3f}  worst {max(ratios):.3f}  ({len(ratios)} "
        f"rounds; goal <= 1.10); per-step overhead alone: median "
        f"{statistics.median(overheads):.4f} of a forward")


if __name__ == "__main__":
  main()
