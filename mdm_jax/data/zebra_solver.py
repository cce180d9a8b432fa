"""Zebra puzzles: the deductive solver and the independent uniqueness check.

Entities are ints `a * H + v` (attribute a, value v, H houses); internal clues are
tuples `(type, x, y, z)` of entities (-1 unused), with the clue types of
`mdm_jax.data.zebra` (ids `EQ` .. `POSITION`); a 'position' clue is
`(POSITION, x, h, -1)`.

Deductive solver (`DeductiveSolver`): a candidate set of houses per entity (a bitmask).
Propagators, cheapest first: every clue (arc consistency on its houses); per
attribute, naked and hidden singles; then naked pairs/triples among values ("rows")
and among houses ("columns", i.e. hidden pairs/triples). For H <= 6 the per-attribute
rules amount to full consistency of each permutation constraint.

Uniqueness (`count_solutions`): plain backtracking over entity houses, sharing no
code with the solver, so that a puzzle the generator keeps is checked twice.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Sequence

CLUE_TYPES = ("=", "!=", "neighbour", "ends", "immediate-left", "left-of",
              "in-between", "position")
EQ, NEQ, NEXT, ENDS, IMLEFT, LEFT, BETWEEN, POSITION = range(8)


class Contradiction(Exception):
  """The clues admit no solution (the deductive solver emptied a candidate set)."""


# ----------------------------------------------------------------------------
# Bit tables (houses are bits of an int).


@functools.lru_cache(maxsize=None)
def _tables(num_houses: int) -> dict[str, Any]:
  h_ = num_houses
  full = (1 << h_) - 1
  size = 1 << h_
  pop = [bin(m).count("1") for m in range(size)]
  # bits strictly below the highest set bit / strictly above the lowest set bit.
  below_high = [0] * size
  above_low = [0] * size
  for m in range(1, size):
    below_high[m] = (1 << (m.bit_length() - 1)) - 1
    low = (m & -m).bit_length() - 1
    above_low[m] = full & ~((1 << (low + 1)) - 1)
  adj = [((m << 1) | (m >> 1)) & full for m in range(size)]
  bits = [[h for h in range(h_) if m >> h & 1] for m in range(size)]
  return dict(full=full, pop=pop, below_high=below_high, above_low=above_low,
              adj=adj, bits=bits, ends=1 | (1 << (h_ - 1)))


# ----------------------------------------------------------------------------
# Deductive solver.


class DeductiveSolver:
  """Candidate-table solver with clue propagators and per-attribute subset rules.

  Entities are ints `a * H + v`; internal clues are tuples `(type, x, y, z)` of
  entities (-1 unused); a 'position' clue is `(POSITION, x, h, -1)`.
  """

  def __init__(self, num_houses: int, num_attrs: int):
    t = _tables(num_houses)
    self.num_houses, self.num_attrs = num_houses, num_attrs
    self._t = t
    self.cand = [t["full"]] * (num_houses * num_attrs)
    self.clues: list[tuple[int, int, int, int]] = []
    self.used: list[bool] = []
    self.order: list[int] = []  # entities in the order they were determined
    self._watch: list[list[int]] = [[] for _ in self.cand]
    self._queue: list[int] = []
    self._queued: list[bool] = []
    self._dirty_singles = [True] * num_attrs
    self._dirty_subsets = [True] * num_attrs

  @property
  def solved(self) -> bool:
    return len(self.order) == len(self.cand)

  def houses(self) -> list[int]:
    """House of every entity (requires `solved`)."""
    return [m.bit_length() - 1 for m in self.cand]

  def revise(self, clue: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """(entity, new candidate mask) changes one application of `clue` makes."""
    typ, x, y, z = clue
    c = self.cand
    t = self._t
    cx = c[x]
    out = []
    if typ == EQ:
      m = cx & c[y]
      if m != cx:
        out.append((x, m))
      if m != c[y]:
        out.append((y, m))
      return out
    if typ == NEQ:
      pop = t["pop"]
      cy = c[y]
      if pop[cx] == 1 and cy & cx:
        cy &= ~cx
        out.append((y, cy))
      if pop[cy] == 1 and cx & cy:
        out.append((x, cx & ~cy))
      return out
    if typ == ENDS:
      nx = cx & t["ends"]
      return [(x, nx)] if nx != cx else out
    if typ == POSITION:
      nx = cx & (1 << y)
      return [(x, nx)] if nx != cx else out
    cy = c[y]
    if typ == NEXT:
      adj = t["adj"]
      nx = cx & adj[cy]
      ny = cy & adj[nx]
    elif typ == IMLEFT:
      nx = cx & (cy >> 1)
      ny = cy & (nx << 1)
    elif typ == LEFT:
      nx = cx & t["below_high"][cy]
      ny = cy & t["above_low"][nx]
    elif typ == BETWEEN:
      bh, al = t["below_high"], t["above_low"]
      cz = c[z]
      nx = cx & ((al[cy] & bh[cz]) | (al[cz] & bh[cy]))
      ny = cy & (bh[nx & bh[cz]] | al[nx & al[cz]])
      nz = cz & (bh[nx & bh[ny]] | al[nx & al[ny]])
      if nz != cz:
        out.append((z, nz))
    else:
      raise ValueError(f"unknown clue type {typ}")
    if nx != cx:
      out.append((x, nx))
    if ny != cy:
      out.append((y, ny))
    return out

  def add(self, clue: tuple[int, int, int, int]) -> bool:
    """Adds `clue` and propagates to a fixpoint, unless it is redundant (-> False).

    The state is a fixpoint of the other propagators, so a clue adds nothing to it
    exactly when its own first application changes nothing.
    """
    changes = self.revise(clue)
    if not changes:
      return False
    i = len(self.clues)
    self.clues.append(clue)
    self.used.append(True)
    self._queued.append(False)
    for e in _clue_entities(clue):
      self._watch[e].append(i)
    for e, m in changes:
      self._set(e, m)
    self._enqueue(i)
    self.propagate()
    return True

  def solve_from_scratch(self, clues: Sequence[tuple[int, int, int, int]]) -> bool:
    """Adds all `clues` at once (none rejected), propagates; returns `solved`."""
    for clue in clues:
      i = len(self.clues)
      self.clues.append(clue)
      self.used.append(False)
      self._queued.append(False)
      for e in _clue_entities(clue):
        self._watch[e].append(i)
      self._enqueue(i)
    self.propagate()
    return self.solved

  def _enqueue(self, i: int) -> None:
    if not self._queued[i]:
      self._queued[i] = True
      self._queue.append(i)

  def _set(self, e: int, m: int) -> None:
    if m == 0:
      raise Contradiction(f"no house left for entity {e}")
    if m == self.cand[e]:
      return
    self.cand[e] = m
    if self._t["pop"][m] == 1:
      self.order.append(e)
    for i in self._watch[e]:
      self._enqueue(i)
    a = e // self.num_houses
    self._dirty_singles[a] = self._dirty_subsets[a] = True

  def propagate(self) -> None:
    """Runs the propagators to a fixpoint, simplest rules first."""
    while True:
      while self._queue:
        i = self._queue.pop(0)
        self._queued[i] = False
        changes = self.revise(self.clues[i])
        if changes:
          self.used[i] = True
          for e, m in changes:
            self._set(e, m)
      if True in self._dirty_singles:
        a = self._dirty_singles.index(True)
        self._dirty_singles[a] = False
        self._singles(a)
        continue
      if True in self._dirty_subsets:
        a = self._dirty_subsets.index(True)
        self._dirty_subsets[a] = False
        self._subsets(a)
        continue
      return

  def _singles(self, a: int) -> None:
    """Naked singles (a value's only house) and hidden singles (a house's only value)."""
    h_ = self.num_houses
    pop, full = self._t["pop"], self._t["full"]
    ents = range(a * h_, (a + 1) * h_)
    c = self.cand
    changed = True
    while changed:
      changed = False
      solved = 0
      for e in ents:
        if pop[c[e]] == 1:
          if solved & c[e]:
            raise Contradiction(f"two values of attribute {a} in one house")
          solved |= c[e]
      for e in ents:
        if pop[c[e]] > 1 and c[e] & solved:
          self._set(e, c[e] & ~solved)
          changed = True
      once = twice = 0
      for e in ents:
        twice |= once & c[e]
        once |= c[e]
      if once != full:
        raise Contradiction(f"a house has no value of attribute {a}")
      hidden = once & ~twice
      for e in ents:
        hb = c[e] & hidden
        if hb and hb != c[e]:
          if pop[hb] > 1:
            raise Contradiction(f"a value of attribute {a} is the only one for 2 houses")
          self._set(e, hb)
          changed = True

  def _subsets(self, a: int) -> None:
    """Naked pairs/triples among values, then among houses; stops at the first find."""
    h_ = self.num_houses
    pop = self._t["pop"]
    c = self.cand
    ents = [e for e in range(a * h_, (a + 1) * h_) if pop[c[e]] > 1]
    for k in (2, 3):
      if len(ents) <= k:
        break
      for combo in itertools.combinations(ents, k):
        union = 0
        for e in combo:
          union |= c[e]
        if pop[union] == k:
          hit = False
          for e in ents:
            if e not in combo and c[e] & union:
              self._set(e, c[e] & ~union)
              hit = True
          if hit:
            return
    # Houses: values that can still go to house h (bit v of vals[h]).
    vals = [0] * h_
    for e in ents:
      for h in self._t["bits"][c[e]]:
        vals[h] |= 1 << (e - a * h_)
    open_houses = [h for h in range(h_) if pop[vals[h]] > 1]
    for k in (2, 3):
      if len(open_houses) <= k:
        break
      for combo in itertools.combinations(open_houses, k):
        union = 0
        hmask = 0
        for h in combo:
          union |= vals[h]
          hmask |= 1 << h
        if pop[union] == k:
          hit = False
          for v in self._t["bits"][union]:
            e = a * h_ + v
            if c[e] & ~hmask:
              self._set(e, c[e] & hmask)
              hit = True
          if hit:
            return


def _clue_entities(clue: tuple[int, int, int, int]) -> list[int]:
  typ, x, y, z = clue
  if typ in (ENDS, POSITION):
    return [x]
  if typ == BETWEEN:
    return [x, y, z]
  return [x, y]


# ----------------------------------------------------------------------------
# Independent uniqueness check (backtracking over entity houses).


def clue_holds(clue: tuple[int, int, int, int], house: Sequence[int],
               num_houses: int) -> bool:
  """Whether an internal clue holds when entity e sits in house[e]."""
  typ, x, y, z = clue
  hx = house[x]
  if typ == ENDS:
    return hx == 0 or hx == num_houses - 1
  if typ == POSITION:
    return hx == y
  hy = house[y]
  if typ == EQ:
    return hx == hy
  if typ == NEQ:
    return hx != hy
  if typ == NEXT:
    return abs(hx - hy) == 1
  if typ == IMLEFT:
    return hx + 1 == hy
  if typ == LEFT:
    return hx < hy
  if typ == BETWEEN:
    hz = house[z]
    return hy < hx < hz or hz < hx < hy
  raise ValueError(f"unknown clue type {typ}")


def count_solutions(num_houses: int, num_attrs: int,
                    clues: Sequence[tuple[int, int, int, int]], limit: int = 2) -> int:
  """Number of solution tables satisfying `clues`, counted up to `limit`.

  Plain backtracking: entities are placed one at a time (a house not yet taken by
  their attribute), in a static order that completes clues early; a clue is tested
  as soon as all its entities are placed. Shares no code with `DeductiveSolver`.
  """
  h_, n = num_houses, num_houses * num_attrs
  ents_of = [_clue_entities(c) for c in clues]
  # Static order: greedily the entity that completes most clues, then touches most.
  order: list[int] = []
  placed: set[int] = set()
  degree = [0] * n
  for es in ents_of:
    for e in es:
      degree[e] += 1
  while len(order) < n:
    best, best_key = -1, None
    for e in range(n):
      if e in placed:
        continue
      completes = touches = 0
      for es in ents_of:
        if e in es:
          rest = [f for f in es if f != e]
          if all(f in placed for f in rest):
            completes += 1
          elif any(f in placed for f in rest):
            touches += 1
      key = (completes, touches, degree[e], -e)
      if best_key is None or key > best_key:
        best, best_key = e, key
    order.append(best)
    placed.add(best)
  position = {e: i for i, e in enumerate(order)}
  checks: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n)]
  for clue, es in zip(clues, ents_of):
    checks[max(position[e] for e in es)].append(clue)
  house = [-1] * n
  taken = [0] * num_attrs
  count = 0

  def place(i: int) -> bool:  # returns True when `limit` is reached
    nonlocal count
    if i == n:
      count += 1
      return count >= limit
    e = order[i]
    a = e // h_
    for h in range(h_):
      if taken[a] >> h & 1:
        continue
      house[e] = h
      if all(clue_holds(c, house, h_) for c in checks[i]):
        taken[a] |= 1 << h
        stop = place(i + 1)
        taken[a] &= ~(1 << h)
        if stop:
          house[e] = -1
          return True
    house[e] = -1
    return False

  place(0)
  return count
