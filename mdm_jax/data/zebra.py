"""Zebra (Einstein) puzzles: generator, deductive solver, uniqueness check, layouts.

Puzzle. `H` houses (0..H-1, left to right) and `A` attributes; every attribute `a`
puts each of its `H` values `v` in exactly one house. An entity is a pair (a, v).
The solution table `solution[h, a]` is the value of attribute `a` in house `h`.

Clue types (id, name, meaning; x, y, z are entities):
  0 '='               x and y are in the same house (x, y of different attributes)
  1 '!='              x and y are in different houses (different attributes)
  2 'neighbour'       x and y are in adjacent houses
  3 'ends'            x is in the first or the last house
  4 'immediate-left'  x is directly left of y: house(x) + 1 == house(y)
  5 'left-of'         x is somewhere left of y: house(x) < house(y)
  6 'in-between'      x is strictly between y and z (y < x < z or z < x < y)
  7 'position'        x is in house h (a fallback, never drawn at random; see below)

Generation of one puzzle (`make_puzzle`): draw H and A uniformly from the task's
ranges and a random solution table (one random permutation per attribute). Then draw
clues that are true of the solution: a type with weights `CLUE_WEIGHTS` (4,1,2,2,2,2,1),
then uniformly one of the true clues of that type. A clue that adds nothing to the
deductive solver's state is rejected; an accepted clue is propagated to a fixpoint.
This repeats until the solver has determined every cell. After `_MAX_MISSES`
rejections in a row the generator enumerates all true clues and samples among the
useful ones with the same distribution the rejection loop has (an exact shortcut).
Only if no clue of the seven types is useful does it add a 'position' clue for a
random undetermined entity (the type exists for that case; the generator counts
it). In 300 puzzles each of 3x3, 4x4, 6x6, 3x6 and 6x3 neither was ever needed.
Finally the solver is rerun from scratch on the clue list and the clues that never
eliminated a candidate are dropped, until every clue is used and the solver still
solves the puzzle; the order in which that last run determined the cells is the
"solver order". Every puzzle is then checked to have exactly one
solution by an independent backtracking enumerator (`count_solutions`), which shares
no code with the solver. Puzzles with more than `max_clues` clues are redrawn.

Deductive solver and uniqueness check: `mdm_jax.data.zebra_solver` (its names are
re-exported here).

Splits. 'test' puzzles use only solution tables whose hash bucket is 0 (of
`_SPLIT_BUCKETS` = 8), 'train' puzzles only the others, so no test puzzle shares its
solution table (hence no puzzle) with any train puzzle. (A size whose few tables all
fall on one side, possible only for tiny sizes such as 2 x 2, is not partitioned.)

Stored examples (Hm, Am = max_houses, max_attrs; C = max_clues):
  num_houses int8[N], num_attrs int8[N], num_clues int16[N]
  clues int8[N, C, 7]: rows (type, a1, v1, a2, v2, a3, v3), -1 for unused operands and
    padding rows (type -1); 'position' rows are (7, a, v, h, -1, -1, -1).
  solution int8[N, Hm, Am]: value of attribute a in house h, -1 outside H x A.
  order int8[N, Hm * Am]: cells (h * Am + a) in the solver's order, -1 after H * A.

Token vocabulary (`Vocab`; 29 ids for 6 x 6): PAD 0, SEP 1, MASK 2, then one token per
clue type (8), attribute ids (Am), value ids (Hm), house ids (Hm). With
`entity_tokens=True` a value id names its attribute too (Am * Hm ids, 59 for 6 x 6):
the clue operand (a, v) and the answer cell holding entity (a, v) are then the same
token, and the attribute token before it is redundant. The puzzles (and their data
cache) are the same either way.

MDM layout, length 2 + 7C + 1 + Hm*Am:
  [house_id(H-1), attr_id(A-1)]       sizes (the last house and attribute index)
  C clue slots of 7 tokens            (type, attr, value, attr, value, attr, value);
                                      PAD for unused operands and empty slots; a
                                      'position' slot is (type, attr, value, house_id)
  [SEP]
  Hm*Am answer cells, house-major     value_id(solution[h, a]); PAD outside H x A
Only the answer cells inside H x A are maskable.

ARM layout (orderings 'solver', 'row_major', 'random'), length 3 + 7C + 3*Hm*Am:
  sizes, the num_clues real clue slots, SEP (prompt_len = 3 + 7 * num_clues), then the
  H*A cells as (house_id, attr_id, value_id) triples in the chosen order, then PAD.
  loss_mask is True on the answer triples.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import itertools
import math
from typing import Any, Sequence

import numpy as np

from mdm_jax.data import base
# The solver's names, re-exported (zebra.DeductiveSolver, zebra.EQ, ...).
from mdm_jax.data.zebra_solver import (  # pylint: disable=unused-import
    BETWEEN, CLUE_TYPES, ENDS, EQ, IMLEFT, LEFT, NEQ, NEXT, POSITION, Contradiction,
    DeductiveSolver, _clue_entities, _tables, clue_holds, count_solutions)

CLUE_WEIGHTS = (4, 1, 2, 2, 2, 2, 1)  # of the first seven types; 'position' is a fallback
CLUE_WIDTH = 7
MIN_SIZE, MAX_SIZE = 2, 8

_MAX_MISSES = 64
_SPLIT_BUCKETS = 8
_SPLITS = ("train", "test")


# ----------------------------------------------------------------------------
# Puzzle generation.


@dataclasses.dataclass
class Puzzle:
  """One puzzle in Python form (internal clue tuples over entities a * H + v)."""
  num_houses: int
  num_attrs: int
  table: list[list[int]]  # table[h][a] = value
  clues: list[tuple[int, int, int, int]]
  order: list[tuple[int, int]]  # (house, attribute) cells in the solver's order
  position_fallbacks: int = 0  # 'position' clues the generator had to add
  shortcuts: int = 0  # clues drawn by enumerating the useful ones
  draws: int = 0  # clues drawn (accepted or rejected)


class _Uniforms:
  """Buffered uniforms from a numpy Generator (fast scalar draws, same stream)."""

  def __init__(self, rng: np.random.Generator):
    self._rng = rng
    self._buf: list[float] = []

  def random(self) -> float:
    if not self._buf:
      self._buf = self._rng.random(256).tolist()
    return self._buf.pop()

  def below(self, n: int) -> int:
    return min(int(self.random() * n), n - 1)


@functools.lru_cache(maxsize=None)
def _draw_spaces(num_houses: int, num_attrs: int):
  """Per clue type: (house tuples, attribute tuples); a clue is one of each."""
  h_, a_ = num_houses, num_attrs
  hs = range(h_)
  attrs_1 = [(a,) for a in range(a_)]
  attrs_2 = list(itertools.product(range(a_), repeat=2))
  attrs_2d = [p for p in attrs_2 if p[0] != p[1]]
  attrs_3 = list(itertools.product(range(a_), repeat=3))
  spaces = {
      EQ: ([(h, h) for h in hs], attrs_2d),
      NEQ: ([(h1, h2) for h1 in hs for h2 in hs if h1 != h2], attrs_2d),
      NEXT: ([(h1, h2) for h1 in hs for h2 in hs if abs(h1 - h2) == 1], attrs_2),
      ENDS: (sorted({(0,), (h_ - 1,)}), attrs_1),
      IMLEFT: ([(h, h + 1) for h in range(h_ - 1)], attrs_2),
      LEFT: ([(h1, h2) for h1 in hs for h2 in hs if h1 < h2], attrs_2),
      # (house of x, house of y, house of z) with x strictly between y and z.
      BETWEEN: ([(hx, hy, hz) for hx in hs for hy in hs for hz in hs
                 if hy < hx < hz or hz < hx < hy], attrs_3),
  }
  types = [t for t in range(7) if spaces[t][0] and spaces[t][1]]
  cum = list(itertools.accumulate(CLUE_WEIGHTS[t] for t in types))
  return spaces, types, cum


def _make_clue(typ: int, houses: tuple[int, ...], attrs: tuple[int, ...],
               table: list[list[int]], num_houses: int) -> tuple[int, int, int, int]:
  ents = [a * num_houses + table[h][a] for h, a in zip(houses, attrs)]
  ents += [-1] * (3 - len(ents))
  return (typ, ents[0], ents[1], ents[2])


def _draw_clue(u: _Uniforms, table, num_houses: int, num_attrs: int):
  spaces, types, cum = _draw_spaces(num_houses, num_attrs)
  typ = types[bisect.bisect_right(cum, u.random() * cum[-1])]
  hs, as_ = spaces[typ]
  return _make_clue(typ, hs[u.below(len(hs))], as_[u.below(len(as_))], table, num_houses)


def _useful_clues(solver: DeductiveSolver, table) -> list[tuple[int, float, list]]:
  """[(type, weight, useful clues)] for types with a useful clue.

  A type's weight is its draw weight times the useful share of its clues: sampling a
  type by weight, then a clue uniformly, is the rejection loop's distribution.
  """
  h_, a_ = solver.num_houses, solver.num_attrs
  spaces, types, _ = _draw_spaces(h_, a_)
  live = []
  for typ in types:
    hs, as_ = spaces[typ]
    ok = [c for c in (_make_clue(typ, h, a, table, h_) for h in hs for a in as_)
          if solver.revise(c)]
    if ok:
      live.append((typ, CLUE_WEIGHTS[typ] * len(ok) / (len(hs) * len(as_)), ok))
  return live


def _sample_useful(u: _Uniforms, live: list[tuple[int, float, list]]):
  r = u.random() * sum(w for _, w, _ in live)
  for _, w, ok in live:
    if r < w:
      break
    r -= w
  return ok[u.below(len(ok))]


def make_puzzle(rng: np.random.Generator, num_houses: int, num_attrs: int,
                table: list[list[int]] | None = None) -> Puzzle:
  """One uniquely solvable puzzle whose solver order covers every cell."""
  h_, a_ = num_houses, num_attrs
  u = _Uniforms(rng)
  if table is None:
    table = _random_table(rng, h_, a_)
  solver = DeductiveSolver(h_, a_)
  clues: list[tuple[int, int, int, int]] = []
  misses = fallbacks = shortcuts = draws = 0
  while not solver.solved:
    if misses < _MAX_MISSES:
      clue = _draw_clue(u, table, h_, a_)
      draws += 1
      if solver.add(clue):
        clues.append(clue)
        misses = 0
      else:
        misses += 1
      continue
    live = _useful_clues(solver, table)
    shortcuts += 1
    if live:
      clue = _sample_useful(u, live)
    else:
      open_ents = [e for e, m in enumerate(solver.cand) if m & (m - 1)]
      e = open_ents[u.below(len(open_ents))]
      clue = (POSITION, e, _table_house(table, e, h_), -1)
      fallbacks += 1
    if not solver.add(clue):
      raise AssertionError("fallback clue was not useful")
    clues.append(clue)
    misses = 0
  while True:  # drop clues the solver never used, until all are used
    final = DeductiveSolver(h_, a_)
    if not final.solve_from_scratch(clues):
      raise AssertionError("solver failed after dropping unused clues")
    if all(final.used):
      break
    clues = [c for c, used in zip(clues, final.used) if used]
  order = [(final.cand[e].bit_length() - 1, e // h_) for e in final.order]
  return Puzzle(h_, a_, table, clues, order, fallbacks, shortcuts, draws)


def _table_house(table: list[list[int]], e: int, num_houses: int) -> int:
  a, v = divmod(e, num_houses)
  return next(h for h in range(num_houses) if table[h][a] == v)


def _random_table(rng: np.random.Generator, num_houses: int, num_attrs: int):
  perms = np.argsort(rng.random((num_attrs, num_houses)), axis=1)  # perms[a, h] = value
  return perms.T.tolist()


def _table_bucket(table: list[list[int]]) -> int:
  data = np.asarray(table, np.int8).tobytes() + bytes([len(table), len(table[0])])
  return hashlib.blake2b(data, digest_size=8).digest()[0] % _SPLIT_BUCKETS


@functools.lru_cache(maxsize=None)
def _splittable(num_houses: int, num_attrs: int) -> bool:
  """Whether both splits have solution tables of this size (exact when few exist)."""
  if math.factorial(num_houses) ** num_attrs > 20000:
    return True  # P(a bucket is empty) < (7/8) ** 20000
  perms = list(itertools.permutations(range(num_houses)))
  buckets = {_table_bucket(np.array(combo).T.tolist())
             for combo in itertools.product(perms, repeat=num_attrs)}
  return 0 in buckets and len(buckets) > 1


# ----------------------------------------------------------------------------
# The task.


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token ids of the Zebra layouts for tables up to max_houses x max_attrs.

  entity=False: one value token per value index (Hm of them), so "value 2" is the
  same token for every attribute; entity=True: one per (attribute, value) entity
  (Am * Hm), `value_token(a, v)` = value0 + a * Hm + v.
  """
  max_houses: int
  max_attrs: int
  entity: bool = False
  pad: int = 0
  sep: int = 1
  mask: int = 2
  type0: int = 3

  @property
  def attr0(self) -> int:
    return self.type0 + len(CLUE_TYPES)

  @property
  def value0(self) -> int:
    return self.attr0 + self.max_attrs

  @property
  def num_values(self) -> int:
    return self.max_houses * (self.max_attrs if self.entity else 1)

  def value_token(self, attr: Any, value: Any) -> Any:
    """The token of value `value` of attribute `attr` (numpy or jax arrays)."""
    return self.value0 + (attr * self.max_houses if self.entity else 0) + value

  def value_of(self, attr: Any, token: Any) -> Any:
    """Inverse of `value_token`: the value index (out of [0, Hm) if not a value)."""
    return token - self.value0 - (attr * self.max_houses if self.entity else 0)

  @property
  def house0(self) -> int:
    return self.value0 + self.num_values

  @property
  def size(self) -> int:
    return self.house0 + self.max_houses


@base.register("zebra")
class ZebraTask(base.Task):
  """Zebra puzzles with H in [min_houses, max_houses], A in [min_attrs, max_attrs]."""

  name = "zebra"
  splits = _SPLITS
  arm_orderings = ("solver", "row_major", "random")

  def __init__(self, min_houses: int = 3, max_houses: int = 6, min_attrs: int = 3,
               max_attrs: int = 6, max_clues: int | None = None,
               entity_tokens: bool = False):
    for what, lo, hi in (("houses", min_houses, max_houses),
                         ("attrs", min_attrs, max_attrs)):
      if not all(isinstance(x, int) for x in (lo, hi)) or not (
          MIN_SIZE <= lo <= hi <= MAX_SIZE):
        raise ValueError(f"need {MIN_SIZE} <= min_{what} <= max_{what} <= {MAX_SIZE}, "
                         f"got {lo}, {hi}")
    if max_clues is None:
      max_clues = default_max_clues(max_houses, max_attrs)
    if not isinstance(max_clues, int) or max_clues < 1:
      raise ValueError(f"max_clues must be a positive int, got {max_clues!r}")
    self.min_houses, self.max_houses = min_houses, max_houses
    self.min_attrs, self.max_attrs = min_attrs, max_attrs
    self.max_clues = max_clues
    if not isinstance(entity_tokens, (bool, np.bool_)):
      raise ValueError(f"entity_tokens must be True or False, got {entity_tokens!r}")
    self.entity_tokens = bool(entity_tokens)
    self.vocab = Vocab(max_houses, max_attrs, entity=self.entity_tokens)

  def params(self) -> dict[str, Any]:
    out = self.data_params()
    if self.entity_tokens:  # listed only when set: older configs keep their params
      out["entity_tokens"] = True
    return out

  def data_params(self) -> dict[str, Any]:
    """entity_tokens changes the token ids only, not the puzzles (nor their cache)."""
    return dict(min_houses=self.min_houses, max_houses=self.max_houses,
                min_attrs=self.min_attrs, max_attrs=self.max_attrs,
                max_clues=self.max_clues)

  # --- generation ---

  @property
  def num_cells(self) -> int:
    return self.max_houses * self.max_attrs

  def generate(self, split: str, num: int, seed: int) -> base.Examples:
    self.validate_split(split)
    if not isinstance(num, (int, np.integer)) or num < 0:
      raise ValueError(f"num must be a non-negative int, got {num!r}")
    ss = np.random.SeedSequence([int(seed), _SPLITS.index(split), 0x2EB7A])
    puzzles = [self._puzzle(np.random.default_rng(child), split)
               for child in ss.spawn(int(num))]
    return self.to_examples(puzzles)

  def _puzzle(self, rng: np.random.Generator, split: str) -> Puzzle:
    want_bucket0 = split == "test"
    while True:
      h_ = int(rng.integers(self.min_houses, self.max_houses + 1))
      a_ = int(rng.integers(self.min_attrs, self.max_attrs + 1))
      table = _random_table(rng, h_, a_)
      if _splittable(h_, a_) and (_table_bucket(table) == 0) != want_bucket0:
        continue
      puzzle = make_puzzle(rng, h_, a_, table)
      if len(puzzle.clues) > self.max_clues:
        continue
      if count_solutions(h_, a_, puzzle.clues, limit=2) != 1:
        raise AssertionError(f"generated a {h_}x{a_} puzzle without a unique solution")
      return puzzle

  def to_examples(self, puzzles: Sequence[Puzzle]) -> base.Examples:
    """Pads Python puzzles into the stored example arrays."""
    n, hm, am, c = len(puzzles), self.max_houses, self.max_attrs, self.max_clues
    ex = {
        "num_houses": np.zeros((n,), np.int8),
        "num_attrs": np.zeros((n,), np.int8),
        "num_clues": np.zeros((n,), np.int16),
        "clues": np.full((n, c, CLUE_WIDTH), -1, np.int8),
        "solution": np.full((n, hm, am), -1, np.int8),
        "order": np.full((n, hm * am), -1, np.int8),
    }
    for i, p in enumerate(puzzles):
      if len(p.clues) > c:
        raise ValueError(f"puzzle {i} has {len(p.clues)} clues > max_clues={c}")
      ex["num_houses"][i], ex["num_attrs"][i] = p.num_houses, p.num_attrs
      ex["num_clues"][i] = len(p.clues)
      for j, clue in enumerate(p.clues):
        ex["clues"][i, j] = clue_to_row(clue, p.num_houses)
      ex["solution"][i, :p.num_houses, :p.num_attrs] = p.table
      ex["order"][i, :len(p.order)] = [h * am + a for h, a in p.order]
    return ex

  # --- MDM layout ---

  @property
  def _answer_start(self) -> int:
    return 3 + CLUE_WIDTH * self.max_clues

  def mdm_layout(self) -> base.Layout:
    return base.Layout(seq_len=self._answer_start + self.num_cells,
                       vocab_size=self.vocab.size, mask_id=self.vocab.mask)

  def _prompt_tokens(self, ex: base.Examples) -> np.ndarray:
    """[N, 2 + 7C] size and clue-slot tokens."""
    v = self.vocab
    clues = ex["clues"].astype(np.int32)
    n = clues.shape[0]
    tok = np.full(clues.shape, v.pad, np.int32)
    typ = clues[..., 0]
    tok[..., 0] = np.where(typ >= 0, v.type0 + typ, v.pad)
    for k in (1, 3, 5):  # (attr, value) operand pairs
      ok = clues[..., k] >= 0
      tok[..., k] = np.where(ok, v.attr0 + clues[..., k], v.pad)
      tok[..., k + 1] = np.where(ok, v.value_token(clues[..., k], clues[..., k + 1]), v.pad)
    pos = typ == POSITION  # slot 3 holds a house, not an attribute
    tok[..., 3] = np.where(pos, v.house0 + clues[..., 3], tok[..., 3])
    sizes = np.stack([v.house0 + ex["num_houses"].astype(np.int32) - 1,
                      v.attr0 + ex["num_attrs"].astype(np.int32) - 1], axis=1)
    return np.concatenate([sizes, tok.reshape(n, -1)], axis=1)

  def _cell_exists(self, ex: base.Examples) -> np.ndarray:
    """bool[N, Hm, Am]."""
    h = np.arange(self.max_houses)[None, :, None]
    a = np.arange(self.max_attrs)[None, None, :]
    return (h < ex["num_houses"][:, None, None]) & (a < ex["num_attrs"][:, None, None])

  def solver_rank(self, examples: base.Examples) -> np.ndarray | None:
    """The deductive solver's fill step of each answer cell (-1 elsewhere)."""
    if "order" not in examples:
      return None
    order = np.asarray(examples["order"], np.int64)  # [N, Hm*Am] flat cells, -1 pad
    num = order.shape[0]
    rank = np.full((num, self._answer_start + self.num_cells), -1, np.int64)
    ex, t = np.nonzero(order >= 0)
    rank[ex, self._answer_start + order[ex, t]] = t
    return rank

  def mdm_encode(self, examples: base.Examples) -> dict[str, np.ndarray]:
    v = self.vocab
    prompt = self._prompt_tokens(examples)
    n = prompt.shape[0]
    sol = examples["solution"].astype(np.int32)
    attr = np.arange(self.max_attrs)[None, None, :]
    answer = np.where(sol >= 0, v.value_token(attr, sol), v.pad).reshape(n, -1)
    tokens = np.concatenate([prompt, np.full((n, 1), v.sep, np.int32), answer], axis=1)
    maskable = np.zeros(tokens.shape, bool)
    maskable[:, self._answer_start:] = self._cell_exists(examples).reshape(n, -1)
    return {"tokens": tokens, "maskable": maskable}

  def position_groups(self) -> np.ndarray:
    """int[L, 2]: answer cell (h, a) belongs to house group h and attribute group
    Hm + a; prompt positions to none."""
    groups = np.full((self.mdm_layout().seq_len, 2), -1, np.int64)
    cells = np.arange(self.num_cells)
    groups[self._answer_start:] = np.stack(
        [cells // self.max_attrs, self.max_houses + cells % self.max_attrs], -1)
    return groups

  def token_groups(self, objective: str) -> np.ndarray:
    """int[V, 1], both layouts: house token h -> group h, attribute token a -> group
    Hm + a (as `position_groups`), so a clue's operands share an embedding with the
    table row or column they name; every other token none."""
    del objective  # the MDM and ARM layouts share the vocabulary
    v = self.vocab
    groups = np.full((v.size, 1), -1, np.int64)
    groups[v.house0:v.house0 + self.max_houses, 0] = np.arange(self.max_houses)
    groups[v.attr0:v.attr0 + self.max_attrs, 0] = self.max_houses + np.arange(self.max_attrs)
    return groups

  def answer_grid(self) -> tuple[int, int, np.ndarray, None]:
    """Houses x attributes, the last max_houses * max_attrs positions."""
    start = self._answer_start
    return (self.max_houses, self.max_attrs,
            np.arange(start, start + self.max_houses * self.max_attrs), None)

  def decode_tables(self, tokens_NxL: np.ndarray) -> np.ndarray:
    """Answer cells of MDM-layout tokens -> int[N, Hm, Am] values (-1: not a value)."""
    v = self.vocab
    tokens_NxL = np.asarray(tokens_NxL)
    if tokens_NxL.ndim != 2 or tokens_NxL.shape[1] != self.mdm_layout().seq_len:
      raise ValueError(f"expected tokens [N, {self.mdm_layout().seq_len}], got "
                       f"{tokens_NxL.shape}")
    cells = tokens_NxL[:, self._answer_start:].astype(np.int64).reshape(
        -1, self.max_houses, self.max_attrs)
    cells = v.value_of(np.arange(self.max_attrs)[None, None, :], cells)
    return np.where((cells >= 0) & (cells < self.max_houses), cells, -1)

  def satisfies(self, examples: base.Examples, tables: np.ndarray) -> np.ndarray:
    """bool[N]: `tables` [N, Hm, Am] are complete permutation tables obeying all clues."""
    hm, am = self.max_houses, self.max_attrs
    tables = np.asarray(tables, np.int64)
    n = tables.shape[0]
    nh = examples["num_houses"].astype(np.int64)
    exists = self._cell_exists(examples)
    in_range = (tables >= 0) & (tables < nh[:, None, None])
    complete = np.all(in_range | ~exists, axis=(1, 2))
    onehot = (tables[..., None] == np.arange(hm)) & exists[..., None] & in_range[..., None]
    counts = onehot.sum(axis=1)  # [N, Am, Hm(values)]
    value_exists = (np.arange(hm)[None, None, :] < nh[:, None, None]) & (
        np.arange(am)[None, :, None] < examples["num_attrs"][:, None, None])
    perm = np.all((counts == 1) | ~value_exists, axis=(1, 2))
    house_of = np.argmax(onehot, axis=1)  # [N, Am, Hm]: house of (a, v)
    clues = examples["clues"].astype(np.int64)
    typ = clues[..., 0]
    rows = np.arange(n)[:, None]

    def where(k):  # house of operand k in {0, 1, 2} (garbage where unused)
      a = np.clip(clues[..., 1 + 2 * k], 0, am - 1)
      val = np.clip(clues[..., 2 + 2 * k], 0, hm - 1)
      return house_of[rows, a, val]

    hx, hy, hz = where(0), where(1), where(2)
    last = (nh - 1)[:, None]
    holds = np.select(
        [typ == EQ, typ == NEQ, typ == NEXT, typ == ENDS, typ == IMLEFT, typ == LEFT,
         typ == BETWEEN, typ == POSITION],
        [hx == hy, hx != hy, np.abs(hx - hy) == 1, (hx == 0) | (hx == last),
         hx + 1 == hy, hx < hy, ((hy < hx) & (hx < hz)) | ((hz < hx) & (hx < hy)),
         hx == clues[..., 3]],
        default=True)
    return complete & perm & np.all(holds, axis=1)

  def check(self, examples: base.Examples, tokens_NxL: np.ndarray) -> dict[str, np.ndarray]:
    tokens_NxL = np.asarray(tokens_NxL)
    tables = self.decode_tables(tokens_NxL)
    if len(tables) != len(examples["num_houses"]):
      raise ValueError(f"{len(examples['num_houses'])} examples but {len(tables)} "
                       f"token rows")
    solved = self.satisfies(examples, tables)
    correct = tokens_NxL == self.mdm_encode(examples)["tokens"]
    return {"solved": solved, "correct": correct}

  # --- ARM layout ---

  def arm_layout(self, ordering: str) -> base.Layout:
    self._validate_ordering(ordering)
    return base.Layout(seq_len=self._answer_start + 3 * self.num_cells,
                       vocab_size=self.vocab.size)

  def _validate_ordering(self, ordering: str) -> None:
    if ordering not in self.arm_orderings:
      raise ValueError(f"unknown ordering {ordering!r} for zebra; choose one of "
                       f"{', '.join(self.arm_orderings)}")

  def cell_orders(self, examples: base.Examples, ordering: str,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """int[N, Hm*Am]: flat cells (h * Am + a) in `ordering`, -1 after H * A."""
    self._validate_ordering(ordering)
    if ordering == "solver":
      return examples["order"].astype(np.int64)
    exists = self._cell_exists(examples).reshape(len(examples["num_houses"]), -1)
    if ordering == "row_major":
      key = np.broadcast_to(np.arange(self.num_cells, dtype=float), exists.shape)
    else:
      rng = np.random.default_rng(0) if rng is None else rng
      key = rng.random(exists.shape)
    key = np.where(exists, key, np.inf)
    cells = np.argsort(key, axis=1, kind="stable")
    return np.where(np.take_along_axis(exists, cells, axis=1), cells, -1)

  def arm_encode(self, examples: base.Examples, ordering: str,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """'random' uses `rng` (a Generator seeded 0 when None)."""
    v = self.vocab
    cells = self.cell_orders(examples, ordering, rng)
    prompt = self._prompt_tokens(examples)
    n = prompt.shape[0]
    seq_len = self.arm_layout(ordering).seq_len
    tokens = np.full((n, seq_len), v.pad, np.int32)
    tokens[:, :prompt.shape[1]] = prompt  # empty clue slots are PAD already
    prompt_len = (3 + CLUE_WIDTH * examples["num_clues"].astype(np.int64))
    rows = np.arange(n)
    tokens[rows, prompt_len - 1] = v.sep
    loss_mask = np.zeros((n, seq_len), bool)
    ok = cells >= 0
    h, a = np.maximum(cells, 0) // self.max_attrs, np.maximum(cells, 0) % self.max_attrs
    value = examples["solution"].astype(np.int64)[rows[:, None], h, a]
    triples = np.stack([v.house0 + h, v.attr0 + a, v.value_token(a, value)], axis=-1)
    pos = prompt_len[:, None, None] + 3 * np.arange(self.num_cells)[None, :, None] + (
        np.arange(3)[None, None, :])
    sel = np.broadcast_to(ok[..., None], pos.shape)
    r = np.broadcast_to(rows[:, None, None], pos.shape)
    tokens[r[sel], pos[sel]] = triples[sel]
    loss_mask[r[sel], pos[sel]] = True
    return {"tokens": tokens, "loss_mask": loss_mask,
            "prompt_len": prompt_len.astype(np.int32)}

  def arm_legal_fn(self) -> Any:
    """Greedy ARM decoding's legal moves: a house that still has an empty cell, then
    an attribute whose cell in that house is empty, then a value < H; PAD once all
    H*A cells are written. H, A and the prompt's end (SEP) are read off the tokens."""
    if getattr(self, "_legal", None) is None:
      self._legal = functools.partial(_arm_legal, vocab=self.vocab,
                                      max_houses=self.max_houses, max_attrs=self.max_attrs)
    return self._legal

  def arm_decode(self, examples: base.Examples, tokens_NxLp: np.ndarray) -> np.ndarray:
    """Reads H*A triples after the prompt; the first triple naming a cell wins."""
    v = self.vocab
    tokens_NxLp = np.asarray(tokens_NxLp).astype(np.int64)
    n, seq_len = tokens_NxLp.shape
    if seq_len != self._answer_start + 3 * self.num_cells:
      raise ValueError(f"expected ARM tokens of length "
                       f"{self._answer_start + 3 * self.num_cells}, got {seq_len}")
    nh = examples["num_houses"].astype(np.int64)
    na = examples["num_attrs"].astype(np.int64)
    prompt_len = 3 + CLUE_WIDTH * examples["num_clues"].astype(np.int64)
    table = np.full((n, self.max_houses, self.max_attrs), -1, np.int64)
    rows = np.arange(n)
    for j in reversed(range(self.num_cells)):  # reversed: the first write wins
      p = np.minimum(prompt_len + 3 * j, seq_len - 3)
      h = tokens_NxLp[rows, p] - v.house0
      a = tokens_NxLp[rows, p + 1] - v.attr0
      val = v.value_of(a, tokens_NxLp[rows, p + 2])
      ok = ((j < nh * na) & (h >= 0) & (h < nh) & (a >= 0) & (a < na) &
            (val >= 0) & (val < self.max_houses))
      table[rows[ok], h[ok], a[ok]] = val[ok]
    mdm = self.mdm_encode(examples)["tokens"]
    exists = self._cell_exists(examples)
    answer = np.where(table >= 0, v.value_token(np.arange(self.max_attrs), table), v.mask)
    answer = np.where(exists, answer, v.pad).reshape(n, -1)
    mdm[:, self._answer_start:] = answer
    return mdm

  # --- symmetries ---

  def augment(self, examples: base.Examples, rng: np.random.Generator) -> base.Examples:
    """Per puzzle: relabel attributes and values, and mirror the houses with prob 1/2."""
    out = {k: np.array(x, copy=True) for k, x in examples.items()}
    am = self.max_attrs
    for i in range(len(out["num_houses"])):
      h_, a_ = int(out["num_houses"][i]), int(out["num_attrs"][i])
      attr_perm = rng.permutation(a_)
      value_perm = np.argsort(rng.random((a_, h_)), axis=1)  # [old attr, old value]
      mirror = bool(rng.random() < 0.5)
      house_map = np.arange(h_)[::-1] if mirror else np.arange(h_)
      sol = out["solution"][i, :h_, :a_].astype(np.int64)
      new_sol = np.full((h_, a_), -1, np.int64)
      for a in range(a_):
        new_sol[house_map, attr_perm[a]] = value_perm[a, sol[:, a]]
      out["solution"][i, :h_, :a_] = new_sol
      clues = out["clues"][i].astype(np.int64)
      for row in clues[:int(out["num_clues"][i])]:
        for k in (1, 3, 5):
          if row[k] >= 0 and not (k == 3 and row[0] == POSITION):
            a, val = row[k], row[k + 1]
            row[k], row[k + 1] = attr_perm[a], value_perm[a, val]
        if mirror:
          if row[0] in (IMLEFT, LEFT):
            row[1:3], row[3:5] = row[3:5].copy(), row[1:3].copy()
          elif row[0] == POSITION:
            row[3] = h_ - 1 - row[3]
      out["clues"][i] = clues
      order = out["order"][i].astype(np.int64)
      ok = order >= 0
      h, a = order[ok] // am, order[ok] % am
      order[ok] = house_map[h] * am + attr_perm[a]
      out["order"][i] = order
    return out


def clue_to_row(clue: tuple[int, int, int, int], num_houses: int) -> list[int]:
  """Internal clue -> stored row (type, a1, v1, a2, v2, a3, v3)."""
  typ = clue[0]
  if typ == POSITION:
    a, v = divmod(clue[1], num_houses)
    return [typ, a, v, clue[2], -1, -1, -1]
  row = [typ]
  for e in clue[1:]:
    row += list(divmod(e, num_houses)) if e >= 0 else [-1, -1]
  return row


def row_to_clue(row: Sequence[int], num_houses: int) -> tuple[int, int, int, int]:
  """Stored row -> internal clue tuple (inverse of `clue_to_row`)."""
  typ = int(row[0])
  if typ == POSITION:
    return (typ, int(row[1]) * num_houses + int(row[2]), int(row[3]), -1)
  ents = [int(row[k]) * num_houses + int(row[k + 1]) if row[k] >= 0 else -1
          for k in (1, 3, 5)]
  return (typ, ents[0], ents[1], ents[2])


def example_clues(examples: base.Examples, i: int) -> list[tuple[int, int, int, int]]:
  """Internal clue tuples of stored puzzle `i`."""
  h_ = int(examples["num_houses"][i])
  return [row_to_clue(r, h_) for r in examples["clues"][i, :int(examples["num_clues"][i])]]


def default_max_clues(max_houses: int, max_attrs: int) -> int:
  """ceil(1.1 k + 1.6 sqrt(k)), k = (H - 1) * A: about the 99.9th percentile of clue counts.

  Measured means are 1.1-1.15 k with standard deviation 0.46 sqrt(k); 6 x 6 gives 42
  slots (about 1 in 1500 6 x 6 puzzles needs more and is redrawn).
  """
  k = (max_houses - 1) * max_attrs
  return math.ceil(1.1 * k + 1.6 * math.sqrt(k))


def _arm_legal(tokens_BxL: Any, pos: Any, *, vocab: Vocab, max_houses: int,
               max_attrs: int) -> Any:
  """bool[B, vocab.size]: the legal tokens at position `pos` (`ZebraTask.arm_legal_fn`),
  from the complete answer triples before `pos`; traceable."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  v = vocab
  tokens_BxL = jnp.asarray(tokens_BxL).astype(jnp.int32)
  b, length = tokens_BxL.shape
  nh_B = tokens_BxL[:, 0] - v.house0 + 1
  na_B = tokens_BxL[:, 1] - v.attr0 + 1
  start_B = jnp.argmax(tokens_BxL == v.sep, axis=1) + 1  # the first answer token
  cells = max_houses * max_attrs
  at_BxKx3 = start_B[:, None, None] + 3 * jnp.arange(cells)[None, :, None] + jnp.arange(3)
  trip_BxKx3 = jnp.take_along_axis(tokens_BxL[:, :, None],
                                   jnp.clip(at_BxKx3, 0, length - 1).reshape(b, -1, 1),
                                   axis=1).reshape(b, cells, 3)
  h_BxK = trip_BxKx3[..., 0] - v.house0
  a_BxK = trip_BxKx3[..., 1] - v.attr0
  done_BxK = (at_BxKx3[..., 2] < pos) & (jnp.arange(cells)[None] < (nh_B * na_B)[:, None])
  ok_BxK = done_BxK & (h_BxK >= 0) & (h_BxK < nh_B[:, None]) & (a_BxK >= 0) & (
      a_BxK < na_B[:, None])
  cell_BxK = jnp.where(ok_BxK, h_BxK * max_attrs + a_BxK, -1)
  filled_BxC = jnp.any(cell_BxK[..., None] == jnp.arange(cells), axis=1)
  exists_BxHxA = ((jnp.arange(max_houses)[None, :, None] < nh_B[:, None, None])
                  & (jnp.arange(max_attrs)[None, None, :] < na_B[:, None, None]))
  empty_BxHxA = exists_BxHxA & ~filled_BxC.reshape(b, max_houses, max_attrs)
  offset_B = pos - start_B
  slot_B, index_B = offset_B % 3, offset_B // 3
  prev_B = tokens_BxL[:, jnp.maximum(pos - 1, 0)]
  house_B = jnp.clip(prev_B - v.house0, 0, max_houses - 1)

  def place(mask_BxM: Any, offset: int) -> Any:
    return jnp.pad(mask_BxM, ((0, 0), (offset, v.size - offset - mask_BxM.shape[1])))

  houses = place(empty_BxHxA.any(2), v.house0)
  attrs = place(jnp.take_along_axis(empty_BxHxA, house_B[:, None, None], axis=1)[:, 0],
                v.attr0)
  values_BxM = jnp.arange(max_houses)[None] < nh_B[:, None]
  if v.entity:  # the value tokens of the attribute just written (slot 1)
    attr_B = jnp.clip(prev_B - v.attr0, 0, max_attrs - 1)
    values_BxM = ((jnp.arange(v.num_values)[None] // max_houses == attr_B[:, None])
                  & jnp.tile(values_BxM, (1, max_attrs)))
  values = place(values_BxM, v.value0)
  pad = jnp.zeros((b, v.size), bool).at[:, v.pad].set(True)
  legal = jnp.where((slot_B == 0)[:, None], houses,
                    jnp.where((slot_B == 1)[:, None], attrs, values))
  return jnp.where((index_B < nh_B * na_B)[:, None], legal, pad)
