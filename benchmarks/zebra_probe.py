r"""Does a Zebra MDM read the clues? A teacher-forced probe (a diagnostic).

  python benchmarks/zebra_probe.py WORKDIR [--num 1000] [--step S]

For held-out puzzles it masks a share of the answer cells and measures the
denoiser's argmax error on them twice: with the clues, and with every clue slot
blanked to PAD (the sizes and the visible cells kept). A model that only learned
that each attribute is a permutation of the houses (one value per house) scores
the same both ways; one that reads the clues is much better with them, most of all
when every cell is masked (without clues the best possible error there is 1 - 1/H).

`--orders` adds why an adaptive order does or does not help: with every cell masked,
the argmax error of the cell ranked r-th by the model's confidence (top probability)
and of the cell the deductive solver fills r-th; then a top-probability decode that
fixes one cell per step, with the step of its first wrong cell and the confidence of
the cells it got right and of its first wrong one.
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
  p.add_argument("--orders", action="store_true",
                 help="error by confidence rank and by solver rank; one-cell-per-step trace")
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
  if args.orders:
    _orders(task, examples, x0_NxL, answer_NxL, mask_id, logits)
  return 0


def _probs(logits, x_NxL: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(jax.nn.softmax(logits(jnp.asarray(x_NxL[i:i + 250]))))
                         for i in range(0, len(x_NxL), 250)])


def _orders(task, examples, x0_NxL, answer_NxL, mask_id, logits) -> None:
  """Prints the confidence-rank / solver-rank errors and the one-cell-per-step trace."""
  n = len(x0_NxL)
  rows = np.arange(n)
  start = task._answer_start  # pylint: disable=protected-access  # answer cell h * Am + a
  cells_N = answer_NxL.sum(1)
  x_NxL = np.where(answer_NxL, mask_id, x0_NxL)
  p_NxLxV = _probs(logits, x_NxL)
  conf_NxL = np.where(answer_NxL, p_NxLxV.max(-1), -np.inf)
  wrong_NxL = p_NxLxV.argmax(-1) != x0_NxL
  by_conf = np.argsort(-conf_NxL, axis=1, kind="stable")  # positions, surest first
  order = np.asarray(examples["order"]).astype(np.int64)
  by_solver = np.where(order >= 0, start + np.maximum(order, 0), -1)
  print(f"\nEvery answer cell masked: argmax error of the r-th cell ({n} puzzles)")
  print("| rank r | by the model's confidence: error / mean confidence | "
        "in the solver's order: error |")
  print("|---:|---:|---:|")
  for r in range(int(cells_N.max())):
    ok = r < cells_N
    pc, ps = by_conf[ok, r], by_solver[ok, r]
    print(f"| {r + 1} | {wrong_NxL[rows[ok], pc].mean():.4f} / "
          f"{conf_NxL[rows[ok], pc].mean():.3f} | {wrong_NxL[rows[ok], ps].mean():.4f} |")
  # Top-probability decoding, one cell per step, each cell's argmax written.
  first_wrong = np.full(n, -1)
  conf_right, conf_first_wrong = [], []
  for step in range(int(cells_N.max())):
    live = step < cells_N
    p_NxLxV = _probs(logits, x_NxL)
    conf_NxL = np.where(x_NxL == mask_id, p_NxLxV.max(-1), -np.inf)
    pos = conf_NxL.argmax(1)
    digit = p_NxLxV[rows, pos].argmax(-1)
    right = digit == x0_NxL[rows, pos]
    still = live & (first_wrong < 0)
    conf_right += list(conf_NxL[rows[still & right], pos[still & right]])
    new_wrong = still & ~right
    conf_first_wrong += list(conf_NxL[rows[new_wrong], pos[new_wrong]])
    first_wrong[new_wrong] = step
    x_NxL[rows[live], pos[live]] = digit[live]
  counts = np.bincount(first_wrong[first_wrong >= 0], minlength=int(cells_N.max()))
  print(f"\nTop-probability decoding, one cell per step: all right in "
        f"{np.mean(first_wrong < 0):.1%}; first wrong cell at step 1..{len(counts)}: "
        f"{' / '.join(f'{c / n:.1%}' for c in counts)}")
  print(f"confidence of the cells written right before any error: mean "
        f"{np.mean(conf_right):.3f}; of the first wrong cell: mean "
        f"{np.mean(conf_first_wrong) if conf_first_wrong else float('nan'):.3f}")


if __name__ == "__main__":
  sys.exit(main())
