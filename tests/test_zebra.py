"""Tests for mdm_jax.data.zebra."""
from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from mdm_jax.data import get_task, zebra

T = zebra


def _row_holds(row, house_of, num_houses):
  """Test-local reading of a stored clue row; house_of[(a, v)] -> house."""
  typ = int(row[0])
  hx = house_of[(row[1], row[2])]
  if typ == T.ENDS:
    return hx in (0, num_houses - 1)
  if typ == T.POSITION:
    return hx == row[3]
  hy = house_of[(row[3], row[4])]
  if typ == T.EQ:
    return hx == hy
  if typ == T.NEQ:
    return hx != hy
  if typ == T.NEXT:
    return abs(hx - hy) == 1
  if typ == T.IMLEFT:
    return hy - hx == 1
  if typ == T.LEFT:
    return hx < hy
  hz = house_of[(row[5], row[6])]
  assert typ == T.BETWEEN
  return min(hy, hz) < hx < max(hy, hz)


def _house_of(table):
  return {(a, v): h for h, row in enumerate(table) for a, v in enumerate(row)}


def _rows(ex, i):
  return [tuple(int(x) for x in r) for r in ex["clues"][i, :ex["num_clues"][i]]]


def _table(ex, i):
  h, a = ex["num_houses"][i], ex["num_attrs"][i]
  return ex["solution"][i, :h, :a].tolist()


def _all_tables(num_houses, num_attrs):
  """int[T, H, A]: every solution table (one permutation per attribute)."""
  perms = list(itertools.permutations(range(num_houses)))
  tables = [np.array(combo).T for combo in itertools.product(perms, repeat=num_attrs)]
  return np.stack(tables)


def _exhaustive_solutions(tables, rows, num_houses):
  """bool[T]: tables satisfying every row (vectorised test-local reading)."""
  n, h_, a_ = tables.shape
  pos = np.argsort(tables, axis=1)  # pos[t, v, a] = house of value v of attribute a
  ok = np.ones(n, bool)
  for row in rows:
    typ = row[0]
    hx = pos[:, row[2], row[1]]
    if typ == T.ENDS:
      ok &= (hx == 0) | (hx == num_houses - 1)
      continue
    if typ == T.POSITION:
      ok &= hx == row[3]
      continue
    hy = pos[:, row[4], row[3]]
    if typ == T.EQ:
      ok &= hx == hy
    elif typ == T.NEQ:
      ok &= hx != hy
    elif typ == T.NEXT:
      ok &= np.abs(hx - hy) == 1
    elif typ == T.IMLEFT:
      ok &= hy - hx == 1
    elif typ == T.LEFT:
      ok &= hx < hy
    else:
      hz = pos[:, row[6], row[5]]
      ok &= (np.minimum(hy, hz) < hx) & (hx < np.maximum(hy, hz))
  return ok


@pytest.fixture(scope="module")
def task():
  return get_task("zebra")


@pytest.fixture(scope="module")
def examples(task):
  return task.generate("train", 60, seed=3)


@pytest.mark.parametrize("houses,attrs", [(3, 3), (4, 3)])
def test_unique_by_exhaustive_enumeration(houses, attrs):
  task = get_task("zebra", min_houses=houses, max_houses=houses, min_attrs=attrs,
                  max_attrs=attrs)
  ex = task.generate("train", 12, seed=0)
  tables = _all_tables(houses, attrs)
  for i in range(12):
    ok = _exhaustive_solutions(tables, _rows(ex, i), houses)
    assert ok.sum() == 1
    np.testing.assert_array_equal(tables[ok][0], ex["solution"][i, :houses, :attrs])


def test_count_solutions_matches_enumeration_on_clue_subsets():
  rng = np.random.default_rng(5)
  tables = _all_tables(3, 3)
  for _ in range(25):
    puzzle = T.make_puzzle(rng, 3, 3)
    keep = [c for c in puzzle.clues if rng.random() < 0.5]
    rows = [T.clue_to_row(c, 3) for c in keep]
    expected = int(_exhaustive_solutions(tables, rows, 3).sum())
    assert T.count_solutions(3, 3, keep, limit=10**6) == expected
    assert T.count_solutions(3, 3, keep, limit=2) == min(expected, 2)


def test_every_clue_true_and_types_valid(task, examples):
  for i in range(len(examples["num_houses"])):
    h, a = int(examples["num_houses"][i]), int(examples["num_attrs"][i])
    assert task.min_houses <= h <= task.max_houses and task.min_attrs <= a <= task.max_attrs
    house_of = _house_of(_table(examples, i))
    for row in _rows(examples, i):
      assert _row_holds(row, house_of, h), row
      if row[0] in (T.EQ, T.NEQ):
        assert row[1] != row[3]
    assert np.all(examples["clues"][i, examples["num_clues"][i]:] == -1)


def test_solver_order_covers_all_cells(task, examples):
  am = task.max_attrs
  for i in range(len(examples["num_houses"])):
    h, a = int(examples["num_houses"][i]), int(examples["num_attrs"][i])
    order = examples["order"][i]
    cells = sorted(hh * am + aa for hh in range(h) for aa in range(a))
    assert sorted(order[:h * a].tolist()) == cells
    assert np.all(order[h * a:] == -1)


def test_solver_solves_and_uses_every_clue(examples):
  for i in range(len(examples["num_houses"])):
    h, a = int(examples["num_houses"][i]), int(examples["num_attrs"][i])
    solver = T.DeductiveSolver(h, a)
    assert solver.solve_from_scratch(T.example_clues(examples, i))
    assert all(solver.used)
    house_of = _house_of(_table(examples, i))
    assert solver.houses() == [house_of[(e // h, e % h)] for e in range(h * a)]
    assert T.count_solutions(h, a, T.example_clues(examples, i)) == 1


def test_solver_is_sound_on_partial_clue_sets():
  rng = np.random.default_rng(11)
  for _ in range(40):
    h, a = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    puzzle = T.make_puzzle(rng, h, a)
    keep = [c for c in puzzle.clues if rng.random() < 0.6]
    solver = T.DeductiveSolver(h, a)
    solver.solve_from_scratch(keep)
    truth = _house_of(puzzle.table)
    for e, m in enumerate(solver.cand):
      assert m >> truth[(e // h, e % h)] & 1  # the true house is never eliminated


def test_solver_subset_rules():
  # Attribute 0 of 4 houses: values 0 and 1 both confined to houses {0, 1} (a naked
  # pair) force values 2 and 3 out of houses 0 and 1.
  solver = T.DeductiveSolver(4, 1)
  solver.cand = [0b0011, 0b0011, 0b1111, 0b1111]
  solver.propagate()
  assert solver.cand[2] == 0b1100 and solver.cand[3] == 0b1100
  # 6 houses; houses 0 and 1 can only hold values 0 or 1 (a hidden pair, i.e. a naked
  # quadruple of values 2..5, beyond the value view's pairs/triples): values 0, 1
  # are confined to houses 0, 1.
  solver = T.DeductiveSolver(6, 1)
  solver.cand = [0b111111, 0b111111] + [0b111100] * 4
  solver.propagate()
  assert solver.cand[0] == 0b000011 and solver.cand[1] == 0b000011
  assert solver.cand[2:] == [0b111100] * 4


def test_draw_weights_roughly_respected():
  rng = np.random.default_rng(0)
  table = T._random_table(rng, 6, 6)
  u = T._Uniforms(rng)
  counts = collections.Counter(T._draw_clue(u, table, 6, 6)[0] for _ in range(20000))
  total = sum(T.CLUE_WEIGHTS)
  for typ, w in enumerate(T.CLUE_WEIGHTS):
    assert abs(counts[typ] / 20000 - w / total) < 0.015, (typ, counts)
  assert counts[T.POSITION] == 0


def test_useful_clue_shortcut_matches_rejection_sampling():
  rng = np.random.default_rng(2)
  h, a = 5, 5
  table = T._random_table(rng, h, a)
  u = T._Uniforms(rng)
  solver = T.DeductiveSolver(h, a)
  while len(solver.clues) < 8:
    solver.add(T._draw_clue(u, table, h, a))
  live = T._useful_clues(solver, table)
  for _, _, clues in live:
    assert all(solver.revise(c) for c in clues)
  rejection = collections.Counter()
  while sum(rejection.values()) < 3000:
    c = T._draw_clue(u, table, h, a)
    if solver.revise(c):
      rejection[c[0]] += 1
      assert c in live[[t for t, _, _ in live].index(c[0])][2]
  shortcut = collections.Counter(T._sample_useful(u, live)[0] for _ in range(3000))
  for typ in range(7):
    assert abs(rejection[typ] - shortcut[typ]) / 3000 < 0.04, (rejection, shortcut)


def test_generation_with_shortcut_only(monkeypatch):
  monkeypatch.setattr(T, "_MAX_MISSES", 0)
  task = get_task("zebra", max_houses=5, max_attrs=5)
  ex = task.generate("train", 10, seed=1)
  for i in range(10):
    h, a = int(ex["num_houses"][i]), int(ex["num_attrs"][i])
    assert T.count_solutions(h, a, T.example_clues(ex, i)) == 1
  assert task.check(ex, task.mdm_encode(ex)["tokens"])["solved"].all()


def test_final_clue_types_cover_all_kinds():
  task = get_task("zebra", min_houses=5, max_houses=6, min_attrs=5, max_attrs=6)
  ex = task.generate("train", 40, seed=0)
  types = collections.Counter(ex["clues"][..., 0][ex["clues"][..., 0] >= 0].tolist())
  assert set(types) >= set(range(7))
  assert types[T.EQ] > types[T.NEQ]


def test_mdm_layout(task, examples):
  layout = task.mdm_layout()
  enc = task.mdm_encode(examples)
  tokens, maskable = enc["tokens"], enc["maskable"]
  n = len(examples["num_houses"])
  assert tokens.shape == maskable.shape == (n, layout.seq_len)
  assert tokens.min() >= 0 and tokens.max() < layout.vocab_size
  assert not np.any(tokens == layout.mask_id)
  hm, am = task.max_houses, task.max_attrs
  assert layout.seq_len == 3 + T.CLUE_WIDTH * task.max_clues + hm * am
  answer = maskable[:, -hm * am:].reshape(n, hm, am)
  np.testing.assert_array_equal(answer, examples["solution"] >= 0)
  assert not maskable[:, :-hm * am].any()
  np.testing.assert_array_equal(task.decode_tables(tokens), examples["solution"])
  # Prompt: size tokens, then 7 tokens per clue (type first), SEP before the answer.
  v = task.vocab
  np.testing.assert_array_equal(tokens[:, 0], v.house0 + examples["num_houses"] - 1)
  np.testing.assert_array_equal(tokens[:, 1], v.attr0 + examples["num_attrs"] - 1)
  slots = tokens[:, 2:-hm * am - 1].reshape(n, task.max_clues, T.CLUE_WIDTH)
  typ = examples["clues"][..., 0]
  np.testing.assert_array_equal(slots[..., 0], np.where(typ >= 0, v.type0 + typ, v.pad))
  assert np.all(tokens[:, -hm * am - 1] == v.sep)


def test_default_sizes():
  task = get_task("zebra")
  assert task.max_clues == 42
  assert task.vocab.size == 3 + len(T.CLUE_TYPES) + 6 + 6 + 6
  assert task.mdm_layout().seq_len == 3 + 7 * 42 + 36
  assert task.arm_layout("solver").seq_len == 3 + 7 * 42 + 3 * 36


@pytest.mark.parametrize("ordering", ["solver", "row_major", "random"])
def test_arm_round_trip(task, examples, ordering):
  enc = task.arm_encode(examples, ordering, np.random.default_rng(0))
  layout = task.arm_layout(ordering)
  n = len(examples["num_houses"])
  assert enc["tokens"].shape == enc["loss_mask"].shape == (n, layout.seq_len)
  assert enc["tokens"].max() < layout.vocab_size
  np.testing.assert_array_equal(enc["prompt_len"], 3 + 7 * examples["num_clues"])
  cells = examples["num_houses"].astype(int) * examples["num_attrs"]
  np.testing.assert_array_equal(enc["loss_mask"].sum(1), 3 * cells)
  v = task.vocab
  mdm = task.mdm_encode(examples)["tokens"]
  for i in range(n):
    p = enc["prompt_len"][i]
    assert enc["tokens"][i, p - 1] == v.sep
    assert enc["loss_mask"][i, p:p + 3 * cells[i]].all()
    np.testing.assert_array_equal(enc["tokens"][i, :p - 1], mdm[i, :p - 1])
    triples = enc["tokens"][i, p:p + 3 * cells[i]].reshape(-1, 3)
    hs, as_ = triples[:, 0] - v.house0, triples[:, 1] - v.attr0
    np.testing.assert_array_equal(triples[:, 2] - v.value0, examples["solution"][i, hs, as_])
    flat = hs * task.max_attrs + as_
    if ordering == "solver":
      np.testing.assert_array_equal(flat, examples["order"][i, :cells[i]])
    if ordering == "row_major":
      assert np.all(np.diff(flat) > 0)
  decoded = task.arm_decode(examples, enc["tokens"])
  np.testing.assert_array_equal(decoded, mdm)
  assert task.check(examples, decoded)["solved"].all()


def test_arm_decode_of_bad_outputs(task, examples):
  enc = task.arm_encode(examples, "row_major")
  tokens = enc["tokens"].copy()
  p0, p1 = enc["prompt_len"][:2]
  tokens[0, p0 + 2] = task.vocab.pad  # first triple's value is not a value token
  tokens[1, p1 + 3:p1 + 6] = tokens[1, p1:p1 + 3]  # second triple repeats the first cell
  out = task.check(examples, task.arm_decode(examples, tokens))
  assert not out["solved"][0] and not out["solved"][1]
  assert out["solved"][2:].all()


def test_random_ordering_depends_on_rng(task, examples):
  a = task.arm_encode(examples, "random", np.random.default_rng(1))["tokens"]
  b = task.arm_encode(examples, "random", np.random.default_rng(2))["tokens"]
  c = task.arm_encode(examples, "random", np.random.default_rng(1))["tokens"]
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, c)


def _hand_made():
  """3 houses x 2 attributes; solution table[h][a] = [[0, 2], [1, 0], [2, 1]]."""
  task = get_task("zebra", min_houses=3, max_houses=3, min_attrs=2, max_attrs=2,
                  max_clues=4)
  rows = [(T.EQ, 0, 0, 1, 2, -1, -1),        # (0,0) with (1,2): house 0
          (T.LEFT, 0, 1, 0, 2, -1, -1),      # (0,1) left of (0,2)
          (T.ENDS, 0, 0, -1, -1, -1, -1)]    # (0,0) at an end
  clues = np.full((1, 4, 7), -1, np.int8)
  clues[0, :3] = rows
  ex = {"num_houses": np.array([3], np.int8), "num_attrs": np.array([2], np.int8),
        "num_clues": np.array([3], np.int16), "clues": clues,
        "solution": np.array([[[0, 2], [1, 0], [2, 1]]], np.int8),
        "order": np.array([[0, 1, 2, 3, 4, 5]], np.int8)}
  return task, ex


def _with_table(task, ex, table):
  tokens = task.mdm_encode(ex)["tokens"].copy()
  v = task.vocab
  tokens[0, -6:] = v.value0 + np.asarray(table).reshape(-1)
  return tokens


def test_check_hand_made_tables():
  task, ex = _hand_made()
  right = _with_table(task, ex, [[0, 2], [1, 0], [2, 1]])
  out = task.check(ex, right)
  assert out["solved"][0] and out["correct"].all()
  # Attribute 1 is not pinned down: another valid table is solved but not correct.
  other = _with_table(task, ex, [[0, 2], [1, 1], [2, 0]])
  out = task.check(ex, other)
  assert out["solved"][0]
  assert out["correct"][0, -6:].tolist() == [True, True, True, False, True, False]
  # Breaks '=' (value 2 of attribute 1 leaves house 0).
  assert not task.check(ex, _with_table(task, ex, [[0, 0], [1, 2], [2, 1]]))["solved"][0]
  # Breaks left-of (values 1 and 2 of attribute 0 swapped).
  assert not task.check(ex, _with_table(task, ex, [[0, 2], [2, 0], [1, 1]]))["solved"][0]
  # Breaks ends (value 0 of attribute 0 in the middle).
  assert not task.check(ex, _with_table(task, ex, [[1, 2], [0, 0], [2, 1]]))["solved"][0]
  # Not a permutation (value 0 twice in attribute 0), clues otherwise fine.
  assert not task.check(ex, _with_table(task, ex, [[0, 2], [0, 0], [2, 1]]))["solved"][0]
  # A masked cell is incomplete.
  masked = right.copy()
  masked[0, -1] = task.vocab.mask
  out = task.check(ex, masked)
  assert not out["solved"][0] and not out["correct"][0, -1]


def test_check_every_clue_type():
  task = get_task("zebra", min_houses=4, max_houses=4, min_attrs=2, max_attrs=2,
                  max_clues=8)
  table = [[0, 1], [1, 0], [2, 3], [3, 2]]  # table[h][a]
  cases = [
      ((T.EQ, 0, 0, 1, 1, -1, -1), (T.EQ, 0, 0, 1, 0, -1, -1)),
      ((T.NEQ, 0, 0, 1, 0, -1, -1), (T.NEQ, 0, 0, 1, 1, -1, -1)),
      ((T.NEXT, 0, 2, 1, 0, -1, -1), (T.NEXT, 0, 0, 1, 3, -1, -1)),
      ((T.ENDS, 1, 2, -1, -1, -1, -1), (T.ENDS, 1, 0, -1, -1, -1, -1)),
      ((T.IMLEFT, 0, 1, 1, 3, -1, -1), (T.IMLEFT, 1, 3, 0, 1, -1, -1)),
      ((T.LEFT, 1, 1, 0, 3, -1, -1), (T.LEFT, 0, 3, 1, 1, -1, -1)),
      ((T.BETWEEN, 0, 1, 1, 2, 0, 0), (T.BETWEEN, 0, 0, 1, 2, 0, 1)),
      ((T.BETWEEN, 0, 2, 0, 3, 1, 1), (T.BETWEEN, 0, 3, 0, 2, 1, 1)),
      ((T.POSITION, 1, 3, 2, -1, -1, -1), (T.POSITION, 1, 3, 1, -1, -1, -1)),
  ]
  house_of = _house_of(table)
  for true_row, false_row in cases:
    assert _row_holds(true_row, house_of, 4) and not _row_holds(false_row, house_of, 4)
    for row, want in ((true_row, True), (false_row, False)):
      clues = np.full((1, 8, 7), -1, np.int8)
      clues[0, 0] = row
      ex = {"num_houses": np.array([4], np.int8), "num_attrs": np.array([2], np.int8),
            "num_clues": np.array([1], np.int16), "clues": clues,
            "solution": np.array([table], np.int8), "order": np.full((1, 8), -1, np.int8)}
      assert task.satisfies(ex, ex["solution"])[0] == want, row
      clue = T.row_to_clue(row, 4)
      assert T.clue_to_row(clue, 4) == list(row)
      houses = [house_of[(e // 4, e % 4)] for e in range(8)]
      assert T.clue_holds(clue, houses, 4) == want


def test_determinism_and_splits():
  task = get_task("zebra", max_houses=4, max_attrs=4)
  a = task.generate("train", 30, seed=7)
  b = task.generate("train", 30, seed=7)
  c = task.generate("train", 30, seed=8)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["solution"], c["solution"])
  test = task.generate("test", 30, seed=7)
  train_tables = {t.tobytes() + bytes([h, w]) for t, h, w in zip(
      a["solution"], a["num_houses"], a["num_attrs"])}
  train_tables |= {t.tobytes() + bytes([h, w]) for t, h, w in zip(
      c["solution"], c["num_houses"], c["num_attrs"])}
  test_tables = {t.tobytes() + bytes([h, w]) for t, h, w in zip(
      test["solution"], test["num_houses"], test["num_attrs"])}
  assert not train_tables & test_tables
  for i in range(30):
    table = _table(test, i)
    assert T._table_bucket(table) == 0
    assert T._table_bucket(_table(a, i)) != 0


def test_tiny_sizes_terminate():
  # 2 x 3 has 8 solution tables, all in one hash bucket: that size is not split.
  assert not T._splittable(2, 3)
  task = get_task("zebra", min_houses=2, max_houses=2, min_attrs=3, max_attrs=3)
  for split in ("train", "test"):
    ex = task.generate(split, 4, seed=0)
    assert task.check(ex, task.mdm_encode(ex)["tokens"])["solved"].all()
    tables = _all_tables(2, 3)
    for i in range(4):
      assert _exhaustive_solutions(tables, _rows(ex, i), 2).sum() == 1


def test_first_examples_do_not_depend_on_num():
  task = get_task("zebra", max_houses=4, max_attrs=4)
  a = task.generate("train", 5, seed=1)
  b = task.generate("train", 8, seed=1)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k][:5])


def test_augment_keeps_puzzles_valid(task, examples):
  aug = task.augment(examples, np.random.default_rng(0))
  assert task.check(aug, task.mdm_encode(aug)["tokens"])["solved"].all()
  assert not np.array_equal(aug["solution"], examples["solution"])
  for i in range(10):
    h, a = int(aug["num_houses"][i]), int(aug["num_attrs"][i])
    house_of = _house_of(_table(aug, i))
    assert all(_row_holds(r, house_of, h) for r in _rows(aug, i))
    assert T.count_solutions(h, a, T.example_clues(aug, i)) == 1
    order = aug["order"][i, :h * a]
    assert sorted(order.tolist()) == sorted(hh * task.max_attrs + aa
                                            for hh in range(h) for aa in range(a))
  for i in range(5):  # the solver order is a valid fill order of the new puzzle
    h, a = int(aug["num_houses"][i]), int(aug["num_attrs"][i])
    solver = T.DeductiveSolver(h, a)
    assert solver.solve_from_scratch(T.example_clues(aug, i))


def test_max_clues_respected():
  task = get_task("zebra", min_houses=4, max_houses=4, min_attrs=4, max_attrs=4,
                  max_clues=13)
  ex = task.generate("train", 20, seed=0)
  assert ex["num_clues"].max() <= 13 and ex["clues"].shape[1] == 13


def test_bad_arguments(task, examples):
  with pytest.raises(ValueError, match="houses"):
    get_task("zebra", min_houses=1)
  with pytest.raises(ValueError, match="attrs"):
    get_task("zebra", min_attrs=5, max_attrs=4)
  with pytest.raises(ValueError, match="max_clues"):
    get_task("zebra", max_clues=0)
  with pytest.raises(ValueError, match="split"):
    task.generate("hard", 1, 0)
  with pytest.raises(ValueError, match="ordering"):
    task.arm_encode(examples, "diagonal")
  with pytest.raises(ValueError, match="tokens"):
    task.check(examples, np.zeros((2, 5), np.int32))
  rebuilt = get_task("zebra", **task.params())
  assert rebuilt.params() == task.params()


def test_arm_legal_moves_fill_each_cell_once(task, examples):
  """Greedy decoding of random logits, restricted to `arm_legal_fn`, writes each of
  the H*A cells once with a value < H, then PAD; unrestricted, it leaves cells empty."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mdm_jax import sampling  # pylint: disable=g-import-not-at-top
  ex = {k: v[:12] for k, v in examples.items()}
  tokens, plen = task.arm_prompt(ex, "row_major")
  layout = task.arm_layout("row_major")
  logits = jnp.asarray(np.random.default_rng(0).normal(
      size=(len(tokens), layout.seq_len, layout.vocab_size)), jnp.float32)
  out = np.asarray(sampling.ar_greedy(lambda t: logits, tokens, plen, task.arm_legal_fn()))
  v = task.vocab
  for i in range(len(out)):
    nh, na = int(ex["num_houses"][i]), int(ex["num_attrs"][i])
    np.testing.assert_array_equal(out[i, :plen[i]], tokens[i, :plen[i]])
    triples = out[i, plen[i]:plen[i] + 3 * nh * na].reshape(-1, 3)
    hs, as_, vals = triples[:, 0] - v.house0, triples[:, 1] - v.attr0, triples[:, 2] - v.value0
    assert sorted((hs * na + as_).tolist()) == list(range(nh * na)), i
    assert ((vals >= 0) & (vals < nh)).all()
    assert (out[i, plen[i] + 3 * nh * na:] == v.pad).all()
  decoded = task.arm_decode(ex, out)
  assert not (decoded == v.mask).any()
  free = task.arm_decode(ex, np.asarray(sampling.ar_greedy(lambda t: logits, tokens, plen)))
  assert (free == v.mask).any()


def test_structure_groups_name_the_table_row_and_column():
  task = zebra.ZebraTask(3, 4, 3, 5)
  v = task.vocab
  pos = task.position_groups()
  assert pos.shape == (task.mdm_layout().seq_len, 2)
  start = task.mdm_layout().seq_len - task.num_cells
  assert (pos[:start] == -1).all()
  h, a = 2, 3
  np.testing.assert_array_equal(pos[start + h * task.max_attrs + a], [h, 4 + a])
  tok = task.token_groups("arm")
  assert tok.shape == (v.size, 1)
  assert tok[v.house0 + h, 0] == h and tok[v.attr0 + a, 0] == 4 + a
  assert (tok[v.value0:v.value0 + task.max_houses] == -1).all()
  assert np.array_equal(tok, task.token_groups("mdm"))


def test_entity_tokens_name_the_attribute_in_clues_and_answers(task, examples):
  """entity_tokens=True: a value token is (attribute, value), the same token in a
  clue operand and in the answer cell holding that entity; the puzzles, their cache
  key and what check() accepts do not change."""
  ent = get_task("zebra", entity_tokens=True)
  v = ent.vocab
  assert ent.data_params() == task.data_params() and ent.params()["entity_tokens"]
  assert "entity_tokens" not in task.params()
  assert v.size == task.vocab.size + 6 * 5 and ent.mdm_layout().vocab_size == v.size
  enc = ent.mdm_encode(examples)
  tokens = enc["tokens"]
  np.testing.assert_array_equal(enc["maskable"], task.mdm_encode(examples)["maskable"])
  np.testing.assert_array_equal(ent.decode_tables(tokens), examples["solution"])
  assert ent.check(examples, tokens)["solved"].all()
  hm, am = ent.max_houses, ent.max_attrs
  answer = tokens[:, -hm * am:].reshape(-1, hm, am)
  slots = tokens[:, 2:-hm * am - 1].reshape(len(tokens), ent.max_clues, T.CLUE_WIDTH)
  for i in range(len(tokens)):
    for row, slot in zip(examples["clues"][i, :examples["num_clues"][i]], slots[i]):
      for k in (1, 3, 5):
        if row[k] >= 0 and not (k == 3 and row[0] == T.POSITION):
          house = [h for h in range(hm) if examples["solution"][i, h, row[k]] == row[k + 1]]
          assert slot[k + 1] == answer[i, house[0], row[k]]  # clue token == cell token
  # Two attributes' value 0 are different tokens; decoding checks the attribute.
  assert v.value_token(0, 0) != v.value_token(1, 0)
  wrong = tokens.copy()
  wrong[0, -hm * am] = v.value_token(1, examples["solution"][0, 0, 0])  # attr 1's token in attr 0
  assert ent.decode_tables(wrong)[0, 0, 0] == -1 and not ent.check(examples, wrong)["solved"][0]
  for ordering in ("solver", "random"):
    arm = ent.arm_encode(examples, ordering, np.random.default_rng(0))
    assert arm["tokens"].max() < ent.arm_layout(ordering).vocab_size
    np.testing.assert_array_equal(ent.arm_decode(examples, arm["tokens"]), tokens)
  with pytest.raises(ValueError, match="entity_tokens"):
    get_task("zebra", entity_tokens="yes")


def test_entity_tokens_legal_moves_write_the_attributes_own_values(examples):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mdm_jax import sampling  # pylint: disable=g-import-not-at-top
  ent = get_task("zebra", entity_tokens=True)
  ex = {k: v[:12] for k, v in examples.items()}
  tokens, plen = ent.arm_prompt(ex, "random", rng=np.random.default_rng(1))
  layout = ent.arm_layout("random")
  logits = jnp.asarray(np.random.default_rng(2).normal(
      size=(len(tokens), layout.seq_len, layout.vocab_size)), jnp.float32)
  out = np.asarray(sampling.ar_greedy(lambda t: logits, tokens, plen, ent.arm_legal_fn()))
  v = ent.vocab
  for i in range(len(out)):
    nh, na = int(ex["num_houses"][i]), int(ex["num_attrs"][i])
    triples = out[i, plen[i]:plen[i] + 3 * nh * na].reshape(-1, 3)
    as_ = triples[:, 1] - v.attr0
    vals = v.value_of(as_, triples[:, 2])
    assert ((vals >= 0) & (vals < nh)).all(), i
  decoded = ent.arm_decode(ex, out)
  assert not (decoded == v.mask).any()
