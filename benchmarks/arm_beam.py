r"""Greedy against beam-search decoding of a trained ARM: solved share by beam width.

  python benchmarks/arm_beam.py WORKDIR [--split test] [--num 500] [--widths 1,4,16]
      [--step S] [--batch 100]

Decodes the first `--num` puzzles of the run's `--split` (the data cache the run
used; made if missing) in the run's ordering, legal moves only, with the key/value
cache, once per width (1 = greedy; `sampling.ar_beam_cached`), and prints one line per
width: solved, cells right, puzzles/s, and the ratio of puzzles/s to greedy's.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from mdm_jax import config_schema
from mdm_jax import evaluate
from mdm_jax import experiment


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  p.add_argument("--split", default="test")
  p.add_argument("--num", type=int, default=500)
  p.add_argument("--widths", default="1,4,16")
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--batch", type=int, default=100)
  args = p.parse_args(argv)
  try:
    widths = [int(w) for w in args.widths.split(",")]
    if min(widths) < 1 or args.num < 1 or args.batch < 1:
      raise ValueError("--widths, --num and --batch must be integers >= 1")
    r = experiment.restore(args.workdir, step=args.step)
    if r.config.objective != "arm":
      raise ValueError(f"{args.workdir} is not an ARM run (objective "
                       f"{r.config.objective!r})")
    cfg = config_schema.merge_saved(r.config)
    examples = evaluate._dataset(cfg, r.config, r.task, args.split)  # pylint: disable=protected-access
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  n = min(args.num, len(next(iter(examples.values()))))
  examples = {k: np.asarray(v[:n]) for k, v in examples.items()}
  ordering = str(r.config.data.ordering)
  print(f"{args.workdir} ({ordering} order, {r.num_params:,} params): {n} "
        f"'{args.split}' puzzles", flush=True)
  base = None
  for width in widths:
    t0 = time.perf_counter()
    res = evaluate.evaluate_strategies(
        r.task, examples, key=jax.random.PRNGKey(0), apply_fn=r.apply_fn,
        params=r.params, strategies=(evaluate.ARM_STRATEGY,), batch_size=args.batch,
        arm_ordering=ordering, arm_model=r.model, arm_beam=width,
        time_it=False)[evaluate.ARM_STRATEGY]
    rate = n / (time.perf_counter() - t0)
    base = rate if base is None else base
    print(f"beam {width:3d}: solved {100 * res.solved:6.2f}%  cells "
          f"{100 * res.cell_accuracy:6.2f}%  {rate:7.1f} puzzles/s (x{rate / base:.2f} "
          f"of the first width, compile included)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
