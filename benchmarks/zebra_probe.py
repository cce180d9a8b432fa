r"""Does a Zebra MDM read the clues? A teacher-forced probe (a diagnostic).

  python benchmarks/zebra_probe.py WORKDIR [--num 1000] [--step S]

For held-out puzzles it masks a share of the answer cells and measures the
denoiser's argmax error on them twice: with the clues, and with every clue slot
blanked to PAD (the sizes and the visible cells kept). A model that only learned
that each attribute is a permutation of the houses (one value per house) scores
the same both ways; one that reads the clues is much better with them, most of all
when every cell is masked (without clues the best possible error there is 1 - 1/H).
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import load_run, probe_parser  # noqa: E402


def main(argv=None) -> int:
  p = probe_parser(__doc__.splitlines()[0])
  args = p.parse_args(argv)
  try:
    params, task, apply_fn = load_run(args.workdir, "zebra", step=args.step)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  examples = task.generate("test", args.num, args.seed)
  enc = task.mdm_encode(examples)
  x0_NxL, answer_NxL = np.asarray(enc["tokens"], np.int32), enc["maskable"]
  mask_id, pad = int(task.mdm_layout().mask_id), int(task.vocab.pad)
  sep_pos = int(np.argmax(x0_NxL[0] == task.vocab.sep))  # [sizes (2), clue slots, SEP]
  clue_L = (np.arange(x0_NxL.shape[1]) >= 2) & (np.arange(x0_NxL.shape[1]) < sep_pos)
  logits = jax.jit(lambda x: apply_fn(params, x).astype(jnp.float32))
  rng = np.random.default_rng(args.seed)

  def error(x_NxL, scored_NxL):
    pred = np.concatenate([np.asarray(logits(jnp.asarray(x_NxL[i:i + 250]))).argmax(-1)
                           for i in range(0, len(x_NxL), 250)])
    return float((pred != x0_NxL)[scored_NxL].mean())

  houses = np.asarray(examples["num_houses"])
  print(f"{args.workdir} (step {args.step or 'latest'}): zebra, {len(x0_NxL)} held-out "
        f"puzzles, {houses.min()}-{houses.max()} houses; chance with every cell masked "
        f"and no clues: {np.mean(1 - 1 / houses):.4f}")
  print("| answer cells masked | error with clues | error, clues blanked |")
  print("|---|---:|---:|")
  for frac in (0.25, 0.5, 1.0):
    m_NxL = answer_NxL & (rng.random(x0_NxL.shape) < frac)
    x_NxL = np.where(m_NxL, mask_id, x0_NxL)
    print(f"| {frac:.0%} | {error(x_NxL, m_NxL):.4f} | "
          f"{error(np.where(clue_L, pad, x_NxL), m_NxL):.4f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
