"""Greedy ARM decoding: key/value cache vs full recompute, at equal outputs.

  .venv/bin/python benchmarks/ar_decode.py               # tiny causal preset, batch 64
  .venv/bin/python benchmarks/ar_decode.py --preset=gpt2-6m --rounds=1   # heavier

The Sudoku ARM layout (data/sudoku.py arm_encode): 81 cells as (row, col, value)
triples = 243 tokens, vocabulary 11; the prompt is the givens' triples (a random
number of givens per puzzle, 3 tokens each), the rest is decoded greedily. Both
decoders run the same causal model and parameters on the same batch:
`sampling.ar_greedy` (one full forward over all 243 positions per decoded position,
the reference) and `sampling.ar_greedy_cached` (one causal pass to fill the cache,
then one single-token step per position). Their outputs are asserted equal; the
printed ratio is seconds(full) / seconds(cached) measured in the same round (goal
>= 10x). The full forward uses the model's default inference chunking
(TransformerConfig.batch_chunk = auto), i.e. its fastest CPU setting.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import time_fn  # noqa: E402
from mdm_jax import sampling  # noqa: E402
from mdm_jax.models import transformer as tfm  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="tiny", help="a models.transformer preset (made "
                 "causal, no dropout)")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--n", type=int, default=9, help="Sudoku size: L = 3 n^2, V = n + 2")
  p.add_argument("--min_givens", type=int, default=25)
  p.add_argument("--max_givens", type=int, default=45)
  p.add_argument("--rounds", type=int, default=1)
  p.add_argument("--repeats", type=int, default=3, help="best-of repeats of the cached "
                 "decoder per round (the full one runs once per round)")
  args = p.parse_args(argv)
  for name in ("batch", "n", "rounds", "repeats"):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be positive")
  if not 1 <= args.min_givens <= args.max_givens <= args.n ** 2:
    p.error("need 1 <= --min_givens <= --max_givens <= n^2")
  return args


def sudoku_arm_prompts(batch: int, n: int, min_givens: int, max_givens: int,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32[B, 3 n^2], prompt_len int32[B]) laid out as arm_encode does: the
  givens' (row, col, value) triples first; the answer positions are blank (0)."""
  rng = np.random.default_rng(seed)
  cells = np.argsort(rng.random((batch, n * n)), axis=1)
  values = rng.integers(1, n + 1, size=(batch, n * n))
  tokens = np.stack([cells // n, cells % n, values], -1).reshape(batch, -1)
  prompt_len = 3 * rng.integers(min_givens, max_givens + 1, size=batch)
  tokens = np.where(np.arange(tokens.shape[1])[None] < prompt_len[:, None], tokens, 0)
  return tokens.astype(np.int32), prompt_len.astype(np.int32)


def main(argv=None) -> None:
  args = parse_args(argv)
  length, vocab = 3 * args.n ** 2, args.n + 2
  config = tfm.preset(args.preset, vocab_size=vocab, seq_len=length, causal=True,
                      dropout=0.0)
  model = tfm.Transformer(config)
  tokens, prompt_len = sudoku_arm_prompts(args.batch, args.n, args.min_givens,
                                          args.max_givens)
  params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(tokens[:1]))["params"]
  full = jax.jit(lambda p, t, n: sampling.ar_greedy(
      lambda x: model.apply({"params": p}, x), t, n))
  cached = jax.jit(lambda p, t, n: sampling.ar_greedy_cached(model, p, t, n))
  tokens, prompt_len = jnp.asarray(tokens), jnp.asarray(prompt_len)
  decoded = int(jnp.sum(length - prompt_len))
  steps = length - int(jnp.min(prompt_len))
  print(f"{args.preset} (causal): {tfm.count_params(params) / 1e6:.3f}M params, batch "
        f"{args.batch} x {length} tokens, vocab {vocab}, prompts {int(jnp.min(prompt_len))}"
        f"..{int(jnp.max(prompt_len))} tokens, {steps} decoding steps, batch_chunk "
        f"{tfm.inference_batch_chunk(config, args.batch, length)} (auto), "
        f"{jax.default_backend()} x{os.cpu_count()} cores", flush=True)
  want = np.asarray(jax.block_until_ready(full(params, tokens, prompt_len)))  # compiles
  got = np.asarray(jax.block_until_ready(cached(params, tokens, prompt_len)))
  np.testing.assert_array_equal(got, want)  # token for token
  print(f"outputs equal: {decoded} decoded tokens", flush=True)

  ratios = []
  for r in range(args.rounds):
    full_s = time_fn(full, params, tokens, prompt_len, repeats=1, warmup=0)
    cached_s = time_fn(cached, params, tokens, prompt_len, repeats=args.repeats, warmup=0)
    ratios.append(full_s / cached_s)
    print(f"round {r}: full recompute {full_s:7.2f} s ({full_s / steps * 1e3:7.1f} ms/step)"
          f" | cached {cached_s:6.3f} s ({cached_s / steps * 1e3:6.2f} ms/step) | "
          f"speed-up {ratios[-1]:.1f}x", flush=True)
  print(f"KV-cached greedy decoding vs full recompute, equal outputs: speed-up "
        f"{statistics.median(ratios):.1f}x median over {len(ratios)} round(s) (best "
        f"{max(ratios):.1f}x; goal >= 10x)")


if __name__ == "__main__":
  main()
