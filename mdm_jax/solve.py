r"""Solve Sudoku puzzles with a trained masked diffusion model, for a person.

  python -m mdm_jax.solve PUZZLE                     # the packaged 9x9 model
  python -m mdm_jax.solve --checkpoint RUN_DIR [--strategy margin] PUZZLE
  mdm-jax-solve --checkpoint RUN_DIR puzzles.txt

PUZZLE is n*n characters in row-major order (81 for 9x9; the box shape comes from
the checkpoint's config): digits 1-9 (then A, B, ... for 10, 11, ... on larger
grids) and '.' or '0' for blanks; spaces and '|' are ignored. Or the path of a file
with one puzzle per line (blank lines and lines starting with '#' are skipped).

Without --checkpoint, the model packaged in mdm_jax/pretrained/ for the puzzles'
size is used (9x9: `sudoku9`, trained on 2 CPU cores; its export.json says how).
Since the constraints are known, each answer is checked; a puzzle whose first
answer breaks a constraint is decoded again, --tries - 1 candidates at once with
fresh noise on the order (--retry-gumbel), and the first valid one is kept.

Prints each solved grid (with box separators), the try that solved it and the
decoding order (the step at which the model filled each cell); a file of puzzles
ends with one line `solved N of M`. Exit codes:
  0  every puzzle solved with a valid grid
  2  usage error or malformed puzzle (length, characters)
  3  contradictory puzzle (a digit repeated in a row, column or box)
  4  the model's answer is invalid (breaks a constraint or changes a given)
  5  checkpoint missing, unreadable or not a Sudoku masked diffusion model
Errors are one line on stderr, never a traceback (MDM_JAX_DEBUG=1 shows it).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import numpy as np

EXIT_OK, EXIT_USAGE, EXIT_CONTRADICTORY, EXIT_INVALID_ANSWER, EXIT_CHECKPOINT = 0, 2, 3, 4, 5
_DIGITS = "123456789ABCDEFG"
_BLANKS = ".0"
_IGNORED = " \t|"


class SolveError(Exception):
  """A problem reported to the user as one line and an exit code."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


# ----------------------------------------------------------------------------------
# Puzzles: parsing, checking, printing (pure numpy; grids are int[n*n], 0 = blank).


def digit_symbols(n: int) -> str:
  return _DIGITS[:n]


def parse_puzzle(text: str, n: int, *, name: str = "puzzle") -> np.ndarray:
  """'53..7....' -> int8[n*n] (0 = blank). Raises SolveError(2) when malformed."""
  symbols = digit_symbols(n)
  cells = [ch for ch in text.strip() if ch not in _IGNORED]
  for i, ch in enumerate(cells):
    up = ch.upper()
    if up not in symbols and ch not in _BLANKS:
      where = f" (row {i // n + 1}, column {i % n + 1})" if i < n * n else ""
      raise SolveError(EXIT_USAGE,
                       f"{name}: bad character {ch!r} at cell {i + 1}{where}; use "
                       f"{_symbol_help(n)} for digits and '.' or '0' for blanks")
  if len(cells) != n * n:
    raise SolveError(EXIT_USAGE,
                     f"{name}: has {len(cells)} cells, expected {n * n} ({n}x{n} grid in "
                     "row-major order; '.' or '0' for blanks)")
  return np.array([0 if ch in _BLANKS else symbols.index(ch.upper()) + 1 for ch in cells],
                  np.int8)


def _symbol_help(n: int) -> str:
  return f"1-{n}" if n <= 9 else f"1-9 and A-{_DIGITS[n - 1]}"


def _units(box_rows: int, box_cols: int) -> list[tuple[str, np.ndarray]]:
  """(name, cell ids) of every row, column and box (boxes numbered row-major)."""
  from mdm_jax.data import sudoku_solver  # pylint: disable=g-import-not-at-top
  n = box_rows * box_cols
  units = sudoku_solver.geometry(box_rows, box_cols).units  # rows, columns, boxes
  kinds = ["row"] * n + ["column"] * n + ["box"] * n
  return [(f"{kind} {i % n + 1}", np.asarray(u)) for i, (kind, u) in
          enumerate(zip(kinds, units))]


def _cell_name(i: int, n: int) -> str:
  return f"r{i // n + 1}c{i % n + 1}"


def conflicts(grid: np.ndarray, box_rows: int, box_cols: int) -> list[str]:
  """Descriptions of every digit repeated in a row, column or box (blanks ignored)."""
  n = box_rows * box_cols
  grid = np.asarray(grid).reshape(-1)
  out = []
  for unit_name, unit in _units(box_rows, box_cols):
    values = grid[unit]
    for d in range(1, n + 1):
      where = unit[values == d]
      if where.size > 1:
        out.append(f"digit {_DIGITS[d - 1]} appears {where.size} times in {unit_name} ("
                   + ", ".join(_cell_name(int(i), n) for i in where) + ")")
  return out


def answer_problems(puzzle: np.ndarray, answer: np.ndarray, box_rows: int,
                    box_cols: int) -> list[str]:
  """Why `answer` is not a valid solution of `puzzle` ([] when it is)."""
  n = box_rows * box_cols
  puzzle, answer = np.asarray(puzzle).reshape(-1), np.asarray(answer).reshape(-1)
  problems = []
  changed = np.nonzero((puzzle > 0) & (answer != puzzle))[0]
  if changed.size:
    problems.append("changed the given " + ", ".join(
        f"{_cell_name(int(i), n)} ({_DIGITS[puzzle[i] - 1]} -> {_show(answer[i], n)})"
        for i in changed))
  empty = np.nonzero((answer < 1) | (answer > n))[0]
  if empty.size:
    problems.append("left no digit in " + ", ".join(_cell_name(int(i), n) for i in empty))
  problems += conflicts(np.where((answer >= 1) & (answer <= n), answer, 0), box_rows,
                        box_cols)
  return problems


def _show(v: int, n: int) -> str:
  return _DIGITS[v - 1] if 1 <= v <= n else "?"


def format_grid(values: np.ndarray, box_rows: int, box_cols: int, *,
                fmt: Any = None, width: int = 1) -> str:
  """A grid with box separators; `fmt(value) -> str` renders one cell."""
  n = box_rows * box_cols
  values = np.asarray(values).reshape(n, n)
  fmt = fmt or (lambda v: _show(int(v), n) if v > 0 else ".")
  band = "-" * (box_cols * (width + 1) + 1)
  sep = "+" + "+".join([band] * box_rows) + "+"
  lines = [sep]
  for r in range(n):
    parts = []
    for b in range(box_rows):
      cells = [fmt(values[r, c]).rjust(width) for c in range(b * box_cols, (b + 1) * box_cols)]
      parts.append(" " + " ".join(cells) + " ")
    lines.append("|" + "|".join(parts) + "|")
    if (r + 1) % box_rows == 0:
      lines.append(sep)
  return "\n".join(lines)


def read_puzzles(arg: str) -> list[tuple[str, str]]:
  """[(name, text)] from a puzzle string or a file of puzzles (one per line)."""
  if os.path.isfile(arg):
    try:
      with open(arg, encoding="utf-8") as f:
        lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise SolveError(EXIT_USAGE, f"cannot read puzzle file {arg}: {e}") from None
    out = [(f"{os.path.basename(arg)} line {i + 1}", line) for i, line in enumerate(lines)
           if line.strip() and not line.lstrip().startswith("#")]
    if not out:
      raise SolveError(EXIT_USAGE, f"puzzle file {arg} holds no puzzle")
    return out
  if os.path.isdir(arg):
    raise SolveError(EXIT_USAGE, f"{arg} is a directory, not a puzzle or a puzzle file")
  if "/" in arg or os.path.splitext(arg)[1].lower() in (".txt", ".sdk", ".csv", ".dat"):
    raise SolveError(EXIT_USAGE, f"no such puzzle file: {arg}")
  return [("puzzle", arg)]


# ----------------------------------------------------------------------------------
# The model.

PRETRAINED = {9: "sudoku9"}  # grid size n -> mdm_jax/pretrained/<name>


def pretrained_path(n: int) -> str:
  """The packaged model for n x n puzzles; SolveError(2) when there is none."""
  name = PRETRAINED.get(n)
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", name or "")
  if name is None or not os.path.isfile(os.path.join(path, "export.json")):
    shipped = ", ".join(f"{k}x{k}" for k in sorted(PRETRAINED)) or "none"
    raise SolveError(EXIT_USAGE, f"no packaged model for {n}x{n} puzzles (packaged: "
                     f"{shipped}); pass --checkpoint RUN_DIR of a model trained on them")
  return path


def _cell_count(text: str) -> int:
  return sum(ch not in _IGNORED for ch in text.strip())


def _load(checkpoint: str) -> tuple[Any, Any, Any, Any]:
  """-> (params, saved config, task, apply_fn); SolveError(5) on any problem."""
  from mdm_jax import experiment  # pylint: disable=g-import-not-at-top
  from mdm_jax import fileio  # pylint: disable=g-import-not-at-top
  if not fileio.exists(fileio.expand(checkpoint)):
    raise SolveError(EXIT_CHECKPOINT, f"checkpoint {checkpoint} does not exist")
  try:
    restored = experiment.restore(checkpoint)
    params, saved, task, apply_fn = (restored.params, restored.config, restored.task,
                                     restored.apply_fn)
  except (ValueError, OSError, KeyError, TypeError) as e:
    raise SolveError(EXIT_CHECKPOINT,
                     f"cannot load checkpoint {checkpoint}: {' '.join(str(e).split())}"
                     ) from None
  if task.name != "sudoku":
    raise SolveError(EXIT_CHECKPOINT, f"checkpoint {checkpoint} is a {task.name!r} model; "
                     "this command solves Sudoku")
  if str(saved.objective) != "mdm":
    raise SolveError(EXIT_CHECKPOINT, f"checkpoint {checkpoint} is an {saved.objective!r} "
                     "model; this command needs a masked diffusion ('mdm') model")
  return params, saved, task, apply_fn


def solve_grids(task: Any, params: Any, apply_fn: Any, puzzles_NxC: np.ndarray, *,
                strategy: str, key: Any, **options: Any
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fills the blanks of int[N, n*n] puzzles -> (answers int[N, n*n], order int[N,
  n*n] (step, -1 for givens), steps int[N])."""
  from mdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  puzzles_NxC = np.asarray(puzzles_NxC, np.int8)
  _, _, grid_positions, _ = evaluate.answer_grid(task)
  # The generate-and-score path of evaluation; without solutions, the scores are
  # meaningless and unused (each puzzle stands in for its own solution).
  r = evaluate.evaluate_strategies(
      task, {"puzzle": puzzles_NxC, "solution": puzzles_NxC}, key=key, apply_fn=apply_fn,
      params=params, strategies=(strategy,), batch_size=max(len(puzzles_NxC), 1),
      time_it=False, **options)[strategy]
  answers = _decode(task, r.tokens_NxL, grid_positions)
  return answers, r.order_NxL[:, grid_positions], r.steps_N


def solve_with_retries(task: Any, params: Any, apply_fn: Any, puzzles_NxC: np.ndarray, *,
                       strategy: str, tries: int, retry_gumbel: float, key: Any,
                       **options: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`solve_grids`, then, for the puzzles whose answer breaks a constraint, tries - 1
  candidates each in one batch with Gumbel noise `retry_gumbel` on the order score
  (fresh per row); the first valid candidate wins. -> (answers, order, try int[N]:
  1 = the first decode, 0 = no blank to fill, -1 = no valid candidate)."""
  import jax  # pylint: disable=g-import-not-at-top
  puzzles_NxC = np.asarray(puzzles_NxC)
  n_all = puzzles_NxC.shape[0]
  answers = puzzles_NxC.astype(np.int64).copy()
  order = np.full(puzzles_NxC.shape, -1, np.int64)
  tried = np.zeros(n_all, np.int64)
  todo = np.nonzero((puzzles_NxC == 0).any(axis=1))[0]
  if not todo.size:
    return answers, order, tried
  br, bc = int(task.box_rows), int(task.box_cols)
  first_key, retry_key = jax.random.split(key)
  a, o, _ = solve_grids(task, params, apply_fn, puzzles_NxC[todo], strategy=strategy,
                        key=first_key, **options)
  answers[todo], order[todo] = a, o
  valid = np.array([not answer_problems(puzzles_NxC[i], answers[i], br, bc) for i in todo])
  tried[todo] = np.where(valid, 1, -1)
  bad = todo[~valid]
  if tries > 1 and bad.size:
    k = tries - 1
    rep = np.repeat(bad, k)
    retry = dict(options, gumbel=float(retry_gumbel))
    a, o, _ = solve_grids(task, params, apply_fn, puzzles_NxC[rep], strategy=strategy,
                          key=retry_key, **retry)
    for j, i in enumerate(rep):
      if tried[i] < 0 and not answer_problems(puzzles_NxC[i], a[j], br, bc):
        answers[i], order[i], tried[i] = a[j], o[j], 2 + j % k
  return answers, order, tried


def _decode(task: Any, tokens_NxL: np.ndarray, grid_positions: np.ndarray) -> np.ndarray:
  """Digits 1..n of the grid cells (token = digit - 1, SudokuTask's layout); 0 when a
  cell holds no digit token."""
  cells = np.asarray(tokens_NxL)[:, grid_positions].astype(np.int64)
  return np.where((cells >= 0) & (cells < task.n), cells + 1, 0)


# ----------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):

  def error(self, message: str) -> None:  # one line, exit 2 (no usage dump)
    raise SolveError(EXIT_USAGE, f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
  from mdm_jax import sampling  # pylint: disable=g-import-not-at-top
  p = _Parser(prog="mdm-jax-solve", description=__doc__.split("\n\n")[0].strip(),
              formatter_class=argparse.RawDescriptionHelpFormatter,
              epilog="\n\n".join(__doc__.split("\n\n")[1:]))
  p.add_argument("puzzle", help="n*n characters ('.' or '0' = blank) or a file of them")
  p.add_argument("--checkpoint", default=None,
                 help="training workdir, its checkpoints/ dir, one step dir or a params "
                      "export (default: the packaged model for the puzzles' size)")
  p.add_argument("--strategy", default="margin", choices=sampling.STRATEGIES,
                 help="unmasking order (default: margin, the paper's best)")
  p.add_argument("--steps", type=int, default=None,
                 help="reverse steps (default: the run's config.sampler.num_steps)")
  p.add_argument("--gumbel", type=float, default=None,
                 help="Gumbel noise on the order score (default: the run's config)")
  p.add_argument("--tries", type=int, default=16,
                 help="candidates per puzzle: the first without noise, then up to "
                      "TRIES - 1 at once with fresh noise where it broke a constraint")
  p.add_argument("--retry-gumbel", type=float, default=0.1,
                 help="Gumbel noise on the order score of the retries (default 0.1)")
  p.add_argument("--seed", type=int, default=0, help="random seed")
  return p


def _solve(argv: Sequence[str]) -> int:
  args = _parser().parse_args(argv)
  if args.steps is not None and args.steps < 1:
    raise SolveError(EXIT_USAGE, f"--steps must be >= 1, got {args.steps}")
  if args.gumbel is not None and not args.gumbel >= 0:
    raise SolveError(EXIT_USAGE, f"--gumbel must be >= 0, got {args.gumbel}")
  if args.tries < 1:
    raise SolveError(EXIT_USAGE, f"--tries must be >= 1, got {args.tries}")
  if not args.retry_gumbel >= 0:
    raise SolveError(EXIT_USAGE, f"--retry-gumbel must be >= 0, got {args.retry_gumbel}")
  inputs = read_puzzles(args.puzzle)
  checkpoint = args.checkpoint
  if checkpoint is None:
    size = int(round(_cell_count(inputs[0][1]) ** 0.5))
    checkpoint = pretrained_path(size)
  params, saved, task, apply_fn = _load(checkpoint)
  box_rows, box_cols = int(task.box_rows), int(task.box_cols)
  n = box_rows * box_cols

  # Every input is checked before the model runs.
  puzzles, usage, contradictory = [], [], []
  for name, text in inputs:
    try:
      grid = parse_puzzle(text, n, name=name)
    except SolveError as e:
      usage.append(e.message)
      continue
    bad = conflicts(grid, box_rows, box_cols)
    if bad:
      contradictory.append(f"{name}: contradictory puzzle: {bad[0]}"
                           + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    puzzles.append((name, grid))
  for msg in usage + contradictory:
    print(f"error: {msg}", file=sys.stderr)
  if usage:
    return EXIT_USAGE
  if contradictory:
    return EXIT_CONTRADICTORY

  import jax  # pylint: disable=g-import-not-at-top
  from mdm_jax import sampling  # pylint: disable=g-import-not-at-top
  sampler_cfg = saved.get("sampler", {}) or {}
  options = sampling.config_options(sampler_cfg, num_steps=args.steps, gumbel=args.gumbel,
                                    temperature=0.0, top_k=0, top_p=1.0, remask=False)
  grids = np.stack([g for _, g in puzzles])
  blank = grids == 0
  answers, order, tries = solve_with_retries(
      task, params, apply_fn, grids, strategy=args.strategy, tries=args.tries,
      retry_gumbel=args.retry_gumbel, key=jax.random.PRNGKey(args.seed), **options)
  code = EXIT_OK
  num_solved = 0
  for i, (name, grid) in enumerate(puzzles):
    problems = answer_problems(grid, answers[i], box_rows, box_cols)
    status = "solved" if not problems else "INVALID ANSWER"
    num_solved += not problems
    which = ""
    if args.tries > 1 and tries[i] != 0:
      which = (f", try {tries[i]} of {args.tries}" if not problems
               else f", none of {args.tries} tries valid")
    print(f"{name}: {status} ({args.strategy}, {options['num_steps']} steps, "
          f"{int(blank[i].sum())} blanks){which}")
    print(format_grid(answers[i], box_rows, box_cols))
    width = len(str(max(int(order[i].max()) + 1, 1)))
    print("decoding order (step at which each blank was filled; '.' = given):")
    print(format_grid(order[i], box_rows, box_cols, width=width,
                      fmt=lambda v: "." if v < 0 else str(int(v) + 1)))
    if problems:
      print(f"error: {name}: the model's answer is invalid: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            file=sys.stderr)
      code = EXIT_INVALID_ANSWER
  if len(puzzles) > 1 or os.path.isfile(args.puzzle):
    print(f"solved {num_solved} of {len(puzzles)}")
  return code


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns the exit code (see the module docstring)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help") for a in argv):
    _parser().print_help()
    return EXIT_OK
  try:
    return _solve(argv)
  except SolveError as e:
    print(f"error: {e.message}", file=sys.stderr)
    return e.code
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get("MDM_JAX_DEBUG"):
      raise
    print(f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]}",
          file=sys.stderr)
    return 1


def run() -> None:
  """Console-script entry point (`mdm-jax-solve`)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)
  sys.exit(main())


if __name__ == "__main__":
  run()
