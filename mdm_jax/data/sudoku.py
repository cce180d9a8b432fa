"""Sudoku: generator of unique-solution puzzles, seven-strategy rating, splits, token
layouts, symmetries and puzzle-file import (Kim et al. 2025, arXiv 2502.06768: Tables 2 and 5).

Data (`Examples`, leading dimension N, N_c = n*n cells row-major, 0 = blank):
  'puzzle' int8[N, N_c], 'solution' int8[N, N_c],
  'order' int16[N, N_c, 4]: (row, col, value, strategy id) rows, givens first
      (row-major), then the cells in the order the strategy solver filled them; for
      puzzles the seven strategies cannot finish, the unfilled cells are rows of -1,
  'num_givens' int16[N], 'max_strategy' int8[N]: hardest strategy the solver used
      (ids in `sudoku_solver`; 9 = the seven strategies do not finish the puzzle).

Splits: 'train' and 'test' hold puzzles the seven strategies solve ("easy"), 'hard'
unique-solution puzzles they cannot finish. Whether a puzzle may be used for training
is a fixed function of its solution grid (a hash of the grid with digits relabelled so
that the first row reads 1..n): 'train' only draws grids on one side of that hash,
'test' and 'hard' only the other, so no solution grid, hence no puzzle, is ever in
both, however the data is generated.

Generation: random complete grids (randomised fill, then a random symmetry), then
clues are removed in a random order, in chunks that shrink on failure, while the
strategy solver still solves the puzzle (a puzzle the solver finishes without the
unique-rectangle rule has exactly one solution, since every step is a sound
deduction; when the rule was used, a solution counter confirms uniqueness). 'hard'
puzzles come from other grids: their clues are removed in a random order while the
puzzle keeps exactly one solution (`sudoku_solver.unique_minimal`: singles
propagation and a batched depth-first search decide each removal), and the
unique-minimal puzzles the strategy solver gets stuck on are kept (about a third
of 9x9 grids give one).
"""
from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import re
from typing import Any

import numpy as np

from mdm_jax.data import sudoku_solver as ss
from mdm_jax.data.base import Examples, Layout, Task, register

_SPLIT_CODES = {"train": 1, "test": 2, "hard": 3}


# ----------------------------------------------------------------------------------
# Split assignment.


def canonical_solutions(solutions: np.ndarray, n: int) -> np.ndarray:
  """Relabels digits so that each grid's first row reads 1..n (int8[N, n*n])."""
  solutions = np.asarray(solutions, np.int8)
  relabel = np.zeros((solutions.shape[0], n + 1), np.int8)
  np.put_along_axis(relabel, solutions[:, :n].astype(np.int64),
                    np.arange(1, n + 1, dtype=np.int8)[None], axis=1)
  return np.take_along_axis(relabel, solutions.astype(np.int64), axis=1)


def _mix64(h: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser on uint64 arrays."""
  h = h ^ (h >> np.uint64(30))
  h = h * np.uint64(0xBF58476D1CE4E5B9)
  h = h ^ (h >> np.uint64(27))
  h = h * np.uint64(0x94D049BB133111EB)
  return h ^ (h >> np.uint64(31))


def heldout(solutions: np.ndarray, n: int) -> np.ndarray:
  """bool[N]: the solution grid belongs to the held-out side ('test', 'hard')."""
  canon = canonical_solutions(solutions, n).astype(np.uint64)
  h = np.zeros(canon.shape[0], np.uint64)
  for i in range(canon.shape[1]):
    h = _mix64(h ^ (canon[:, i] + np.uint64(0x9E3779B97F4A7C15 + i)))
  return (h >> np.uint64(63)).astype(bool)


# ----------------------------------------------------------------------------------
# Symmetries.


def random_symmetry(g: ss.Geometry, num: int, rng: np.random.Generator,
                    relabel_digits: bool = True):
  """A random symmetry per grid -> (src int64[num, N_c], digit map int16[num, n+2]).

  new_grid[i, j] = digit_map[i, old_grid[i, src[i, j]]]. Symmetries: row swaps within
  bands, band swaps, column swaps within stacks, stack swaps, transposition (square
  boxes only) and digit relabelling. digit_map sends 0 -> 0 and -1 -> -1 (index n+1).
  """
  n, br, bc = g.n, g.box_rows, g.box_cols
  bands, stacks = n // br, n // bc

  def line_perm(groups, size):
    outer = np.argsort(rng.random((num, groups)), 1)
    inner = np.argsort(rng.random((num, groups, size)), 2)
    return (outer[:, :, None] * size + np.take_along_axis(
        inner, outer[:, :, None], 1)).reshape(num, n)

  rows, cols = line_perm(bands, br), line_perm(stacks, bc)
  src = (rows[:, :, None] * n + cols[:, None, :]).reshape(num, n * n)
  if br == bc:
    flip = rng.random(num) < 0.5
    src = np.where(flip[:, None], src.reshape(num, n, n).transpose(0, 2, 1)
                   .reshape(num, n * n), src)
  dmap = np.tile(np.arange(n + 2, dtype=np.int16), (num, 1))
  dmap[:, n + 1] = -1
  if relabel_digits:
    dmap[:, 1:n + 1] = np.argsort(rng.random((num, n)), 1) + 1
  return src, dmap


def apply_symmetry(examples: Examples, src: np.ndarray, dmap: np.ndarray) -> Examples:
  """Applies `random_symmetry` output to puzzle, solution and order consistently."""
  out = dict(examples)
  for key in ("puzzle", "solution"):
    if key in examples:
      grid = np.take_along_axis(np.asarray(examples[key]), src, 1).astype(np.int64)
      out[key] = np.take_along_axis(dmap, grid, 1).astype(np.int8)
  if "order" in examples:
    order = np.asarray(examples["order"])
    num, cells = src.shape
    n = int(round(cells ** 0.5))
    dest = np.empty_like(src)
    np.put_along_axis(dest, src, np.arange(cells)[None].repeat(num, 0), 1)
    valid = order[..., 0] >= 0
    old = np.where(valid, order[..., 0] * n + order[..., 1], 0).astype(np.int64)
    new = np.take_along_axis(dest, old, 1)
    value = np.take_along_axis(dmap, np.where(valid, order[..., 2], n + 1)
                               .astype(np.int64), 1)
    out["order"] = np.where(valid[..., None], np.stack(
        [new // n, new % n, value, order[..., 3]], -1), -1).astype(order.dtype)
  return out


# ----------------------------------------------------------------------------------
# Generation.


def _grids_for_side(g: ss.Geometry, num: int, want_heldout: bool,
                    rng: np.random.Generator) -> np.ndarray:
  """Random complete grids on the requested side of the split hash."""
  out = np.zeros((0, g.num_cells), np.int8)
  while out.shape[0] < num:
    grids = ss.random_grids(g, num - out.shape[0], rng)
    for _ in range(8):  # random symmetries move a grid across the hash
      src, dmap = random_symmetry(g, grids.shape[0], rng)
      grids = apply_symmetry({"solution": grids}, src, dmap)["solution"]
      side = heldout(grids, g.n) == want_heldout
      out = np.concatenate([out, grids[side]])
      grids = grids[~side]
      if grids.shape[0] == 0:
        break
  return out


def examples_from_puzzles(g: ss.Geometry, puzzles: np.ndarray,
                          solutions: np.ndarray, check: bool = True
                          ) -> tuple[Examples, np.ndarray]:
  """Rates unique-solution puzzles with the strategy solver -> (Examples, bits of the
  strategies used int16[N]); check=False: the puzzles are known to be consistent."""
  res = ss.solve(g, puzzles, check=check)
  return {
      "puzzle": np.asarray(puzzles, np.int8),
      "solution": np.asarray(solutions, np.int8),
      "order": ss.fill_order(res),
      "num_givens": (np.asarray(puzzles) > 0).sum(1).astype(np.int16),
      "max_strategy": res.max_strategy.astype(np.int8),
  }, res.used


def _take(examples: Examples, rows) -> Examples:
  return {k: v[rows] for k, v in examples.items()}


def _concat(parts: list[Examples], g: ss.Geometry) -> Examples:
  if not parts:
    cells = g.num_cells
    return {"puzzle": np.zeros((0, cells), np.int8),
            "solution": np.zeros((0, cells), np.int8),
            "order": np.zeros((0, cells, 4), np.int16),
            "num_givens": np.zeros(0, np.int16), "max_strategy": np.zeros(0, np.int8)}
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# Identifies how 'hard' puzzles are made (stored 'hard' datasets record it, and one
# made by another version is refused). 1: strategy-minimal puzzles that then lost
# clues while unique, from blocks of 4,096 (9x9) or 256 grids; 2: unique-minimal
# puzzles (`sudoku_solver.unique_minimal`) from blocks of 512 grids.
HARD_GENERATOR_VERSION = 2
_HARD_GROUP_GRIDS = 2048  # hard blocks share one clue-removal pool up to this size


def block_size(g: ss.Geometry, split: str = "train") -> int:
  """Grids per generation block: the easy puzzles one block makes ('train',
  'test'), or the grids one block tries for hard puzzles ('hard'; about a third of
  9x9 grids and a fiftieth of 6x6 ones give one)."""
  if split == "hard":
    return 512
  return 4096 if g.n >= 9 else 256


def _block_rng(box_rows: int, box_cols: int, split: str, seed: int,
               block: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence(
      entropy=seed, spawn_key=(_SPLIT_CODES[split], box_rows, box_cols, block)))


def generate_blocks(box_rows: int, box_cols: int, split: str, seed: int, first: int,
                    count: int, size: int | None = None) -> list[Examples]:
  """`generate_block` of blocks first, ..., first+count-1 (hard blocks share one
  clue-removal pool, which is faster than one pool each and gives the same)."""
  if split != "hard":
    return [generate_block(box_rows, box_cols, split, seed, b, size)
            for b in range(first, first + count)]
  g = ss.geometry(box_rows, box_cols)
  size = size or block_size(g, split)
  grids, orders = [], []
  for b in range(first, first + count):
    rng = _block_rng(box_rows, box_cols, split, seed, b)
    grids.append(_grids_for_side(g, size, True, rng))
    orders.append(np.argsort(rng.random((size, g.num_cells)), 1))  # removal order
  grids = np.concatenate(grids)
  puzzles = ss.unique_minimal(g, grids, order_BxN=np.concatenate(orders))
  # Unique by construction; hard if the strategies get stuck.
  ex, _ = examples_from_puzzles(g, puzzles, grids, check=False)
  hard = ex["max_strategy"] == ss.BEYOND
  return [_take(ex, np.nonzero(hard[i * size:(i + 1) * size])[0] + i * size)
          for i in range(count)]


def generate_block(box_rows: int, box_cols: int, split: str, seed: int,
                   block: int, size: int | None = None) -> Examples:
  """The examples of one generation block, a pure function of its arguments: `size`
  (default `block_size`) easy puzzles for 'train'/'test' (a few spare grids cover
  the rare rejects), or the hard puzzles found from `size` grids for 'hard'."""
  if split == "hard":
    return generate_blocks(box_rows, box_cols, split, seed, block, 1, size)[0]
  g = ss.geometry(box_rows, box_cols)
  rng = _block_rng(box_rows, box_cols, split, seed, block)
  size = size or block_size(g, split)
  grids = _grids_for_side(g, size + size // 32 + 8, split != "train", rng)
  puzzles = ss.strategy_minimal(g, grids, rng)
  ex, used = examples_from_puzzles(g, puzzles, grids, check=False)
  keep = ex["max_strategy"] != ss.BEYOND
  # The unique-rectangle rule presumes uniqueness: confirm by counting.
  ur = keep & (((used >> ss.UNIQUE_RECTANGLE) & 1) == 1)
  if ur.any():
    counts, _ = ss.count_solutions(g, puzzles[ur])
    keep[np.nonzero(ur)[0][counts != 1]] = False
  return _take(ex, np.nonzero(keep)[0][:size])


def generate_examples(box_rows: int, box_cols: int, split: str, num: int, seed: int,
                      workers: int | None = None, block: int | None = None,
                      max_blocks: int | None = None) -> Examples:
  """`num` examples of `split`: blocks of `block` candidate grids (default
  `block_size`) generate in order until `num` are made, so the result depends on
  (shape, split, num, seed, block) only, not on `workers`, and a smaller `num` gives
  a prefix of a larger one. Stored easy datasets waste least with shards of a whole
  number of blocks (4,096 for 9x9: `SudokuTask.preferred_shard_size`). Hard blocks
  are made a few at a time (as many as the yield so far says are needed)."""
  g = ss.geometry(box_rows, box_cols)
  size = block or block_size(g, split)
  hard = split == "hard"
  if workers is None:  # one process per block, up to the number of CPUs
    workers = max(1, min(os.cpu_count() or 1, -(-num // size)))
  if max_blocks is None:
    max_blocks = 64 + (64 if hard else 16) * (num // size + 1)
  parts, have, index = [], 0, 0
  pool = None
  if workers > 1:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
  try:
    while have < num:
      if index >= max_blocks or (have == 0 and index >= 8):
        raise ValueError(
            f"made only {have} of {num} {split!r} Sudoku puzzles with "
            f"{box_rows}x{box_cols} boxes in {index} blocks; this box shape may have "
            f"(almost) no such puzzles")
      width = 1 if pool is None else workers
      group = 1  # blocks per call
      if not hard:  # easy blocks almost always make `size` puzzles
        width = min(width, -(-(num - have) // size))
      elif index:  # blocks still needed at the yield so far (4 if none yet)
        need = -(-(num - have) * index // have) if have else 4 * width
        group = max(1, min(-(-need // width), _HARD_GROUP_GRIDS // size,
                           max_blocks - index))
      args = [(box_rows, box_cols, split, seed, index + i * group, group, size)
              for i in range(width)]
      if pool is None:
        results = [generate_blocks(*a) for a in args]
      else:
        results = list(pool.map(generate_blocks, *zip(*args)))
      for r in (r for rs in results for r in rs):
        if have < num:
          parts.append(r)
          have += r["puzzle"].shape[0]
      index += width * group
  finally:
    if pool is not None:
      pool.shutdown()
  return _take(_concat(parts, g), slice(0, num))


# ----------------------------------------------------------------------------------
# Puzzle files.

_HEADER_PUZZLE = ("puzzle", "puzzles", "quizzes", "quiz", "question", "grid")
_HEADER_SOLUTION = ("solution", "solutions", "answer")


def _parse_grids(texts: list[str], g: ss.Geometry, where: list[str],
                 blanks: bool) -> np.ndarray:
  """Grid strings -> int8[len, N_c]; a ValueError names `where[i]` of the first bad
  string."""
  for i, t in enumerate(texts):
    if len(t) != g.num_cells:
      raise ValueError(f"{where[i]}: expected {g.num_cells} characters, got {len(t)}")
  table = np.full(256, -1, np.int8)
  for d, ch in enumerate("123456789ABCDEFG"[:g.n]):
    table[ord(ch)] = table[ord(ch.lower())] = d + 1
  if blanks:
    table[[ord(c) for c in ".0_-"]] = 0
  raw = "".join(texts).encode("utf-8", errors="replace")
  if len(raw) != len(texts) * g.num_cells:  # non-ASCII somewhere: find it
    for i, t in enumerate(texts):
      for j, ch in enumerate(t):
        if ord(ch) > 127:
          raise ValueError(f"{where[i]}: bad character {ch!r} at position {j + 1}")
  grids = table[np.frombuffer(raw, np.uint8)].reshape(len(texts), g.num_cells)
  bad = grids < 0
  if bad.any():
    i = int(np.argmax(bad.any(1)))
    j = int(np.argmax(bad[i]))
    raise ValueError(f"{where[i]}: bad character {texts[i][j]!r} at position {j + 1}")
  return grids


def load_puzzle_file(path: str, box_rows: int = 3, box_cols: int = 3,
                     chunk: int = 65536) -> Examples:
  """Reads, solves and rates a puzzle file.

  Formats: CSV with a header naming a puzzle column ('puzzle', 'quizzes', ...) and an
  optional solution column ('solution', 'solutions') -- e.g. Radcliffe's Kaggle CSV or
  `qqwing --csv` output -- or plain text with one puzzle per line (blank lines and
  '#' comments skipped). Blanks are '.', '0', '_' or '-'. Raises ValueError naming the
  file and line for a malformed line, contradictory clues, a puzzle without exactly
  one solution, or a solution that does not solve its puzzle.
  """
  g = ss.geometry(box_rows, box_cols)
  with open(path, encoding="utf-8-sig", errors="replace") as f:
    lines = f.read().splitlines()
  rows = [(i + 1, line) for i, line in enumerate(lines)
          if line.strip() and not line.lstrip().startswith("#")]
  if not rows:
    raise ValueError(f"{path}: no puzzles found")
  pcol, scol = 0, None
  first_no, first = rows[0]
  header = [h.strip().lower() for h in first.split(",")]
  if re.search(r"[A-Za-z]{2,}", first) and len(header[0]) != g.num_cells:
    pcol = next((header.index(h) for h in _HEADER_PUZZLE if h in header), None)
    if pcol is None:
      raise ValueError(f"{path}:{first_no}: header has no puzzle column "
                       f"(one of {', '.join(_HEADER_PUZZLE)})")
    scol = next((header.index(h) for h in _HEADER_SOLUTION if h in header), None)
    rows = rows[1:]
  if not rows:
    raise ValueError(f"{path}: no puzzles found")
  texts, sol_texts, sol_rows, where = [], [], [], []
  for i, (no, line) in enumerate(rows):
    fields = [x.strip() for x in line.split(",")] if "," in line else line.split()
    where.append(f"{path}:{no}")
    if len(fields) <= pcol:
      raise ValueError(f"{where[-1]}: expected at least {pcol + 1} fields")
    texts.append(fields[pcol])
    if scol is not None and scol < len(fields) and fields[scol]:
      sol_texts.append(fields[scol])
      sol_rows.append(i)
  puzzles = _parse_grids(texts, g, where, blanks=True)
  given = np.zeros(puzzles.shape, np.int8)
  if sol_rows:
    given[sol_rows] = _parse_grids(sol_texts, g, [where[i] + " (solution)"
                                                 for i in sol_rows], blanks=False)
  parts = []
  for lo in range(0, len(puzzles), chunk):
    p, w = puzzles[lo:lo + chunk], where[lo:lo + chunk]
    _, _, bad = ss._initial_state(g, p)  # noqa: SLF001
    if bad.any():
      raise ValueError(f"{w[int(np.argmax(bad))]}: contradictory clues (a digit "
                       "repeats in a row, column or box)")
    counts, solutions = ss.count_solutions(g, p)
    if (counts != 1).any():
      i = int(np.argmax(counts != 1))
      what = "no solution" if counts[i] == 0 else "more than one solution"
      raise ValueError(f"{w[i]}: puzzle has {what}")
    gs = given[lo:lo + chunk]
    wrong = (gs > 0).any(1) & (gs != solutions).any(1)
    if wrong.any():
      raise ValueError(f"{w[int(np.argmax(wrong))]}: the given solution does not "
                       "solve the puzzle")
    parts.append(examples_from_puzzles(g, p, solutions)[0])
  return _concat(parts, g)


# ----------------------------------------------------------------------------------
# Forced-cell order: a solver that places one single at a time.


def forced_cells(g: ss.Geometry, board_BxN: np.ndarray) -> np.ndarray:
  """bool[B, N]: the empty cells (0) of 1-based boards that a naked single (one digit
  left) or a hidden single (the only place of a digit in a row, column or box)
  forces."""
  board = np.asarray(board_BxN)
  held_BxNxD = board[..., None] == np.arange(1, g.n + 1)
  present_BxUxD = held_BxNxD[:, g.units].any(2)
  cand_BxNxD = ~present_BxUxD[:, g.cell_units].any(2) & (board == 0)[..., None]
  naked_BxN = cand_BxNxD.sum(-1) == 1
  once_BxUxD = cand_BxNxD[:, g.units].sum(2) == 1
  hidden_BxN = (cand_BxNxD[:, :, None] & once_BxUxD[:, g.cell_units]).any((2, 3))
  return naked_BxN | hidden_BxN


def forced_order(g: ss.Geometry, puzzle_BxN: np.ndarray, solution_BxN: np.ndarray,
                 fallback_BxN: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """int64[B, N]: givens first (row-major), then one empty cell at a time, drawn
  uniformly among the cells `forced_cells` finds on the board filled so far (with
  the solution's digits); where none is forced, the first empty cell of
  `fallback_BxN` (a cell order, e.g. the solver's) comes next."""
  board = np.asarray(puzzle_BxN).astype(np.int64).copy()
  solution = np.asarray(solution_BxN).astype(np.int64)
  num, cells = board.shape
  rank_BxN = np.empty((num, cells), np.int64)
  rank_BxN[np.arange(num)[:, None], np.asarray(fallback_BxN)] = np.arange(cells)
  given = board > 0
  out = np.argsort(np.where(given, 0, 1) * cells + np.arange(cells), axis=1)
  pos = given.sum(1)
  rows = np.arange(num)
  while True:
    empty = board == 0
    live = empty.any(1)
    if not live.any():
      return out
    forced = forced_cells(g, board)  # none on a finished board
    score = np.where(forced, rng.random((num, cells)), -1.0)
    pick = np.where(forced.any(1), score.argmax(1),
                    np.where(empty, rank_BxN, cells * 2).argmin(1))
    r, c = rows[live], pick[live]
    board[r, c] = solution[r, c]
    out[r, pos[r]] = c
    pos[r] += 1


# ----------------------------------------------------------------------------------
# The task.


@register("sudoku")
class SudokuTask(Task):
  """Sudoku with box_rows x box_cols boxes (n = box_rows*box_cols digits).

  MDM layout: n*n tokens, token = digit - 1, MASK = n (vocab n+1); clue cells are
  not maskable. ARM layout (Shah et al.): n*n (row, col, value) triples, 3*n*n tokens;
  row and column ids 0..n-1, values 1..n, id n+1 reserved (vocab n+2, i.e. 11 for
  9x9 as in the paper); givens first in row-major order, then the empty cells in
  'solver' order (the strategy solver's fill order; cells it cannot fill follow in
  row-major order), 'forced' order (one cell at a time, drawn at random among the
  cells a naked or hidden single forces on the board so far, freshly for every
  batch; `forced_order`), 'row_major' or 'random' order.

  `arm_vocab='by_role'` gives each role its own ids (rows 0..n-1, columns n..2n-1,
  values 2n..3n-1; vocab 3n), so that a token says by itself whether it names a row,
  a column or a digit. `arm_vocab='cell'` writes each cell as one token: (cell,
  value) pairs, cell ids r*n + c in 0..n*n-1 and values n*n..n*n+n-1 (vocab n*n+n,
  2*n*n tokens), so that one embedding names the cell, as a position does for the
  MDM. `arm_vocab='joint'` writes each filled cell as a single token (cell, value)
  -> cell*n + value - 1 (vocab n**3, n*n tokens): the model then predicts the next
  cell and its value as one choice, and one embedding carries both (a causal model
  needs no previous-token attention to pair them). The default 'shared' is the
  paper's layout. The choice changes only the ARM
  tokens, not the data (`data_params` leaves it out of the cache key).
  """

  name = "sudoku"
  splits = ("train", "test", "hard")
  arm_orderings = ("solver", "forced", "row_major", "random")
  arm_vocabs = ("shared", "by_role", "cell", "joint")

  def __init__(self, box_rows: int = 3, box_cols: int = 3, arm_vocab: str = "shared"):
    for v in (box_rows, box_cols):
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise ValueError(f"box_rows and box_cols must be integers, got {v!r}")
    if not (box_rows >= 2 and box_cols >= 2 and box_rows * box_cols <= 9):
      raise ValueError(f"box shape {box_rows}x{box_cols} not supported; need "
                       "box_rows, box_cols >= 2 and box_rows*box_cols <= 9")
    if arm_vocab not in self.arm_vocabs:
      raise ValueError(f"arm_vocab={arm_vocab!r}; choose one of {', '.join(self.arm_vocabs)}")
    self.box_rows, self.box_cols = int(box_rows), int(box_cols)
    self.arm_vocab = arm_vocab
    self.n = self.box_rows * self.box_cols
    self.geometry = ss.geometry(self.box_rows, self.box_cols)

  def params(self) -> dict[str, Any]:
    p = self.data_params()
    if self.arm_vocab != "shared":
      p["arm_vocab"] = self.arm_vocab
    return p

  def data_params(self) -> dict[str, Any]:
    return {"box_rows": self.box_rows, "box_cols": self.box_cols}

  @property
  def _arm_width(self) -> int:
    """ARM tokens per cell: (row, col, value); (cell, value) for arm_vocab 'cell'; one
    for 'joint'."""
    return {"cell": 2, "joint": 1}.get(self.arm_vocab, 3)

  def _arm_tokens(self, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int64[N, C, width]: the ARM tokens of (cell, value) pairs."""
    n = self.n
    if self.arm_vocab == "joint":
      return (cells * n + values - 1)[..., None]
    if self.arm_vocab == "cell":
      return np.stack([cells, n * n + values - 1], -1)
    offsets = np.array([0, n, 2 * n - 1] if self.arm_vocab == "by_role" else [0, 0, 0])
    return np.stack([cells // n, cells % n, values], -1) + offsets

  def _arm_cells(self, groups: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, col, value) of int64[N, K, width] token groups (out of range where the
    tokens are not a valid cell or value)."""
    n = self.n
    if self.arm_vocab == "joint":
      t = groups[..., 0]
      bad = (t < 0) | (t >= n ** 3)
      cell = t // n
      return (np.where(bad, -1, cell // n), np.where(bad, -1, cell % n),
              np.where(bad, -1, t % n + 1))
    if self.arm_vocab == "cell":
      cell, v = groups[..., 0], groups[..., 1] - n * n + 1
      bad = (cell < 0) | (cell >= n * n)
      return np.where(bad, -1, cell // n), np.where(bad, -1, cell % n), v
    offsets = np.array([0, n, 2 * n - 1] if self.arm_vocab == "by_role" else [0, 0, 0])
    g = groups - offsets
    return g[..., 0], g[..., 1], g[..., 2]

  # -- data ----------------------------------------------------------------------
  def generate(self, split: str, num: int, seed: int, *,
               workers: int | None = None) -> Examples:
    self.validate_split(split)
    for name, v in (("num", num), ("seed", seed)):
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return generate_examples(self.box_rows, self.box_cols, split, int(num), int(seed),
                             workers=workers)

  def load_puzzle_file(self, path: str) -> Examples:
    return load_puzzle_file(path, self.box_rows, self.box_cols)

  def preferred_shard_size(self, split: str) -> int:
    """9x9: one easy generation block (4,096) per shard, for every split; smaller
    boxes keep the general default (1,000, which their stored datasets use)."""
    if self.n >= 9:
      return block_size(self.geometry, "train")
    return super().preferred_shard_size(split)

  def data_identity(self, split: str) -> dict[str, Any]:
    return {"hard_generator_version": HARD_GENERATOR_VERSION} if split == "hard" else {}

  def _check_examples(self, examples: Examples) -> None:
    for key in ("puzzle", "solution"):
      if key not in examples:
        raise ValueError(f"Sudoku examples need key {key!r}; got {sorted(examples)}")
      if np.ndim(examples[key]) != 2 or np.shape(examples[key])[1] != self.n ** 2:
        raise ValueError(f"examples[{key!r}] must have shape [N, {self.n ** 2}], got "
                         f"{np.shape(examples[key])}")

  # -- MDM -----------------------------------------------------------------------
  def mdm_layout(self) -> Layout:
    return Layout(seq_len=self.n ** 2, vocab_size=self.n + 1, mask_id=self.n)

  def mdm_encode(self, examples: Examples) -> dict[str, np.ndarray]:
    self._check_examples(examples)
    return {"tokens": np.asarray(examples["solution"], np.int32) - 1,
            "maskable": np.asarray(examples["puzzle"]) == 0}

  def check(self, examples: Examples, tokens_NxL: np.ndarray) -> dict[str, np.ndarray]:
    self._check_examples(examples)
    tokens = np.asarray(tokens_NxL)
    puzzle = np.asarray(examples["puzzle"])
    if tokens.shape != puzzle.shape:
      raise ValueError(f"tokens must have shape {puzzle.shape}, got {tokens.shape}")
    g, n = self.geometry, self.n
    valid = (tokens >= 0) & (tokens < n)
    bits = np.where(valid, np.left_shift(1, np.clip(tokens, 0, n - 1)), 0)
    units = bits[:, g.units]  # [N, 3n, n]
    complete = (np.bitwise_or.reduce(units, axis=2) == g.full).all(1) & valid.all(1)
    givens_kept = ((puzzle == 0) | (tokens == puzzle - 1)).all(1)
    return {"solved": complete & givens_kept,
            "correct": tokens == np.asarray(examples["solution"]) - 1}

  def answer_grid(self) -> tuple[int, int, np.ndarray, tuple[int, int]]:
    return self.n, self.n, np.arange(self.n * self.n), (self.box_rows, self.box_cols)

  def position_groups(self) -> np.ndarray:
    """int[n*n, 3]: each cell's row r, column n + c and box 2n + b."""
    cells = np.arange(self.n * self.n)
    r, c = cells // self.n, cells % self.n
    b = (r // self.box_rows) * (self.n // self.box_cols) + c // self.box_cols
    return np.stack([r, self.n + c, 2 * self.n + b], -1)

  def token_groups(self, objective: str) -> np.ndarray | None:
    """ARM cell tokens of `arm_vocab` 'cell' and 'joint' carry their cell's row, column
    and box (`position_groups`); value tokens none. None for 'shared' / 'by_role',
    whose tokens name a row or a column, not a cell, and for the MDM's digits."""
    if objective != "arm":
      return None
    cell_groups = self.position_groups()
    n = self.n
    if self.arm_vocab == "cell":
      return np.concatenate([cell_groups, np.full((n, 3), -1)])
    if self.arm_vocab == "joint":
      return np.repeat(cell_groups, n, axis=0)  # token cell * n + value - 1
    return None

  def rule_mask_fn(self) -> Any:
    """allowed(tokens_BxL) -> bool[B, n*n, n + 1]: in each cell the digits that no
    filled peer (same row, column or box) holds; MASK is never allowed."""
    if getattr(self, "_rule_mask", None) is None:
      g = self.geometry
      peers_LxL = np.zeros((g.num_cells, g.num_cells), np.float32)
      peers_LxL[np.arange(g.num_cells)[:, None], g.peers] = 1.0
      self._rule_mask = functools.partial(_rule_mask, peers_LxL=peers_LxL, n=self.n)
    return self._rule_mask

  def solver_rank(self, examples: Examples) -> np.ndarray | None:
    """The seven-strategy solver's fill step of each cell (-1: given or not filled)."""
    if "order" not in examples:
      return None
    self._check_examples(examples)
    order = np.asarray(examples["order"])
    puzzle = np.asarray(examples["puzzle"])
    num, cells = puzzle.shape
    rank = np.full((num, cells), -1, np.int64)
    ok = order[..., 0] >= 0
    cell = np.where(ok, order[..., 0] * self.n + order[..., 1], 0).astype(np.int64)
    ex, t = np.nonzero(ok)
    rank[ex, cell[ex, t]] = t
    return np.where(puzzle == 0, rank, -1)

  # -- ARM -----------------------------------------------------------------------
  def arm_layout(self, ordering: str) -> Layout:
    self._validate_ordering(ordering)
    n = self.n
    vocab = {"shared": n + 2, "by_role": 3 * n, "cell": n * n + n,
             "joint": n ** 3}[self.arm_vocab]
    return Layout(seq_len=self._arm_width * n * n, vocab_size=vocab)

  def _validate_ordering(self, ordering: str) -> None:
    if ordering not in self.arm_orderings:
      raise ValueError(f"unknown ordering {ordering!r}; choose one of "
                       f"{', '.join(self.arm_orderings)}")

  def cell_order(self, examples: Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """int64[N, n*n]: the cells in ARM order (givens first, row-major)."""
    self._validate_ordering(ordering)
    puzzle = np.asarray(examples["puzzle"])
    num, cells = puzzle.shape
    given = puzzle > 0
    key = np.where(given, 0, cells + 1) * cells * 2  # givens, then the rest
    if ordering == "solver":
      if "order" not in examples:
        raise ValueError("ordering 'solver' needs examples['order']")
      order = np.asarray(examples["order"])
      ok = order[..., 0] >= 0
      cell = np.where(ok, order[..., 0] * self.n + order[..., 1], 0)
      rank = np.full((num, cells), cells, np.int64)  # unfilled: after, row-major
      rows = np.nonzero(ok)
      rank[rows[0], cell[rows]] = rows[1]
      key = key + rank * cells
    elif ordering == "random":
      rng = rng if rng is not None else np.random.default_rng(0)
      key = key + (rng.random((num, cells)) * cells).astype(np.int64) * cells
    elif ordering == "forced":
      rng = rng if rng is not None else np.random.default_rng(0)
      fallback = self.cell_order(examples, "solver")
      return forced_order(self.geometry, puzzle, np.asarray(examples["solution"]),
                          fallback, rng)
    return np.argsort(key + np.arange(cells), axis=1)

  def arm_encode(self, examples: Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """rng is used by ordering 'random' (default: np.random.default_rng(0))."""
    self._check_examples(examples)
    cells = self.cell_order(examples, ordering, rng)
    sol = np.take_along_axis(np.asarray(examples["solution"], np.int64), cells, 1)
    tokens = self._arm_tokens(cells, sol).reshape(cells.shape[0], -1).astype(np.int32)
    prompt_len = (self._arm_width * (np.asarray(examples["puzzle"]) > 0).sum(1)
                  ).astype(np.int32)
    loss_mask = np.arange(tokens.shape[1])[None] >= prompt_len[:, None]
    return {"tokens": tokens, "loss_mask": loss_mask, "prompt_len": prompt_len}

  def arm_pick_keys(self) -> int | None:
    """n * n for `arm_vocab='cell'` ((cell id, digit) pairs); None otherwise."""
    return self.n * self.n if self.arm_vocab == "cell" else None

  def arm_legal_fn(self) -> Any:
    """Greedy ARM decoding's legal moves in every `arm_vocab`: a row that still has an
    empty cell, then a column whose cell in that row is empty, then a digit; or an
    empty cell's id, then a digit ('cell'); or an empty cell with any digit ('joint')."""
    if getattr(self, "_legal", None) is None:
      self._legal = functools.partial(_arm_legal, n=self.n, vocab=self.arm_vocab,
                                      vocab_size=self.arm_layout("row_major").vocab_size)
    return self._legal

  def arm_decode(self, examples: Examples, tokens_NxLp: np.ndarray) -> np.ndarray:
    """Reads the answer triples; the first valid triple for an empty cell wins.
    Triples with out-of-range ids or aimed at clue cells are ignored; cells no
    triple fills are MASK (and so score as wrong)."""
    self._check_examples(examples)
    tokens = np.asarray(tokens_NxLp)
    puzzle = np.asarray(examples["puzzle"])
    num, n = puzzle.shape[0], self.n
    w = self._arm_width
    if tokens.ndim != 2 or tokens.shape[0] != num or tokens.shape[1] < w:
      raise ValueError(f"tokens must have shape [{num}, {w}*k], got {tokens.shape}")
    trip = tokens[:, :tokens.shape[1] // w * w].reshape(num, -1, w).astype(np.int64)
    r, c, v = self._arm_cells(trip)
    prompt = (puzzle > 0).sum(1)
    ok = ((r >= 0) & (r < n) & (c >= 0) & (c < n) & (v >= 1) & (v <= n)
          & (np.arange(trip.shape[1])[None] >= prompt[:, None]))
    cell = np.where(ok, r * n + c, 0)
    ok &= np.take_along_axis(puzzle, cell, 1) == 0
    out = np.where(puzzle > 0, puzzle.astype(np.int32) - 1, n)
    ex, t = np.nonzero(ok)
    key = ex * n * n + cell[ex, t]
    _, first = np.unique(key, return_index=True)  # np.nonzero keeps t ascending
    out[ex[first], cell[ex[first], t[first]]] = v[ex[first], t[first]] - 1
    return out.astype(np.int32)

  # -- symmetries ------------------------------------------------------------------
  def augment(self, examples: Examples, rng: np.random.Generator) -> Examples:
    self._check_examples(examples)
    src, dmap = random_symmetry(self.geometry, np.shape(examples["puzzle"])[0], rng)
    return apply_symmetry(examples, src, dmap)


def _rule_mask(tokens_BxL: Any, *, peers_LxL: np.ndarray, n: int) -> Any:
  """bool[B, L, n + 1]: digits no filled peer holds (`SudokuTask.rule_mask_fn`)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  held_BxLxD = (tokens_BxL[..., None] == jnp.arange(n)).astype(jnp.float32)
  taken_BxLxD = jnp.einsum("lm,bmd->bld", jnp.asarray(peers_LxL), held_BxLxD) > 0
  return jnp.concatenate([~taken_BxLxD, jnp.zeros(taken_BxLxD.shape[:2] + (1,), bool)], -1)


def _arm_legal(tokens_BxL: Any, pos: Any, *, n: int, vocab: str, vocab_size: int) -> Any:
  """bool[B, vocab_size]: the legal tokens at position `pos` (see
  `SudokuTask.arm_legal_fn`), from the complete cell groups before `pos`; traceable."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  b, length = tokens_BxL.shape
  w = {"cell": 2, "joint": 1}.get(vocab, 3)
  k = length // w
  groups_BxKxW = tokens_BxL[:, :k * w].reshape(b, k, w)
  if vocab == "joint":
    cell_BxK = groups_BxKxW[..., 0] // n
    ok_BxK = (groups_BxKxW[..., 0] >= 0) & (groups_BxKxW[..., 0] < n ** 3)
  elif vocab == "cell":
    cell_BxK = groups_BxKxW[..., 0]
    ok_BxK = (cell_BxK >= 0) & (cell_BxK < n * n)
  else:
    col_off = n if vocab == "by_role" else 0
    r_BxK, c_BxK = groups_BxKxW[..., 0], groups_BxKxW[..., 1] - col_off
    ok_BxK = (r_BxK >= 0) & (r_BxK < n) & (c_BxK >= 0) & (c_BxK < n)
    cell_BxK = r_BxK * n + c_BxK
  ok_BxK &= (jnp.arange(k) < pos // w)[None]
  filled_BxC = jnp.any((cell_BxK[..., None] == jnp.arange(n * n)) & ok_BxK[..., None], 1)
  empty_BxC = ~filled_BxC

  def place(mask_BxM: Any, offset: int) -> Any:
    m = mask_BxM.shape[1]
    return jnp.pad(mask_BxM, ((0, 0), (offset, vocab_size - offset - m)))

  digits_Bxn = jnp.ones((b, n), bool)
  if vocab == "joint":
    return place(jnp.repeat(empty_BxC, n, axis=1), 0)
  slot = pos % w
  if vocab == "cell":
    return jnp.where(slot == 0, place(empty_BxC, 0), place(digits_Bxn, n * n))
  col_off, value_off = (n, 2 * n - 1) if vocab == "by_role" else (0, 0)
  empty_Bxnxn = empty_BxC.reshape(b, n, n)
  prev_B = tokens_BxL[:, jnp.maximum(pos - 1, 0)]
  row_B = jnp.clip(prev_B, 0, n - 1)
  cols_Bxn = jnp.take_along_axis(empty_Bxnxn, row_B[:, None, None], axis=1)[:, 0]
  return jnp.where(slot == 0, place(empty_Bxnxn.any(2), 0),
                   jnp.where(slot == 1, place(cols_Bxn, col_off),
                             place(digits_Bxn, value_off + 1)))

