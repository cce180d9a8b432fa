"""Batched Sudoku machinery in numpy: bitmask candidates, the seven-strategy solver,
solution counters and a randomised grid filler.

Grids are int8[B, N] with N = n*n cells in row-major order, 0 = blank and 1..n the
digits, for boxes of `box_rows` x `box_cols` cells (n = box_rows * box_cols <= 16).
Candidate sets are uint16 bitmasks per cell (digit d <-> bit d-1). Every routine works
on a whole batch of grids at once; Python loops run over solver steps, never over grids.
Internally arrays are cell-major, [N, B] (`_NxB`), so that every unit reduction runs
over contiguous batch vectors.

Strategy ids (Shah et al. 2024): 0 given, 2 lone (naked) single, 3 hidden single,
4 naked pair, 5 naked triple, 6 locked candidate (pointing and claiming), 7 XY-wing,
8 unique rectangle (type 1). The solver works in steps; each step applies the simplest
strategy that makes progress on that grid: it places EVERY lone single (or, if there is
none, every hidden single) at once, or else applies one elimination strategy
everywhere it fires. The strategy id of a placed cell is the hardest strategy used
since the previous placement step, counting the single that placed it: e.g. a hidden
single found after a naked-pair elimination gets id 4.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

GIVEN, LONE_SINGLE, HIDDEN_SINGLE, NAKED_PAIR, NAKED_TRIPLE = 0, 2, 3, 4, 5
LOCKED_CANDIDATE, XY_WING, UNIQUE_RECTANGLE = 6, 7, 8
BEYOND = 9  # rating of a puzzle the seven strategies cannot finish
STRATEGY_NAMES = {
    GIVEN: "given", LONE_SINGLE: "lone single", HIDDEN_SINGLE: "hidden single",
    NAKED_PAIR: "naked pair", NAKED_TRIPLE: "naked triple",
    LOCKED_CANDIDATE: "locked candidate", XY_WING: "XY-wing",
    UNIQUE_RECTANGLE: "unique rectangle", BEYOND: "beyond the seven strategies",
}
SOLVED, STUCK, CONTRADICTION, TARGET_REACHED = 0, 1, 2, 3
MAX_N = 16


@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
  """Static index arrays and bit tables of one box shape."""
  box_rows: int
  box_cols: int
  n: int
  num_cells: int
  full: int  # bitmask of all digits
  units: np.ndarray  # int[3n, n]: rows, then columns, then boxes (cell ids)
  peers: np.ndarray  # int[N, P]: the cells sharing a unit with each cell
  peer_bits: np.ndarray  # uint64[N, W]: each cell's peers as a little-endian bitset
  unit_pos: np.ndarray  # int[N, 3]: where each cell sits in units.ravel()
  cell_units: np.ndarray  # int[N, 3]: the row, column and box unit of each cell
  popcount: np.ndarray  # uint8[2^n]
  lowest: np.ndarray  # int8[2^n]: index of the lowest set bit (-1 for 0)
  nth_bit: np.ndarray  # int8[2^n, n]: index of the r-th set bit

  def shape5(self, b: int) -> tuple[int, ...]:
    """[band, row-in-band, stack, col-in-stack, B] view of an [N, B] array."""
    return (self.box_cols, self.box_rows, self.box_rows, self.box_cols, b)


@functools.lru_cache(maxsize=None)
def geometry(box_rows: int, box_cols: int) -> Geometry:
  if box_rows < 1 or box_cols < 1 or box_rows * box_cols > MAX_N:
    raise ValueError(f"box shape {box_rows}x{box_cols} not supported; need "
                     f"1 <= box_rows*box_cols <= {MAX_N}")
  n = box_rows * box_cols
  cells = np.arange(n * n).reshape(n, n)
  boxes = (cells.reshape(box_cols, box_rows, box_rows, box_cols)
           .transpose(0, 2, 1, 3).reshape(n, n))
  units = np.concatenate([cells, cells.T, boxes])
  member = np.zeros((n * n, n * n), bool)
  for unit in units:
    member[np.ix_(unit, unit)] = True
  np.fill_diagonal(member, False)
  peers = np.stack([np.nonzero(row)[0] for row in member])
  size = 1 << n
  masks = np.arange(size)
  bits = (masks[:, None] >> np.arange(n)) & 1
  popcount = bits.sum(1).astype(np.uint8)
  lowest = np.where(masks > 0, np.argmax(bits, 1), -1).astype(np.int8)
  nth_bit = np.full((size, n), -1, np.int8)
  rank = np.cumsum(bits, 1) - 1
  rows, cols = np.nonzero(bits)
  nth_bit[rows, rank[rows, cols]] = cols
  unit_pos = np.argsort(units.ravel(), kind="stable").reshape(n * n, 3)
  words = -(-n * n // 64)
  padded = np.zeros((n * n, words * 64), bool)
  padded[:, :n * n] = member
  peer_bits = np.packbits(padded, axis=1, bitorder="little").view(np.uint64)
  return Geometry(box_rows, box_cols, n, n * n, size - 1, units, peers,
                  peer_bits, unit_pos, unit_pos // n, popcount, lowest, nth_bit)


# ----------------------------------------------------------------------------------
# Helpers on cell-major [N, B] uint16 arrays. Selections use bit masks, not np.where
# (which is an order of magnitude slower on these shapes). `check` switches on the
# consistency checks, which sound deductions on a consistent puzzle never trip.

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0


def _pc(g: Geometry, a: np.ndarray) -> np.ndarray:
  return np.bitwise_count(a) if _HAS_BITWISE_COUNT else g.popcount[a]


def _nonzero(a: np.ndarray) -> tuple[np.ndarray, ...]:
  """np.nonzero, several times faster for arrays of two or more dimensions."""
  return np.unravel_index(np.flatnonzero(a), a.shape)


def _m16(b: np.ndarray) -> np.ndarray:
  """bool -> uint16 mask (0 or 0xFFFF)."""
  return b.astype(np.uint16) * np.uint16(0xFFFF)


def _unit_or(g: Geometry, a: np.ndarray) -> np.ndarray:
  """[N, B] -> [3n, B] OR over each unit."""
  return np.bitwise_or.reduce(a[g.units], axis=1)


def _once_twice(xs):
  """(bits set in some x, bits set in two or more x's) over an iterable of arrays."""
  it = iter(xs)
  once = next(it).copy()
  twice = np.zeros_like(once)
  for x in it:
    twice |= once & x
    once |= x
  return once, twice


def _unit_once_twice(g: Geometry, a: np.ndarray):
  """[N, B] -> ([3n, B] bits set in some cell, bits set in two or more cells)."""
  au = a[g.units]
  return _once_twice(au[:, i] for i in range(g.n))


def _to_cells(g: Geometry, per_unit: np.ndarray) -> np.ndarray:
  """[3n, B] -> [N, B]: OR of the values of each cell's three units."""
  cu = g.cell_units
  return per_unit[cu[:, 0]] | per_unit[cu[:, 1]] | per_unit[cu[:, 2]]


def _eliminate_peers(g: Geometry, c: np.ndarray, pm: np.ndarray, check: bool = True):
  """Removes placed digits from their peers' candidates -> (cand, duplicate bool[B])."""
  vals = c & pm
  if check:
    used, twice = _unit_once_twice(g, vals)
    dup = (twice != 0).any(0)
  else:
    used, dup = _unit_or(g, vals), np.zeros(c.shape[1], bool)
  return c & ~(_to_cells(g, used) & ~pm), dup


def _initial_state(g: Geometry, grid_BxN: np.ndarray, check: bool = True):
  """Puzzles -> (cand uint16[N,B], placed mask uint16[N,B], contradictory bool[B])."""
  grid = np.ascontiguousarray(np.asarray(grid_BxN, np.int8).T)
  bits = np.left_shift(np.uint16(1), np.maximum(grid, 1).astype(np.uint16) - 1)
  pm = _m16(grid > 0)
  c = (bits & pm) | (np.uint16(g.full) & ~pm)
  c, dup = _eliminate_peers(g, c, pm, check)
  return c, pm, dup


def _singles(g: Geometry, c: np.ndarray, pm: np.ndarray, check: bool = True):
  """Lone and hidden singles of every grid.

  -> (lone bool[N,B], hidden uint16[N,B] (forced digit bit, 0 if none), bad bool[B]).
  bad (check only): a cell without candidates, a digit with no place in a unit, or a
  cell forced to two digits.
  """
  free = c & ~pm
  once, twice = _unit_once_twice(g, free)
  hidden = free & _to_cells(g, once & ~twice)
  lone = _pc(g, free) == 1
  if check:
    bad = ((c == 0).any(0) | (_unit_or(g, c) != g.full).any(0)
           | (_pc(g, hidden) > 1).any(0))
  else:
    bad = np.zeros(c.shape[1], bool)
  return lone, hidden, bad


def _digits(g: Geometry, c: np.ndarray, pm: np.ndarray) -> np.ndarray:
  """-> int8[B, N] digits (0 where not placed)."""
  return ((g.lowest[c] + 1).astype(np.int8) * (pm != 0)).T.copy()


def _positions_to_cells(g: Geometry, per_pos: np.ndarray) -> np.ndarray:
  """[3n, n, G] values at unit positions -> [N, G] OR over each cell's 3 units."""
  flat = per_pos.reshape(-1, per_pos.shape[-1])
  pos = g.unit_pos
  return flat[pos[:, 0]] | flat[pos[:, 1]] | flat[pos[:, 2]]


# ----------------------------------------------------------------------------------
# Elimination strategies: each maps the free candidates (0 on placed cells) of G grids
# without lone singles, uint16[N, G], to the bits it removes, uint16[N, G].


@functools.lru_cache(maxsize=None)
def _subset_tables(n: int) -> np.ndarray:
  return np.array(list(itertools.combinations(range(n), 2)), np.int64)


def _naked_subset(g: Geometry, free: np.ndarray, k: int) -> np.ndarray:
  """k cells of a unit whose candidates together hold k digits (k=2 pair, 3 triple):
  those digits leave the unit's other cells.

  Every free cell has >= 2 candidates here, so k cells with a k-digit union form a
  naked subset. In a consistent state the naked subsets of a unit are disjoint and
  the cells whose candidates lie inside their union `total` are exactly their
  members, so every other cell of the unit loses `total`.
  """
  pairs = _subset_tables(g.n)
  every = free[g.units]  # [3n, n, G]
  fu = every & _m16(_pc(g, every) <= k)  # cells that may belong to a k-subset
  total = np.zeros((fu.shape[0], fu.shape[2]), np.uint16)
  if k == 2:
    for i, j in pairs:
      total |= fu[:, i] & _m16(fu[:, i] == fu[:, j])
  else:
    # Only units with >= 5 free cells (else a hidden single would be left) and >= 3
    # candidate cells; there, pairs of cells with at most three digits between them,
    # extended by a later third cell.
    unit_ok = ((every != 0).sum(1) >= 5) & ((fu != 0).sum(1) >= 3)
    ui, gi = _nonzero(unit_ok)
    if ui.size == 0:
      return np.zeros_like(free)
    fk = fu[ui, :, gi]  # [K, n]
    a, b = fk[:, pairs[:, 0]], fk[:, pairs[:, 1]]
    union2 = a | b
    hk, pk = _nonzero((a != 0) & (b != 0) & (_pc(g, union2) <= 3))
    f3 = fk[hk]  # [H, n]
    u3 = union2[hk, pk][:, None] | f3
    hit = (np.arange(g.n)[None] > pairs[pk, 1][:, None]) & (f3 != 0)
    hi, li = _nonzero(hit & (_pc(g, u3) == 3))
    tk = np.zeros(ui.size, np.uint16)
    np.bitwise_or.at(tk, hk[hi], u3[hi, li])
    total[ui, gi] = tk
  if not total.any():
    return np.zeros_like(free)
  outside = every & ~total[:, None]
  return _positions_to_cells(g, total[:, None] & _m16(outside != 0))


def _locked_2d(free3: np.ndarray, br: int, bc: int) -> np.ndarray:
  """Pointing and claiming along the rows of [n, n, G] grids with br x bc boxes."""
  n, gs = free3.shape[0], free3.shape[2]
  shape5 = (n // br, br, n // bc, bc, gs)
  mini = np.bitwise_or.reduce(free3.reshape(shape5), axis=3)  # [band, r, stack, G]
  # Pointing: a digit of a box lies in one mini-row -> not elsewhere in that row.
  once, twice = _once_twice(mini[:, i] for i in range(br))
  point = mini & (once & ~twice)[:, None]
  elim = np.bitwise_or.reduce(point, axis=2)[:, :, None] & ~point
  # Claiming: a digit of a row lies in one box -> not elsewhere in that box.
  once, twice = _once_twice(mini[:, :, i] for i in range(n // bc))
  claim = mini & (once & ~twice)[:, :, None]
  elim |= np.bitwise_or.reduce(claim, axis=1)[:, None] & ~claim
  return np.broadcast_to(elim[:, :, :, None], shape5).reshape(n, n, gs)


def _locked_candidates(g: Geometry, free: np.ndarray) -> np.ndarray:
  gs = free.shape[1]
  free3 = free.reshape(g.n, g.n, gs)
  elim = _locked_2d(free3, g.box_rows, g.box_cols)
  elim |= _locked_2d(np.ascontiguousarray(free3.transpose(1, 0, 2)), g.box_cols,
                     g.box_rows).transpose(1, 0, 2)
  return elim.reshape(g.num_cells, gs)


def _xy_wing(g: Geometry, free: np.ndarray) -> np.ndarray:
  """Pivot {x,y} seeing pincers {x,z} and {y,z}: z leaves every cell seeing both."""
  num = free.shape[0]
  bv = free & _m16(_pc(g, free) == 2)
  pi, gi = _nonzero(bv)
  if pi.size == 0:
    return np.zeros_like(free)
  mp = bv[pi, gi]
  fp = bv[g.peers[pi], gi[:, None]]  # [K, P] bivalue peers (0 if not)
  valid = _pc(g, fp & mp[:, None]) == 1
  z = fp & ~mp[:, None] & _m16(valid)
  side0 = (fp & mp[:, None]) == (mp & (~mp + np.uint16(1)))[:, None]  # shares low digit
  z0 = np.bitwise_or.reduce(z & _m16(side0), axis=1)
  z1 = np.bitwise_or.reduce(z & _m16(~side0), axis=1)
  both = z0 & z1
  hit = np.nonzero(both)[0]
  if hit.size == 0:
    return np.zeros_like(free)
  nz = _pc(g, both[hit]).astype(np.int64)
  hk = np.repeat(hit, nz)  # one wing per (pivot, z)
  rank = np.arange(hk.size) - np.repeat(np.cumsum(nz) - nz, nz)
  zbit = np.left_shift(np.uint16(1), g.nth_bit[both[hk], rank].astype(np.uint16))
  is_z = z[hk] == zbit[:, None]  # [H, P]: the pincers of each wing
  bits = g.peer_bits[g.peers[pi[hk]]]  # [H, P, W]: peer sets of the pivot's peers
  zero = np.uint64(0)
  seen0 = np.bitwise_or.reduce(np.where((is_z & side0[hk])[..., None], bits, zero), 1)
  seen1 = np.bitwise_or.reduce(np.where((is_z & ~side0[hk])[..., None], bits, zero), 1)
  both_seen = np.unpackbits((seen0 & seen1).view(np.uint8), axis=1,
                            bitorder="little")[:, :num].astype(bool)
  target = both_seen & ((free[:, gi[hk]].T & zbit[:, None]) != 0)
  ti, ci = _nonzero(target)
  out = np.zeros_like(free)
  np.bitwise_or.at(out, (ci, gi[hk][ti]), zbit[ti])
  return out


def _unique_rectangle(g: Geometry, free: np.ndarray) -> np.ndarray:
  """Type 1: three corners of a rectangle on two rows, two columns and two boxes hold
  exactly {a,b}, the fourth more: it loses a and b (else the puzzle would have two
  solutions). Two of the three lie in one row: found as equal bivalue row pairs."""
  n, gs = g.n, free.shape[1]
  pairs = _subset_tables(n)
  c1, c2 = pairs[:, 0], pairs[:, 1]
  bv = (free & _m16(_pc(g, free) == 2)).reshape(n, n, gs)
  ri, pi, gi = _nonzero((bv[:, c1] == bv[:, c2]) & (bv[:, c1] != 0))
  out = np.zeros_like(free)
  if ri.size == 0:
    return out
  m = bv[ri, c1[pi], gi][:, None]
  a, b = c1[pi][:, None], c2[pi][:, None]
  r2 = np.arange(n)[None]
  same_stack = (a // g.box_cols) == (b // g.box_cols)
  same_band = (r2 // g.box_rows) == (ri[:, None] // g.box_rows)
  ok = (r2 != ri[:, None]) & (same_band != same_stack)  # exactly two boxes
  f3 = free.reshape(n, n, gs)
  x, y = f3[r2, a, gi[:, None]], f3[r2, b, gi[:, None]]  # [H, n]
  for floor, roof, col in ((x, y, b), (y, x, a)):
    hit = ok & (floor == m) & ((roof & m) == m) & (_pc(g, roof) > 2)
    hi, li = _nonzero(hit)
    np.bitwise_or.at(out, (li * n + col[hi, 0], gi[hi]), m[hi, 0])
  return out


_ELIMINATIONS = {
    NAKED_PAIR: lambda g, f: _naked_subset(g, f, 2),
    NAKED_TRIPLE: lambda g, f: _naked_subset(g, f, 3),
    LOCKED_CANDIDATE: _locked_candidates,
    XY_WING: _xy_wing,
    UNIQUE_RECTANGLE: _unique_rectangle,
}


def eliminations(g: Geometry, strategy: int, candidates_BxN: np.ndarray) -> np.ndarray:
  """The candidate bits one elimination strategy (ids 4..8) removes, uint16[B, N].

  candidates_BxN: uint16 candidate masks of states without lone singles; cells with
  one candidate count as placed.
  """
  if strategy not in _ELIMINATIONS:
    raise ValueError(f"strategy {strategy} is not an elimination strategy (4..8)")
  c = np.ascontiguousarray(np.asarray(candidates_BxN, np.uint16).T)
  free = c & ~_m16(_pc(g, c) == 1)
  return (_ELIMINATIONS[strategy](g, free) & free).T.copy()


# ----------------------------------------------------------------------------------
# The strategy solver.


@dataclasses.dataclass
class SolveResult:
  grid: np.ndarray  # int8[B, N]: digits known at the end (0 where not found)
  status: np.ndarray  # int8[B]: SOLVED, STUCK, CONTRADICTION or TARGET_REACHED
  step: np.ndarray  # int16[B, N]: step that placed the cell (0 givens, -1 never)
  strategy: np.ndarray  # int8[B, N]: strategy id of the cell (0 givens, -1 never)
  max_strategy: np.ndarray  # int8[B]: hardest strategy used (BEYOND if not solved)
  used: np.ndarray  # int16[B]: bit s set iff strategy s was used

  @property
  def solved(self) -> np.ndarray:
    return self.status == SOLVED


_SIMPLEST_FIRST = (NAKED_PAIR, NAKED_TRIPLE, LOCKED_CANDIDATE, XY_WING,
                   UNIQUE_RECTANGLE)
# For yes/no solvability the order of the eliminations does not matter: cheapest first.
_CHEAPEST_FIRST = (LOCKED_CANDIDATE, NAKED_PAIR, XY_WING, UNIQUE_RECTANGLE,
                   NAKED_TRIPLE)


def _wave(g: Geometry, c: np.ndarray, pm: np.ndarray, max_level: int, check: bool,
          levels: tuple[int, ...] = _SIMPLEST_FIRST):
  """One solver step on every grid.

  -> (cand, placed mask, placed now bool[N,B], level int8[B], bad bool[B]); level is
  the strategy applied (2/3: singles placed; 4..8: an elimination), 0 when stuck.
  Eliminations are tried in the order `levels`.
  """
  lone, hidden, bad = _singles(g, c, pm, check)
  has_lone = lone.any(0)
  hid = hidden != 0
  place = (lone & has_lone) | (hid & ~has_lone)
  placing = place.any(0) & ~bad
  level = (placing * (HIDDEN_SINGLE - has_lone)).astype(np.int8)
  if placing.any():
    place &= placing
    hm = _m16(hid & place)
    c = (c & ~hm) | (hidden & hm)
    pm = pm | _m16(place)
    c, dup = _eliminate_peers(g, c, pm, check)
    bad |= dup
  # Grids with no single: the simplest elimination strategy that makes progress.
  rest = np.nonzero(~placing & ~bad & (pm == 0).any(0))[0]
  for lvl in levels:
    if rest.size == 0:
      break
    if lvl > max_level:
      continue
    free = c[:, rest] & ~pm[:, rest]
    elim = _ELIMINATIONS[lvl](g, free) & free
    prog = elim.any(0)
    hit = rest[prog]
    c[:, hit] &= ~elim[:, prog]
    level[hit] = lvl
    rest = rest[~prog]
  return c, pm, place, level, bad


def _account(level, pend, used):
  """Updates (pending hardest elimination, used-strategy bits) after a wave."""
  used |= np.left_shift(np.int16(1), level.astype(np.int16)) * (level > 0)
  elim = level > HIDDEN_SINGLE
  pend[elim] = np.maximum(pend[elim], level[elim])
  pend[(level > 0) & ~elim] = 0


def solve(g: Geometry, puzzles_BxN: np.ndarray, *, max_level: int = UNIQUE_RECTANGLE,
          check: bool = True) -> SolveResult:
  """Runs the strategy solver on int8[B, N] puzzles.

  max_level: strategies above this id are not used. check: detect contradictions
  (needed unless every puzzle is known to be consistent).
  """
  puzzles = np.asarray(puzzles_BxN, np.int8)
  b = puzzles.shape[0]
  c, pm, bad0 = _initial_state(g, puzzles, check)
  out_c, out_pm = c.copy(), pm.copy()
  status = np.full(b, STUCK, np.int8)
  status[bad0] = CONTRADICTION
  used = np.zeros(b, np.int16)
  step = np.zeros(c.shape, np.int16)  # accumulated: each cell is placed once
  strat = np.zeros(c.shape, np.int8)
  # Working copies of the unfinished grids, compacted as grids finish.
  idx = np.arange(b)
  st, sg, us = step, strat, used.copy()
  pend = np.zeros(b, np.int8)
  done = bad0.copy()
  wave = 0
  while True:
    full = (pm != 0).all(0)
    finish = done | full
    if finish.any():
      fi = idx[finish]
      out_c[:, fi], out_pm[:, fi], used[fi] = c[:, finish], pm[:, finish], us[finish]
      step[:, fi], strat[:, fi] = st[:, finish], sg[:, finish]
      status[idx[full & ~done]] = SOLVED
      keep = ~finish
      idx, pend, us, done = idx[keep], pend[keep], us[keep], done[keep]
      c, pm, st, sg = c[:, keep], pm[:, keep], st[:, keep], sg[:, keep]
    if idx.size == 0:
      break
    wave += 1
    c, pm, place, level, bad = _wave(g, c, pm, max_level, check)
    st = st + place * np.int16(wave)
    sg = sg + place * np.maximum(level, pend)
    _account(level, pend, us)
    done |= (level == 0) | bad  # stuck or contradiction
    status[idx[bad]] = CONTRADICTION
  known = out_pm != 0
  given = puzzles.T > 0
  step = np.where(known, step, -1).T.copy()
  strat = np.where(known & ~given, strat, np.where(given, GIVEN, -1)).T.astype(np.int8)
  maxs = np.full(b, GIVEN, np.int8)
  for s in range(LONE_SINGLE, UNIQUE_RECTANGLE + 1):
    maxs[((used >> s) & 1).astype(bool)] = s
  maxs[status != SOLVED] = BEYOND
  return SolveResult(_digits(g, out_c, out_pm), status, step, strat, maxs, used)


def strategy_minimal(g: Geometry, solutions_BxN: np.ndarray, rng: np.random.Generator,
                     *, slots: int = 4096) -> np.ndarray:
  """Puzzles from complete grids: clues go in a random order, in chunks that halve
  on failure (down to single clues), while the strategy solver still solves.

  A trial puzzle the solver finishes without the unique-rectangle rule has exactly
  one solution (every step is a sound deduction). That rule presumes uniqueness, so
  trials that needed it are confirmed with `count_solutions`, in batches. A trial
  stops as soon as the solver has placed the removed cells again: the rest of the
  grid then follows as it did before the removal. Trials run in a pool of up to
  `slots` columns that is refilled as trials finish, so that each numpy step works
  on many grids.
  """
  grids = np.asarray(solutions_BxN, np.int8)
  m, cells = grids.shape
  puzzles = grids.copy()
  rank = np.argsort(np.argsort(rng.random((m, cells)), 1), 1)  # removal position
  ptr = np.zeros(m, np.int64)
  chunk = np.full(m, max(1, cells // 4), np.int64)
  queue = 0  # next grid not yet started
  todo = []  # grids whose next trial is ready to start
  pending_grid, pending_trial = [], []  # trials waiting for the counter

  def settle(gi, trials, ok):
    """Applies trial outcomes; returns the grids to run next."""
    nonlocal queue
    k = chunk[gi]
    puzzles[gi[ok]] = trials[ok]
    ptr[gi] += np.where(ok, k, k == 1)
    chunk[gi[~ok]] = np.maximum(1, k[~ok] // 2)
    over = ptr[gi] >= cells  # tried every clue: start a new grid instead
    fresh = np.arange(queue, min(m, queue + int(over.sum())))
    queue += fresh.size
    return [gi[~over], fresh]

  def load(gi):
    pos = rank[gi] - ptr[gi][:, None]
    tgt = (pos >= 0) & (pos < chunk[gi][:, None])
    trial = puzzles[gi] * ~tgt
    c, pm, _ = _initial_state(g, trial, check=False)
    return trial, c, pm, _m16(tgt.T)

  grid = np.zeros(0, np.int64)  # grid of each pool column, -1 when the column is idle
  trial = np.zeros((0, cells), np.int8)
  c = pm = tgt = np.zeros((cells, 0), np.uint16)
  pend, us = np.zeros(0, np.int8), np.zeros(0, np.int16)
  queue = min(slots, m)
  todo = [np.arange(queue)]
  while True:
    ready = np.concatenate(todo) if todo else np.zeros(0, np.int64)
    todo = []
    if ready.size:  # into idle columns first, then new ones
      idle = np.nonzero(grid < 0)[0][:ready.size]
      extra = ready.size - idle.size
      cols = np.concatenate([idle, grid.size + np.arange(extra)])
      if extra:
        grid = np.concatenate([grid, np.full(extra, -1)])
        trial = np.concatenate([trial, np.zeros((extra, cells), np.int8)])
        c, pm, tgt = (np.hstack([x, np.zeros((cells, extra), np.uint16)])
                      for x in (c, pm, tgt))
        pend = np.concatenate([pend, np.zeros(extra, np.int8)])
        us = np.concatenate([us, np.zeros(extra, np.int16)])
      grid[cols] = ready
      trial[cols], c[:, cols], pm[:, cols], tgt[:, cols] = load(ready)
      pend[cols], us[cols] = 0, 0
    live = grid >= 0
    npend = sum(x.size for x in pending_grid)
    if npend and (npend >= max(64, live.sum() // 4) or not live.any()):
      gi, trials = np.concatenate(pending_grid), np.concatenate(pending_trial)
      pending_grid, pending_trial = [], []
      # The puzzle before the trial has one solution (the grid), so a trial without
      # cell x is unique iff no solution puts another digit in x: a cheaper search.
      removed = (trials == 0) & (puzzles[gi] > 0)
      single = removed.sum(1) == 1
      ok = np.zeros(gi.size, bool)
      if single.any():
        exclude = np.where(removed[single], np.left_shift(
            1, np.maximum(grids[gi[single]], 1).astype(np.uint16) - 1), 0)
        other, _ = count_solutions(g, trials[single], limit=1,
                                   exclude_BxN=exclude.astype(np.uint16))
        ok[single] = other == 0
      if (~single).any():
        counts, _ = count_solutions(g, trials[~single])
        ok[~single] = counts == 1
      todo = settle(gi, trials, ok)
      continue
    if not live.any():
      break
    if (~live).sum() > max(64, grid.size // 8):  # drop idle columns
      grid, trial, pend, us = grid[live], trial[live], pend[live], us[live]
      c, pm, tgt = c[:, live], pm[:, live], tgt[:, live]
    c, pm, _, level, _ = _wave(g, c, pm, UNIQUE_RECTANGLE, False, _CHEAPEST_FIRST)
    _account(level, pend, us)
    reached = ~(tgt & ~pm).any(0)
    done = (reached | (level == 0)) & (grid >= 0)
    if not done.any():
      continue
    fin = np.nonzero(done)[0]
    ur = reached[fin] & (((us[fin] >> UNIQUE_RECTANGLE) & 1) == 1)
    pending_grid.append(grid[fin[ur]])
    pending_trial.append(trial[fin[ur]])
    rest = fin[~ur]
    todo = settle(grid[rest], trial[rest], reached[rest])
    grid[fin] = -1  # idle: a filled placeholder that no strategy touches
    c[:, fin], pm[:, fin], tgt[:, fin] = 1, 0xFFFF, 0
  return puzzles


def fill_order(result: SolveResult) -> np.ndarray:
  """int16[B, N, 4] rows (row, col, value, strategy): givens first (row-major), then
  cells in the order the solver placed them (by step, row-major within a step);
  cells the solver never placed are rows of -1 at the end."""
  num = result.grid.shape[1]
  n = int(round(num ** 0.5))
  key = np.where(result.step >= 0, result.step.astype(np.int64), 1 << 20) * num
  perm = np.argsort(key + np.arange(num), axis=1)
  known = np.take_along_axis(result.step, perm, 1) >= 0
  order = np.stack([perm // n, perm % n, np.take_along_axis(result.grid, perm, 1),
                    np.take_along_axis(result.strategy, perm, 1)], -1)
  return np.where(known[:, :, None], order, -1).astype(np.int16)


# ----------------------------------------------------------------------------------
# Solution counting: propagation (all singles at once) plus batched branching.


def _singles_step(g: Geometry, c: np.ndarray, pm: np.ndarray):
  """Places every single at once -> (cand, placed mask, progressed[B], bad[B])."""
  lone, hidden, bad = _singles(g, c, pm, True)
  hid = hidden != 0
  place = (lone | hid) & ~bad
  hm = _m16(hid)
  c = (c & ~hm) | (hidden & hm)
  pm = pm | _m16(place)
  c, dup = _eliminate_peers(g, c, pm)
  return c, pm, place.any(0), bad | dup


def _propagate(g: Geometry, c: np.ndarray, pm: np.ndarray):
  """Singles to a fixpoint on [N, K] states -> (cand, placed mask, bad[K])."""
  bad = np.zeros(c.shape[1], bool)
  active = np.arange(c.shape[1])
  ca, pa = c, pm
  while active.size:
    ca, pa, more, b2 = _singles_step(g, ca, pa)
    c[:, active], pm[:, active] = ca, pa
    bad[active[b2]] = True
    more &= ~b2
    active, ca, pa = active[more], ca[:, more], pa[:, more]
  return c, pm, bad


def count_solutions(g: Geometry, puzzles_BxN: np.ndarray, limit: int = 2,
                    chunk: int = 8192, per_puzzle: int = 16,
                    exclude_BxN: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Counts solutions up to `limit` by propagation (singles) and batched branching on
  a fewest-candidates cell. Each round expands the newest `per_puzzle` open nodes of
  every puzzle (at most `chunk` in all): depth first per puzzle, batched across them.

  exclude_BxN: optional uint16 candidate bits to forbid in each cell (e.g. the known
  solution's digit in one blank cell: then "no solution" proves uniqueness).
  -> (counts int32[B] in [0, limit], first solution found int8[B, N] (0s if none)).
  """
  puzzles = np.asarray(puzzles_BxN, np.int8)
  b = puzzles.shape[0]
  counts = np.zeros(b, np.int32)
  first = np.zeros(puzzles.shape, np.int8)
  c, pm, bad = _initial_state(g, puzzles)
  if exclude_BxN is not None:
    c &= ~np.ascontiguousarray(np.asarray(exclude_BxN, np.uint16).T)
  # Open nodes: candidates, placed masks, puzzle index, push order.
  oc, opm, origin = c[:, ~bad], pm[:, ~bad], np.nonzero(~bad)[0]
  seq = np.zeros(origin.size, np.int64)
  pushes = 1
  while origin.size:
    live = counts[origin] < limit
    order = np.lexsort((-seq[live], origin[live]))
    idx = np.nonzero(live)[0][order]
    o = origin[idx]
    start = np.searchsorted(o, o, side="left")  # first node of each puzzle
    take = idx[(np.arange(o.size) - start) < per_puzzle][:chunk]
    rest = np.ones(origin.size, bool)
    rest[take] = False
    rest &= live
    c, pm, org = oc[:, take], opm[:, take], origin[take]
    oc, opm, origin, seq = oc[:, rest], opm[:, rest], origin[rest], seq[rest]
    c, pm, bad = _propagate(g, c, pm)
    solved = ~bad & (pm != 0).all(0)
    si = np.nonzero(solved)[0]
    if si.size:
      uo, at, k = np.unique(org[si], return_index=True, return_counts=True)
      fresh = counts[uo] == 0
      sel = si[at[fresh]]
      first[uo[fresh]] = _digits(g, c[:, sel], pm[:, sel])
      counts[uo] = np.minimum(counts[uo] + k, limit)
    branch = ~bad & ~solved
    c, pm, org = c[:, branch], pm[:, branch], org[branch]
    if org.size == 0:
      continue
    pc = _pc(g, c).astype(np.int32) | (pm.astype(np.int32) & 0xFF)  # placed: >= 255
    cell = np.argmin(pc, 0)
    k = _pc(g, c[cell, np.arange(cell.size)]).astype(np.int64)
    rep = np.repeat(np.arange(cell.size), k)
    rank = np.arange(rep.size) - np.repeat(np.cumsum(k) - k, k)
    digit = g.nth_bit[c[cell[rep], rep], rank]
    cc, pp = c[:, rep], pm[:, rep]
    cols = np.arange(rep.size)
    cc[cell[rep], cols] = np.left_shift(np.uint16(1), digit.astype(np.uint16))
    pp[cell[rep], cols] = 0xFFFF
    cc, dup = _eliminate_peers(g, cc, pp)
    oc, opm = np.hstack([oc, cc[:, ~dup]]), np.hstack([opm, pp[:, ~dup]])
    origin = np.concatenate([origin, org[rep][~dup]])
    seq = np.concatenate([seq, np.full(int((~dup).sum()), pushes, np.int64)])
    pushes += 1
  return counts, first


def count_solutions_simple(grid, box_rows: int, box_cols: int, limit: int = 2) -> int:
  """Plain recursive backtracking (no bitmasks, no numpy): an independent referee."""
  n = box_rows * box_cols
  cells = [int(v) for v in np.asarray(grid).ravel()]

  def options(i):
    r, col = divmod(i, n)
    br, bc = r - r % box_rows, col - col % box_cols
    seen = {cells[r * n + j] for j in range(n)} | {cells[j * n + col] for j in range(n)}
    seen |= {cells[(br + a) * n + bc + d] for a in range(box_rows)
             for d in range(box_cols)}
    return [v for v in range(1, n + 1) if v not in seen]

  for i, v in enumerate(cells):  # contradictory givens: no solution
    if v:
      cells[i] = 0
      if v not in options(i):
        return 0
      cells[i] = v

  def search() -> int:
    best, best_opts = -1, None
    for i, v in enumerate(cells):
      if v == 0:
        opts = options(i)
        if best_opts is None or len(opts) < len(best_opts):
          best, best_opts = i, opts
          if not opts:
            return 0
    if best < 0:
      return 1
    total = 0
    for v in best_opts:
      cells[best] = v
      total += search()
      cells[best] = 0
      if total >= limit:
        break
    return total

  return min(search(), limit)


# ----------------------------------------------------------------------------------
# Unique-minimal puzzles: a depth-first solution search per trial, batched.


class _Stack:
  """Saved search states (cand, placed mask) of many columns: linked lists in one
  growing pool of slot-major rows, `top[col]` the newest entry of each column (-1:
  empty)."""

  def __init__(self, cells: int, cols: int):
    self.c = np.zeros((4 * cols, cells), np.uint16)
    self.pm = np.zeros_like(self.c)
    self.prev = np.zeros(4 * cols, np.int64)
    self.free = np.arange(4 * cols)[::-1].copy()
    self.nfree = self.free.size
    self.top = np.full(cols, -1, np.int64)

  def push(self, cols: np.ndarray, c: np.ndarray, pm: np.ndarray) -> np.ndarray:
    """Saves states c, pm [N, len(cols)] on top of `cols`; returns their slots."""
    b = cols.size
    if self.nfree < b:
      cap, extra = self.prev.size, max(self.prev.size, b)
      self.c = np.vstack([self.c, np.zeros((extra, self.c.shape[1]), np.uint16)])
      self.pm = np.vstack([self.pm, np.zeros((extra, self.c.shape[1]), np.uint16)])
      self.prev = np.concatenate([self.prev, np.zeros(extra, np.int64)])
      self.free = np.concatenate([self.free, np.zeros(extra, np.int64)])
      self.free[self.nfree:self.nfree + extra] = np.arange(cap, cap + extra)[::-1]
      self.nfree += extra
    slots = self.free[self.nfree - b:self.nfree]
    self.nfree -= b
    self.c[slots], self.pm[slots] = c.T, pm.T
    self.prev[slots] = self.top[cols]
    self.top[cols] = slots
    return slots

  def pop(self, cols: np.ndarray):
    """-> (cand, placed mask) [N, len(cols)] of the newest states of `cols`."""
    slots = self.top[cols]
    self.top[cols] = self.prev[slots]
    self._release(slots)
    return self.c[slots].T, self.pm[slots].T

  def clear(self, cols: np.ndarray) -> None:
    slots = self.top[cols]
    self.top[cols] = -1
    while True:
      slots = slots[slots >= 0]
      if slots.size == 0:
        return
      self._release(slots)
      slots = self.prev[slots]

  def _release(self, slots: np.ndarray) -> None:
    self.free[self.nfree:self.nfree + slots.size] = slots
    self.nfree += slots.size

  def keep(self, cols: np.ndarray) -> None:
    """Keeps only the columns `cols` (whose stacks stay), renumbered 0..len-1."""
    self.top = self.top[cols]


def unique_minimal(g: Geometry, solutions_BxN: np.ndarray,
                   rng: np.random.Generator | None = None, *,
                   order_BxN: np.ndarray | None = None, slots: int = 2048) -> np.ndarray:
  """Unique-minimal puzzles from complete grids: the clues are removed one at a
  time in a random order (`order_BxN`: each grid's cells in removal order, default
  drawn from `rng`), each removal kept iff the puzzle keeps exactly one solution.
  Every clue left is then needed for uniqueness.

  The result is that of the one-at-a-time rule, computed faster:
  - the next `chunk` clues go at once when singles propagation alone deduces them
    all again (every solution then agrees with the grid on them, so the puzzle
    stays unique, and each single removal would have kept it unique); a chunk that
    propagation cannot deduce halves, down to single clues;
  - a single clue x goes iff a depth-first search finds no solution with
    x != grid[x] (the puzzle before the removal has the grid as its only solution).
  Trials run as the columns of one pool of up to `slots` grids, one singles step a
  round, a finished trial's column taking its grid's next trial (or the next grid).
  """
  grids = np.asarray(solutions_BxN, np.int8)
  m, cells = grids.shape
  if order_BxN is None:
    order_BxN = np.argsort(rng.random((m, cells)), 1)
  rank = np.empty((m, cells), np.int64)
  np.put_along_axis(rank, np.asarray(order_BxN, np.int64),
                    np.arange(cells)[None].repeat(m, 0), 1)
  puzzles = grids.copy()
  digit_bits = np.left_shift(np.uint16(1), np.maximum(grids, 1).astype(np.uint16) - 1)
  ptr = np.zeros(m, np.int64)  # clues before ptr in the order are decided
  chunk = np.full(m, max(1, cells // 4), np.int64)
  size = min(slots, m)
  grid = np.arange(size)  # grid of each pool column, -1 when idle
  queue = size  # next grid not yet started
  c, pm, tgt = (np.zeros((cells, size), np.uint16) for _ in range(3))
  single = np.zeros(size, bool)  # the column searches (one clue) or propagates
  stack = _Stack(cells, size)

  def load(cols):
    gi = grid[cols]
    pos = rank[gi] - ptr[gi][:, None]
    t = (pos >= 0) & (pos < chunk[gi][:, None])
    c0, pm0, _ = _initial_state(g, puzzles[gi] * ~t, check=False)
    one = chunk[gi] == 1
    c0 &= ~(digit_bits[gi] * (t & one[:, None])).T  # search: x != grid[x]
    c[:, cols], pm[:, cols], tgt[:, cols], single[cols] = c0, pm0, _m16(t.T), one

  load(np.arange(size))
  while True:
    live = grid >= 0
    if not live.any():
      break
    if (~live).sum() > max(64, grid.size // 8):  # drop idle columns
      grid, single, c, pm, tgt = grid[live], single[live], c[:, live], pm[:, live], \
          tgt[:, live]
      stack.keep(np.nonzero(live)[0])
      live = live[live]
    c, pm, progressed, bad = _singles_step(g, c, pm)
    solved = ~bad & (pm != 0).all(0)
    reached = ~bad & ~(tgt & ~pm).any(0)
    empty = stack.top < 0
    ok = live & np.where(single, bad & empty, reached)
    fail = live & np.where(single, solved, ~reached & (bad | ~progressed))
    back = np.nonzero(live & single & bad & ~empty)[0]
    if back.size:  # dead end: the newest saved alternative
      c[:, back], pm[:, back] = stack.pop(back)
    split = np.nonzero(live & single & ~bad & ~solved & ~progressed)[0]
    if split.size:  # branch on a fewest-candidates cell: its lowest digit, or not
      pc = _pc(g, c[:, split]).astype(np.int32) | (pm[:, split].astype(np.int32) & 0xFF)
      cell = np.argmin(pc, 0)
      cand = c[cell, split]
      bit = cand & (~cand + np.uint16(1))
      saved = stack.push(split, c[:, split], pm[:, split])
      stack.c[saved, cell] = cand & ~bit
      c[g.peers[cell], split[:, None]] &= ~bit[:, None]
      c[cell, split], pm[cell, split] = bit, 0xFFFF
    fin = np.nonzero(ok | fail)[0]
    if fin.size == 0:
      continue
    stack.clear(fin)
    gi, good = grid[fin], ok[fin]
    puzzles[gi[good]] *= (tgt[:, fin[good]] == 0).T
    k = chunk[gi]
    ptr[gi] += np.where(good, k, k == 1)
    chunk[gi[~good]] = np.maximum(1, k[~good] // 2)
    over = np.nonzero(ptr[gi] >= cells)[0]  # every clue decided: the next grid
    nxt = np.full(over.size, -1, np.int64)
    fresh = np.arange(queue, min(m, queue + over.size))
    nxt[:fresh.size] = fresh
    queue += fresh.size
    grid[fin[over]] = nxt
    again = fin[grid[fin] >= 0]
    if again.size:
      load(again)
    idle = fin[grid[fin] < 0]
    c[:, idle], pm[:, idle], tgt[:, idle], single[idle] = 1, 0xFFFF, 0, False
  return puzzles


# ----------------------------------------------------------------------------------
# Random complete grids.


def random_grids(g: Geometry, num: int, rng: np.random.Generator) -> np.ndarray:
  """int8[num, N] random complete grids: place every single, else a random candidate
  of a random fewest-candidates cell; a grid that hits a contradiction starts again."""
  out = np.zeros((num, g.num_cells), np.int8)
  todo = np.arange(num)
  # Boxes on the diagonal share no row or column: fill them with random permutations.
  start = np.zeros((num, g.num_cells), np.int8)
  for d in range(min(g.box_rows, g.box_cols)):
    box = g.units[2 * g.n + d * g.box_rows + d]
    start[:, box] = rng.permuted(np.tile(np.arange(1, g.n + 1, dtype=np.int8),
                                         (num, 1)), axis=1)
  c, pm, _ = _initial_state(g, start)
  while todo.size:
    c, pm, progressed, bad = _singles_step(g, c, pm)
    gi = np.nonzero(~progressed & ~bad & ~(pm != 0).all(0))[0]
    if gi.size:
      cg = c[:, gi]
      pc = _pc(g, cg).astype(np.float64) + (pm[:, gi] != 0) * 255.0
      cell = np.argmin(pc + rng.random(pc.shape), 0)
      mask = cg[cell, np.arange(gi.size)]
      r = (rng.random(gi.size) * _pc(g, mask)).astype(np.int64)
      c[cell, gi] = np.left_shift(np.uint16(1), g.nth_bit[mask, r].astype(np.uint16))
      pm[cell, gi] = 0xFFFF
      c, dup = _eliminate_peers(g, c, pm)
      bad |= dup
    fin = (pm != 0).all(0) & ~bad
    if fin.any():
      out[todo[fin]] = _digits(g, c[:, fin], pm[:, fin])
    c[:, bad], pm[:, bad] = g.full, 0  # (the diagonal start may be a dead end)
    keep = ~fin
    todo, c, pm = todo[keep], c[:, keep], pm[:, keep]
  return out
