r"""Adaptive-compute decoding against fixed-step margin on a trained Sudoku MDM.

  .venv/bin/python benchmarks/adaptive.py                      # the packaged 9x9 model
  .venv/bin/python benchmarks/adaptive.py --checkpoint=runs/cpu9 --num=500

On held-out puzzles (the task's 'test' split, generated or cached like training's),
decodes with `margin` on the fixed 50-step schedule, then with each adaptive k_mode
(threshold tau, Fast-dLLM factor f, EB-sampler entropy budget gamma) over a sweep,
all ordered by margin, in the same run. The adaptive settings stream the puzzles
through --slots slots (`sampling.sample(slots=...)`, continuous batching: a slot whose
puzzle is done takes the next one, so the forward passes run on busy rows instead of
waiting for each batch's slowest puzzle); the fixed schedule runs as plain batches of
--batch. Prints accuracy, mean NFE (forward passes per puzzle) and puzzles/s per
setting, draws accuracy against mean NFE (--plot), and ends with `puzzles/s ratio R at
accuracy difference D points` for the fastest setting whose accuracy is within 1 point
of fixed-step margin. --slots=0 decodes the adaptive settings in plain batches too.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mdm_jax import evaluate  # noqa: E402
from mdm_jax import solve  # noqa: E402
from mdm_jax.data import store  # noqa: E402

SWEEP = ([("threshold", dict(threshold=t)) for t in (0.7, 0.9, 0.97, 0.99)]
         + [("factor", dict(factor=f)) for f in (0.5, 1.0, 2.0)]
         + [("entropy_bounded", dict(entropy_budget=g)) for g in (0.05, 0.2, 0.5, 1.0)])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", default=None, help="a workdir or export (default: the "
                 "packaged 9x9 model)")
  p.add_argument("--num", type=int, default=200, help="held-out puzzles")
  p.add_argument("--batch", type=int, default=200)
  p.add_argument("--slots", type=int, default=100, help="streaming slots for the "
                 "adaptive settings (0: plain batches of --batch)")
  p.add_argument("--plot", default=None, help="PNG path for accuracy vs mean NFE")
  p.add_argument("--data_dir", default=os.environ.get("MDM_JAX_DATA", "~/.cache/mdm_jax"))
  args = p.parse_args(argv)
  try:
    params, saved, task, apply_fn = solve._load(  # pylint: disable=protected-access
        args.checkpoint or solve.pretrained_path(9))
  except solve.SolveError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  path = store.ensure_dataset(task, "test", max(args.num, int(saved.data.num_test)),
                              int(saved.data.seed), os.path.expanduser(args.data_dir),
                              keep_stored_shard_size=True, progress=True)
  examples = {k: np.asarray(v)[:args.num] for k, v in store.load_examples(path).items()}
  key = jax.random.key(0)

  def run(k_mode="deterministic", slots=0, **opts):
    r = evaluate.evaluate_strategies(task, examples, key=key, apply_fn=apply_fn,
                                     params=params, strategies=("margin",),
                                     batch_size=args.batch, num_steps=50, k_mode=k_mode,
                                     slots=slots, **opts)["margin"]
    return 100.0 * r.solved, r.mean_nfe, r.puzzles_per_sec

  base_acc, base_nfe, base_pps = run()
  print(f"{args.num} held-out puzzles, margin order; adaptive settings "
        + (f"streamed through {args.slots} slots" if args.slots else
           f"in batches of {args.batch}"))
  print("| k_mode | setting | accuracy | mean NFE | puzzles/s |\n|---|---|---:|---:|---:|")
  print(f"| fixed 50 steps | | {base_acc:.1f}% | {base_nfe:.1f} | {base_pps:.1f} |")
  rows = []
  for k_mode, opts in SWEEP:
    acc, nfe, pps = run(k_mode, slots=args.slots, **opts)
    rows.append((k_mode, opts, acc, nfe, pps))
    setting = ", ".join(f"{k}={v}" for k, v in opts.items())
    print(f"| {k_mode} | {setting} | {acc:.1f}% | {nfe:.1f} | {pps:.1f} |", flush=True)
  if args.plot:
    from mdm_jax import plots  # pylint: disable=g-import-not-at-top
    fig, ax = plots.plt.subplots(figsize=(6, 4))
    for k_mode in dict.fromkeys(r[0] for r in rows):
      pts = sorted((r[3], r[2]) for r in rows if r[0] == k_mode)
      ax.plot(*zip(*pts), marker="o", label=k_mode)
    ax.scatter([base_nfe], [base_acc], marker="*", s=120, color="k", label="fixed 50 steps")
    ax.set_xlabel("mean NFE (forward passes per puzzle)")
    ax.set_ylabel("puzzles solved (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(args.plot, dpi=120, bbox_inches="tight")
    print(f"wrote {args.plot}")
  ok = [r for r in rows if r[2] >= base_acc - 1.0]
  if not ok:
    print("no adaptive setting within 1 point of fixed-step margin")
    return 1
  best = max(ok, key=lambda r: r[4])
  print(f"best: {best[0]} {best[1]}")
  print(f"puzzles/s ratio {best[4] / base_pps:.2f} at accuracy difference "
        f"{best[2] - base_acc:+.1f} points")
  return 0


if __name__ == "__main__":
  sys.exit(main())
