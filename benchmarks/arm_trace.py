r"""Where does a Sudoku ARM's greedy decoding go wrong? Replays its moves on the board.

  python benchmarks/arm_trace.py WORKDIR [--split test] [--num 500] [--beam 1 | --pick SCORE]

Decodes the first `--num` puzzles of the run's `--split` (legal moves, key/value
cache, as the evaluation does), then replays each puzzle's answer moves in the order
the model wrote them. For every move made while the board is still right it asks
whether the chosen cell was *forced* on the board as it stood (`sudoku.forced_cells`:
a naked single, one digit left, or a hidden single, the only place of a digit in a
row, column or box). It prints the share of forced moves, the digit accuracy on forced and on unforced
cells, and what the first wrong move was: a wrong digit in a forced cell (the model
misread the constraints) or a guess in a cell that no single forces (the model chose
the wrong cell to write next). The solver's own order is replayed the same way as a
reference. `--pick top_prob|margin|entropy` decodes with confident-cell decoding
(`config.eval.arm_pick`, 'cell' layout) instead of the model's own next cell.
"""
from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from mdm_jax import config_schema
from mdm_jax import evaluate
from mdm_jax import experiment
from mdm_jax.data import sudoku as sd
from mdm_jax.data import sudoku_solver as ss


def replay(g: ss.Geometry, puzzle_N: np.ndarray, solution_N: np.ndarray,
           moves: list[tuple[int, int]]) -> dict[str, int]:
  """Counts of one puzzle's moves [(cell, digit 1-based)] until the first error."""
  board = puzzle_N.astype(np.int64).copy()
  out = {"forced": 0, "forced_right": 0, "free": 0, "free_right": 0, "first_error": 0}
  for cell, digit in moves:
    if board[cell] != 0:
      continue
    forced = bool(sd.forced_cells(g, board[None])[0, cell])
    right = digit == solution_N[cell]
    key = "forced" if forced else "free"
    out[key] += 1
    out[key + "_right"] += int(right)
    if not right:
      out["first_error"] = 1 if forced else 2
      return out
    board[cell] = digit
  return out


def summarize(name: str, counts: list[dict[str, int]]) -> None:
  tot = {k: sum(c[k] for c in counts) for k in counts[0]}
  moves = tot["forced"] + tot["free"]
  first = np.array([c["first_error"] for c in counts])
  print(f"{name}: {moves} moves on right boards, {100 * tot['forced'] / max(moves, 1):.1f}% "
        f"in forced cells; digit right: forced {tot['forced_right'] / max(tot['forced'], 1):.3f}"
        f", unforced {tot['free_right'] / max(tot['free'], 1):.3f}; puzzles with no wrong "
        f"move {100 * (first == 0).mean():.1f}%, first error a wrong forced digit "
        f"{100 * (first == 1).mean():.1f}%, a guess in an unforced cell "
        f"{100 * (first == 2).mean():.1f}%", flush=True)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  p.add_argument("--split", default="test")
  p.add_argument("--num", type=int, default=500)
  p.add_argument("--beam", type=int, default=1)
  p.add_argument("--pick", default="", help="confident-cell decoding score (arm_pick)")
  p.add_argument("--batch", type=int, default=100)
  args = p.parse_args(argv)
  try:
    if args.num < 1 or args.batch < 1 or args.beam < 1:
      raise ValueError("--num, --batch and --beam must be integers >= 1")
    r = experiment.restore(args.workdir)
    if r.config.objective != "arm" or r.task.name != "sudoku":
      raise ValueError(f"{args.workdir} is not a Sudoku ARM run")
    cfg = config_schema.merge_saved(r.config)
    examples = evaluate._dataset(cfg, r.config, r.task, args.split)  # pylint: disable=protected-access
    gen = evaluate.Generator(r.task, evaluate.ARM_STRATEGY, apply_fn=r.apply_fn,
                             arm_ordering=str(r.config.data.ordering), arm_model=r.model,
                             arm_beam=args.beam, arm_pick=args.pick)
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  task = r.task
  num = min(args.num, len(examples["puzzle"]))
  examples = {k: np.asarray(v[:num]) for k, v in examples.items()}
  ordering = str(r.config.data.ordering)
  key = jax.random.PRNGKey(0)
  toks = []
  for i in range(0, num, args.batch):
    part = {k: v[i:i + args.batch] for k, v in examples.items()}
    toks.append(np.asarray(gen(r.params, gen.inputs(part, key), key)[0]))
  tokens_NxL = np.concatenate(toks)
  w = task._arm_width  # pylint: disable=protected-access
  groups = tokens_NxL[:, :tokens_NxL.shape[1] // w * w].reshape(num, -1, w).astype(np.int64)
  rows, cols, vals = task._arm_cells(groups)  # pylint: disable=protected-access
  g, n = task.geometry, task.n
  puzzle, solution = examples["puzzle"], examples["solution"]
  prompt = (puzzle > 0).sum(1)
  solver_cells = task.cell_order(examples, "solver")
  model, solver = [], []
  for i in range(num):
    moves = [(int(rows[i, t] * n + cols[i, t]), int(vals[i, t]))
             for t in range(prompt[i], groups.shape[1])
             if 0 <= rows[i, t] < n and 0 <= cols[i, t] < n and 1 <= vals[i, t] <= n]
    model.append(replay(g, puzzle[i], solution[i], moves))
    solver.append(replay(g, puzzle[i], solution[i], [
        (int(c), int(solution[i, c])) for c in solver_cells[i, prompt[i]:]]))
  decoding = f"pick {args.pick}" if args.pick else f"beam {args.beam}"
  print(f"{args.workdir} ({ordering} order, {decoding}): {num} '{args.split}' puzzles")
  summarize("model ", model)
  summarize("solver", solver)
  return 0


if __name__ == "__main__":
  sys.exit(main())
