"""Tests for the Sudoku task: generator, seven-strategy solver, splits, layouts,
symmetries and puzzle-file import."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from mdm_jax.data import get_task
from mdm_jax.data import sudoku as sd
from mdm_jax.data import sudoku_solver as ss

SHAPES = [(2, 2), (2, 3)]
# Two qqwing puzzles (`qqwing --generate 2 --csv --solution`): unique by construction.
QQWING_ROWS = [
    ("15...49.3..47........39....3...5..9...82...1..4..8.2...8..7....7.1.2.......1..8..",
     "157864923934712586826395741312457698678239415549681237483976152791528364265143879"),
    (".3.9.2.1...........2.845.....1.5...63.2.1..849.63.4............4..581.6...5....9.",
     "537962418864137529129845673741258936352619784986374152218796345493581267675423891"),
]
QQWING_CSV = "Puzzle,Solution,\n" + "".join(f"{p},{s},\n" for p, s in QQWING_ROWS)


def _valid_grid(grid, br, bc):
  """Independent validity check: every row, column and box is a permutation."""
  n = br * bc
  g = np.asarray(grid).reshape(n, n)
  want = list(range(1, n + 1))
  rows = all(sorted(r) == want for r in g)
  cols = all(sorted(c) == want for c in g.T)
  boxes = all(sorted(g[r:r + br, c:c + bc].ravel()) == want
              for r in range(0, n, br) for c in range(0, n, bc))
  return rows and cols and boxes


@pytest.fixture(scope="module")
def easy9():
  return sd.generate_examples(3, 3, "train", 24, seed=5, workers=1, block=96)


@pytest.fixture(scope="module")
def small_sets():
  return {shape: sd.generate_examples(*shape, "train", 40, seed=1, workers=1)
          for shape in SHAPES}


@pytest.fixture(scope="module")
def hard6():
  return sd.generate_examples(2, 3, "hard", 4, seed=2, workers=1)


# ---------------------------------------------------------------------------------
# Generation: uniqueness, validity, solver trace.


def _check_examples(ex, br, bc, easy=True):
  n = br * bc
  assert ex["puzzle"].dtype == np.int8 and ex["solution"].dtype == np.int8
  assert ex["order"].shape == ex["puzzle"].shape + (4,)
  for i in range(ex["puzzle"].shape[0]):
    puzzle, sol = ex["puzzle"][i], ex["solution"][i]
    assert ss.count_solutions_simple(puzzle, br, bc) == 1
    assert _valid_grid(sol, br, bc)
    given = puzzle > 0
    assert (puzzle[given] == sol[given]).all()
    assert ex["num_givens"][i] == given.sum()
    order = ex["order"][i]
    filled = order[:, 0] >= 0
    cells = order[filled, 0] * n + order[filled, 1]
    assert len(set(cells.tolist())) == cells.size  # each cell at most once
    k = int(given.sum())
    assert set(cells[:k].tolist()) == set(np.nonzero(given)[0].tolist())  # givens 1st
    assert (order[:k, 3] == ss.GIVEN).all()
    assert (order[filled, 2] == sol[cells]).all()  # every deduction is right
    assert ((order[k:, 3][filled[k:]] >= 2) & (order[k:, 3][filled[k:]] <= 8)).all()
    if easy:
      assert filled.all() and ex["max_strategy"][i] in range(2, 9)
      assert ex["max_strategy"][i] == order[:, 3].max()
    else:
      assert not filled.all() and ex["max_strategy"][i] == ss.BEYOND
      assert (order[~filled] == -1).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_small_generated_puzzles(small_sets, shape):
  _check_examples(small_sets[shape], *shape)


def test_9x9_generated_puzzles(easy9):
  _check_examples(easy9, 3, 3)
  assert 17 <= easy9["num_givens"].min() and easy9["num_givens"].mean() < 35


def test_hard_puzzles_unique_and_not_strategy_solvable(hard6):
  _check_examples(hard6, 2, 3, easy=False)
  res = ss.solve(ss.geometry(2, 3), hard6["puzzle"])
  assert (res.status == ss.STUCK).all()


@pytest.fixture(scope="module")
def hard9():
  return sd.generate_examples(3, 3, "hard", 6, seed=4, workers=1)


def test_hard_9x9_unique_not_strategy_solvable_and_held_out(hard9):
  _check_examples(hard9, 3, 3, easy=False)  # count_solutions_simple: one solution
  res = ss.solve(ss.geometry(3, 3), hard9["puzzle"])
  assert (res.status == ss.STUCK).all() and (hard9["max_strategy"] == ss.BEYOND).all()
  assert sd.heldout(hard9["solution"], 9).all()  # never a training grid
  assert hard9["num_givens"].min() >= 17


def test_hard_generation_is_deterministic():
  def make(num, seed):
    return sd.generate_examples(3, 3, "hard", num, seed=seed, workers=1, block=48)
  a, again, fewer, other = make(20, 4), make(20, 4), make(3, 4), make(3, 5)
  for k in a:
    np.testing.assert_array_equal(a[k], again[k])
    np.testing.assert_array_equal(a[k][:3], fewer[k])
  assert not np.array_equal(fewer["puzzle"], other["puzzle"])
  # Blocks made together (one clue-removal pool) are the blocks made one by one.
  together = sd.generate_blocks(3, 3, "hard", 1, 2, 3, size=40)
  assert sum(ex["puzzle"].shape[0] for ex in together) > 0
  for b, ex in enumerate(together):
    alone = sd.generate_block(3, 3, "hard", 1, 2 + b, size=40)
    for k in ex:
      np.testing.assert_array_equal(ex[k], alone[k])


@pytest.mark.parametrize("shape, num", [((2, 2), 20), ((2, 3), 12), ((3, 3), 2)])
def test_unique_minimal_is_the_one_clue_at_a_time_rule(shape, num):
  g = ss.geometry(*shape)
  rng = np.random.default_rng(11)
  grids = ss.random_grids(g, num, rng)
  order = np.argsort(rng.random(grids.shape), 1)
  got = ss.unique_minimal(g, grids, order_BxN=order, slots=5)  # a pool refilled
  for i in range(num):
    want = grids[i].copy()
    for cell in order[i]:  # keep a removal iff the puzzle stays unique
      trial = want.copy()
      trial[cell] = 0
      if ss.count_solutions_simple(trial, *shape) == 1:
        want = trial
    np.testing.assert_array_equal(got[i], want)


def test_solver_solves_easy_and_matches_solution(easy9):
  res = ss.solve(ss.geometry(3, 3), easy9["puzzle"])
  assert res.solved.all()
  assert (res.grid == easy9["solution"]).all()


def test_random_grids_are_valid_and_varied():
  for br, bc in [(2, 2), (2, 3), (3, 3)]:
    grids = ss.random_grids(ss.geometry(br, bc), 50, np.random.default_rng(0))
    assert all(_valid_grid(x, br, bc) for x in grids)
    assert len({x.tobytes() for x in grids}) > (3 if br * bc == 4 else 45)


def test_batched_counter_agrees_with_simple_counter():
  rng = np.random.default_rng(3)
  for br, bc in SHAPES:
    g = ss.geometry(br, bc)
    grids = ss.random_grids(g, 60, rng)
    puzzles = grids * (rng.random(grids.shape) < 0.45)
    puzzles[:5, 0] = puzzles[:5, 1] = grids[:5, 1]  # a repeated digit: no solution
    counts, first = ss.count_solutions(g, puzzles)
    want = [ss.count_solutions_simple(p, br, bc) for p in puzzles]
    assert counts.tolist() == want
    assert set(want) == {0, 1, 2}
    for p, c, f in zip(puzzles, counts, first):
      if c >= 1:
        assert _valid_grid(f, br, bc) and ((p == 0) | (p == f)).all()


# ---------------------------------------------------------------------------------
# Strategies.


def _state(g, setup):
  c = np.full((1, g.num_cells), g.full, np.uint16)
  for cell, digits in setup.items():
    c[0, cell] = sum(1 << (d - 1) for d in digits)
  return c


def _elim(level, setup):
  g = ss.geometry(3, 3)
  e = ss.eliminations(g, level, _state(g, setup))[0]
  return {int(i): sorted(d + 1 for d in range(9) if e[i] >> d & 1)
          for i in np.nonzero(e)[0]}


def test_naked_pair_eliminates_from_shared_units():
  # (0,0) and (0,1) hold {1,2}: 1 and 2 leave row 0 and box 0, not column 0.
  got = _elim(ss.NAKED_PAIR, {0: [1, 2], 1: [1, 2]})
  want = set(range(2, 9)) | {9, 10, 11, 18, 19, 20}
  assert set(got) == want and all(v == [1, 2] for v in got.values())


def test_naked_triple():
  got = _elim(ss.NAKED_TRIPLE, {0: [1, 2], 1: [2, 3], 5: [1, 3]})
  assert set(got) == {2, 3, 4, 6, 7, 8} and all(v == [1, 2, 3] for v in got.values())


def test_locked_candidates_pointing_and_claiming():
  # Pointing: in box 0, digit 1 only in row 0 -> leaves the rest of row 0.
  no1 = [1, 2, 3, 4, 5, 6, 7, 8, 9][1:]
  got = _elim(ss.LOCKED_CANDIDATE, {i: no1 for i in (9, 10, 11, 18, 19, 20)})
  assert got == {i: [1] for i in range(3, 9)}
  # Claiming: in row 0, digit 5 only in box 0 -> leaves the rest of box 0.
  no5 = [1, 2, 3, 4, 6, 7, 8, 9]
  got = _elim(ss.LOCKED_CANDIDATE, {i: no5 for i in range(3, 9)})
  assert got == {i: [5] for i in (9, 10, 11, 18, 19, 20)}


def test_xy_wing():
  # Pivot (0,0) {1,2}, pincers (0,5) {1,3} and (5,0) {2,3}: 3 leaves (5,5).
  assert _elim(ss.XY_WING, {0: [1, 2], 5: [1, 3], 45: [2, 3]}) == {50: [3]}
  # Pincers sharing the same pivot digit are no wing.
  assert _elim(ss.XY_WING, {0: [1, 2], 5: [1, 3], 45: [1, 3]}) == {}


def test_unique_rectangle_type1():
  # (0,0) (0,3) (1,0) = {1,2}, (1,3) = {1,2,3}: rows 0-1 and columns 0,3 span two
  # boxes, so (1,3) cannot be 1 or 2.
  assert _elim(ss.UNIQUE_RECTANGLE, {0: [1, 2], 3: [1, 2], 9: [1, 2],
                                     12: [1, 2, 3]}) == {12: [1, 2]}
  # Four boxes (rows 0 and 3): no deadly pattern, no elimination.
  assert _elim(ss.UNIQUE_RECTANGLE, {0: [1, 2], 3: [1, 2], 27: [1, 2],
                                     30: [1, 2, 3]}) == {}


def test_singles_on_literature_puzzle():
  # A well-known easy puzzle (Wikipedia's Sudoku article): singles solve it.
  text = ("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28...."
          "419..5....8..79")
  puzzle = np.array([[0 if ch == "." else int(ch) for ch in text]], np.int8)
  res = ss.solve(ss.geometry(3, 3), puzzle)
  assert res.solved.all() and res.max_strategy[0] in (2, 3)
  assert _valid_grid(res.grid[0], 3, 3)
  assert ss.count_solutions_simple(puzzle[0], 3, 3) == 1


def test_every_strategy_fires_in_generated_data():
  ex = sd.generate_examples(3, 3, "test", 400, seed=11, workers=1, block=512)
  seen = np.bincount(ex["order"][..., 3][ex["order"][..., 3] >= 0], minlength=9)
  assert (seen[[0, 2, 3, 4, 5, 6, 7, 8]] > 0).all(), seen
  assert set(np.unique(ex["max_strategy"])) >= {3, 4, 5, 6, 7, 8}


def test_solver_uses_simplest_strategy_first():
  # Lone singles are placed before hidden singles: in any step that placed hidden
  # singles, the grid before it had no lone single.
  g = ss.geometry(3, 3)
  ex = sd.generate_examples(3, 3, "train", 8, seed=4, workers=1, block=32)
  res = ss.solve(g, ex["puzzle"])
  for i in range(len(ex["puzzle"])):
    for step in np.unique(res.step[i][res.strategy[i] == ss.HIDDEN_SINGLE]):
      before = np.where((res.step[i] >= 0) & (res.step[i] < step), res.grid[i], 0)
      c, pm, _ = ss._initial_state(g, before[None])  # noqa: SLF001
      free = c & ~pm
      assert not (np.bitwise_count(free) == 1).any()


# ---------------------------------------------------------------------------------
# Splits and determinism.


def test_train_test_disjoint_on_4x4():
  tr = sd.generate_examples(2, 2, "train", 300, seed=0, workers=1)
  te = sd.generate_examples(2, 2, "test", 300, seed=0, workers=1)
  ctr = {x.tobytes() for x in sd.canonical_solutions(tr["solution"], 4)}
  cte = {x.tobytes() for x in sd.canonical_solutions(te["solution"], 4)}
  assert ctr and cte and not ctr & cte
  assert not {x.tobytes() for x in tr["puzzle"]} & {x.tobytes() for x in te["puzzle"]}
  assert not sd.heldout(tr["solution"], 4).any() and sd.heldout(te["solution"], 4).all()
  # Relabelling digits never moves a grid across the split.
  src, dmap = sd.random_symmetry(ss.geometry(2, 2), 300, np.random.default_rng(0))
  ident = np.tile(np.arange(16), (300, 1))
  relabelled = sd.apply_symmetry(te, ident, dmap)["solution"]
  assert sd.heldout(relabelled, 4).all()


def test_generation_is_deterministic():
  a = sd.generate_examples(2, 3, "train", 30, seed=7, workers=1)
  b = sd.generate_examples(2, 3, "train", 30, seed=7, workers=1)
  c = sd.generate_examples(2, 3, "train", 30, seed=8, workers=1)
  d = sd.generate_examples(2, 3, "train", 10, seed=7, workers=1)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a[k][:10], d[k])
  assert not np.array_equal(a["puzzle"], c["puzzle"])
  t = sd.generate_examples(2, 3, "test", 30, seed=7, workers=1)
  assert not {x.tobytes() for x in a["solution"]} & {x.tobytes() for x in t["solution"]}


def test_workers_do_not_change_the_result():
  a = sd.generate_examples(2, 2, "train", 600, seed=3, workers=1)
  b = sd.generate_examples(2, 2, "train", 600, seed=3, workers=2)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_preferred_shard_sizes_and_hard_identity():
  t9, t6 = get_task("sudoku"), get_task("sudoku", box_rows=2, box_cols=3)
  for split in t9.splits:  # 9x9: one easy generation block per shard
    assert t9.preferred_shard_size(split) == sd.block_size(t9.geometry) == 4096
    assert t6.preferred_shard_size(split) == 1000  # what 6x6 datasets always used
  assert t9.data_identity("train") == t9.data_identity("test") == {}
  assert t6.data_identity("hard") == {"hard_generator_version": sd.HARD_GENERATOR_VERSION}
  assert sd.HARD_GENERATOR_VERSION >= 2


def test_task_interface_and_validation():
  task = get_task("sudoku", box_rows=2, box_cols=3)
  assert task.params() == {"box_rows": 2, "box_cols": 3}
  assert get_task("sudoku").params() == {"box_rows": 3, "box_cols": 3}
  ex = task.generate("train", 5, 0)
  assert ex["puzzle"].shape == (5, 36)
  with pytest.raises(ValueError, match="unknown split"):
    task.generate("valid", 5, 0)
  with pytest.raises(ValueError, match="box shape"):
    get_task("sudoku", box_rows=4, box_cols=4)
  with pytest.raises(ValueError, match="seed"):
    task.generate("train", 5, -1)
  with pytest.raises(ValueError):
    get_task("sudoku", rows=3)
  with pytest.raises(ValueError, match="no such puzzles"):
    sd.generate_examples(2, 2, "hard", 1, seed=0, workers=1, block=64)


# ---------------------------------------------------------------------------------
# Layouts, checker, symmetries.


def test_mdm_layout_and_check(small_sets):
  task = get_task("sudoku", box_rows=2, box_cols=3)
  ex = small_sets[(2, 3)]
  layout = task.mdm_layout()
  assert (layout.seq_len, layout.vocab_size, layout.mask_id) == (36, 7, 6)
  enc = task.mdm_encode(ex)
  assert enc["tokens"].dtype == np.int32 and enc["tokens"].min() >= 0
  assert enc["tokens"].max() < 6
  np.testing.assert_array_equal(enc["maskable"], ex["puzzle"] == 0)
  right = task.check(ex, enc["tokens"])
  assert right["solved"].all() and right["correct"].all()
  # Two cells of a row swapped: rows still fine, columns broken.
  wrong = enc["tokens"].copy()
  wrong[:, [0, 1]] = wrong[:, [1, 0]]
  out = task.check(ex, wrong)
  assert not out["solved"].any()
  assert not out["correct"][:, 0].any() and out["correct"][:, 2:].all()
  # A valid grid that ignores the givens (digits relabelled) is not a solution.
  relabel = (enc["tokens"] + 1) % 6
  assert not task.check(ex, relabel)["solved"].any()
  # MASK tokens left in place: not solved.
  masked = np.where(enc["maskable"], layout.mask_id, enc["tokens"])
  out = task.check(ex, masked)
  assert not out["solved"].any() and not out["correct"][enc["maskable"]].any()


@pytest.mark.parametrize("ordering", ["solver", "row_major", "random"])
def test_arm_round_trip(small_sets, hard6, ordering):
  task = get_task("sudoku", box_rows=2, box_cols=3)
  for ex in (small_sets[(2, 3)], hard6):
    enc = task.arm_encode(ex, ordering, np.random.default_rng(0))
    layout = task.arm_layout(ordering)
    assert enc["tokens"].shape == (len(ex["puzzle"]), layout.seq_len) == (
        len(ex["puzzle"]), 108)
    assert enc["tokens"].min() >= 0 and enc["tokens"].max() < layout.vocab_size
    np.testing.assert_array_equal(enc["prompt_len"], 3 * ex["num_givens"])
    np.testing.assert_array_equal(
        enc["loss_mask"], np.arange(108)[None] >= enc["prompt_len"][:, None])
    trip = enc["tokens"].reshape(-1, 36, 3)
    cells = trip[..., 0] * 6 + trip[..., 1]
    for i in range(len(ex["puzzle"])):
      k = ex["num_givens"][i]
      assert sorted(cells[i].tolist()) == list(range(36))
      assert (ex["puzzle"][i][cells[i][:k]] > 0).all()  # givens first
      assert (trip[i, :, 2] == ex["solution"][i][cells[i]]).all()
      if ordering == "row_major":
        assert (np.diff(cells[i][k:]) > 0).all()
      if ordering == "solver":
        order = ex["order"][i]
        done = order[:, 0] >= 0
        np.testing.assert_array_equal(cells[i][:done.sum()],
                                      order[done, 0] * 6 + order[done, 1])
    dec = task.arm_decode(ex, enc["tokens"])
    np.testing.assert_array_equal(dec, ex["solution"] - 1)
    assert task.check(ex, dec)["solved"].all()


def test_arm_random_orders_differ_and_decode_survives_garbage(small_sets):
  task = get_task("sudoku", box_rows=2, box_cols=3)
  ex = small_sets[(2, 3)]
  a = task.arm_encode(ex, "random", np.random.default_rng(0))["tokens"]
  b = task.arm_encode(ex, "random", np.random.default_rng(1))["tokens"]
  assert not np.array_equal(a, b)
  rng = np.random.default_rng(0)
  garbage = rng.integers(-3, 12, a.shape)
  dec = task.arm_decode(ex, garbage)
  assert dec.shape == ex["puzzle"].shape
  given = ex["puzzle"] > 0
  np.testing.assert_array_equal(dec[given], ex["puzzle"][given] - 1)
  assert dec.min() >= 0 and dec.max() <= 6
  # First valid triple for a cell wins; later ones for the same cell are ignored.
  enc = task.arm_encode(ex, "row_major")["tokens"].copy()
  p = 3 * int(ex["num_givens"][0])
  r, c, v = enc[0, p:p + 3]
  enc[0, p + 3:p + 6] = [r, c, v % 6 + 1]  # contradicting repeat of the same cell
  dec = task.arm_decode(ex, enc)
  assert dec[0, r * 6 + c] == v - 1
  with pytest.raises(ValueError):
    task.arm_encode(ex, "spiral")


def test_augment_maps_puzzles_to_puzzles(easy9, small_sets):
  for (br, bc), ex in [((3, 3), easy9), ((2, 3), small_sets[(2, 3)])]:
    task = get_task("sudoku", box_rows=br, box_cols=bc)
    g = task.geometry
    aug = task.augment(ex, np.random.default_rng(0))
    assert not np.array_equal(aug["puzzle"], ex["puzzle"])
    np.testing.assert_array_equal(aug["num_givens"], ex["num_givens"])
    res = ss.solve(g, aug["puzzle"])
    np.testing.assert_array_equal(res.grid, aug["solution"])
    np.testing.assert_array_equal(res.max_strategy, aug["max_strategy"])
    n = br * bc
    for i in range(len(aug["puzzle"])):
      assert _valid_grid(aug["solution"][i], br, bc)
      assert ss.count_solutions_simple(aug["puzzle"][i], br, bc) == 1
      order = aug["order"][i]
      cells = order[:, 0] * n + order[:, 1]
      assert (order[:, 2] == aug["solution"][i][cells]).all()
      # The solver assigns each cell the same strategy in the transformed puzzle.
      np.testing.assert_array_equal(res.strategy[i][cells], order[:, 3])


def test_augment_transposes_only_square_boxes():
  for br, bc, can in [(3, 3, True), (2, 3, False)]:
    g = ss.geometry(br, bc)
    src, _ = sd.random_symmetry(g, 400, np.random.default_rng(0))
    n = br * bc
    # A transposition sends cell 1 (row 0) into column 0.
    moved = (src[:, 1] % n == src[:, 0] % n)
    assert moved.any() == can


# ---------------------------------------------------------------------------------
# Puzzle files.


def test_load_kaggle_csv(tmp_path, easy9):
  lines = ["id,puzzle,solution,clues,difficulty"]
  for i in range(5):
    p = "".join(str(d) if d else "." for d in easy9["puzzle"][i])
    s = "".join(str(d) for d in easy9["solution"][i])
    lines.append(f"{i},{p},{s},{easy9['num_givens'][i]},1.0")
  path = tmp_path / "kaggle.csv"
  path.write_text("\n".join(lines) + "\n")
  ex = get_task("sudoku").load_puzzle_file(str(path))
  for k in ("puzzle", "solution", "order", "num_givens", "max_strategy"):
    np.testing.assert_array_equal(ex[k], easy9[k][:5])


def test_load_quizzes_csv_and_plain_text(tmp_path):
  rows = QQWING_ROWS
  path = tmp_path / "q.csv"
  path.write_text("quizzes,solutions\n" + "\n".join(
      f"{p.replace('.', '0')},{s}" for p, s in rows) + "\n")
  ex = sd.load_puzzle_file(str(path))
  assert ex["solution"].shape == (2, 81)
  assert ["".join(map(str, s)) for s in ex["solution"]] == [s for _, s in rows]
  text = tmp_path / "p.txt"
  text.write_text("# two puzzles\n" + rows[0][0] + "\n\n" + rows[1][0] + "\n")
  np.testing.assert_array_equal(sd.load_puzzle_file(str(text))["solution"],
                                ex["solution"])


def test_load_qqwing_csv(tmp_path):
  path = tmp_path / "qq.csv"
  path.write_text(QQWING_CSV)
  ex = sd.load_puzzle_file(str(path))
  assert ex["puzzle"].shape == (2, 81)
  assert all(_valid_grid(s, 3, 3) for s in ex["solution"])


def test_load_live_qqwing_output(tmp_path):
  if shutil.which("qqwing") is None:
    if os.environ.get("CI") == "true":
      pytest.fail("qqwing is not installed (apt-get install qqwing)")
    pytest.skip("qqwing not installed")
  out = subprocess.run(["qqwing", "--generate", "3", "--csv", "--solution"],
                       capture_output=True, text=True, check=True, timeout=60).stdout
  path = tmp_path / "live.csv"
  path.write_text(out)
  ex = sd.load_puzzle_file(str(path))
  assert ex["puzzle"].shape[0] == 3


@pytest.mark.parametrize("body, line, message", [
    ("puzzle\n" + "1" * 80 + "\n", 2, "expected 81 characters"),
    ("puzzle\n" + "." * 80 + "x\n", 2, "bad character 'x'"),
    ("puzzle\n" + "11" + "." * 79 + "\n", 2, "contradictory"),
    ("puzzle\n" + "." * 81 + "\n", 2, "more than one solution"),
    ("puzzle\n" + "12345678." + "." * 8 + "9" + "." * 63 + "\n", 2, "no solution"),
    ("id,clues\n1,2\n", 1, "no puzzle column"),
])
def test_bad_files_name_file_and_line(tmp_path, body, line, message):
  path = tmp_path / "bad.csv"
  path.write_text(body)
  with pytest.raises(ValueError, match=message) as err:
    sd.load_puzzle_file(str(path))
  assert f"{path}:{line}:" in str(err.value)


def test_bad_solution_column_and_late_line(tmp_path):
  rows = QQWING_ROWS
  wrong = rows[1][1][:-2] + rows[1][1][-1] + rows[1][1][-2]
  path = tmp_path / "bad.csv"
  path.write_text(f"Puzzle,Solution,\n{rows[0][0]},{rows[0][1]},\n\n"
                  f"{rows[1][0]},{wrong},\n")
  with pytest.raises(ValueError, match="does not solve") as err:
    sd.load_puzzle_file(str(path))
  assert f"{path}:4:" in str(err.value)


@pytest.mark.parametrize("vocab,width,size", [("by_role", 3, 18), ("cell", 2, 42),
                                              ("joint", 1, 216)])
def test_arm_vocabs_round_trip_and_keep_the_data(small_sets, vocab, width, size):
  shared = get_task("sudoku", box_rows=2, box_cols=3)
  task = get_task("sudoku", box_rows=2, box_cols=3, arm_vocab=vocab)
  ex = small_sets[(2, 3)]
  # Same datasets (cache key), different ARM token space (run identity).
  assert task.data_params() == shared.data_params() == shared.params()
  assert task.params() == {**shared.params(), "arm_vocab": vocab}
  for ordering in task.arm_orderings:
    layout = task.arm_layout(ordering)
    assert (layout.seq_len, layout.vocab_size) == (width * 36, size)
    enc = task.arm_encode(ex, ordering, np.random.default_rng(0))
    ref = shared.arm_encode(ex, ordering, np.random.default_rng(0))
    assert enc["tokens"].min() >= 0 and enc["tokens"].max() < size
    np.testing.assert_array_equal(enc["prompt_len"], width * ex["num_givens"])
    groups = enc["tokens"].reshape(len(ex["puzzle"]), 36, width)
    trip = ref["tokens"].reshape(len(ex["puzzle"]), 36, 3)
    if vocab == "joint":  # the same cells in the same order, one token per cell
      np.testing.assert_array_equal(groups[..., 0],
                                    (trip[..., 0] * 6 + trip[..., 1]) * 6 + trip[..., 2] - 1)
    elif vocab == "cell":  # the same cells in the same order, a cell token per cell
      np.testing.assert_array_equal(groups[..., 0], trip[..., 0] * 6 + trip[..., 1])
      np.testing.assert_array_equal(groups[..., 1], 36 + trip[..., 2] - 1)
    else:  # each role in its own id range
      np.testing.assert_array_equal(groups, trip + np.array([0, 6, 11]))
      for role, (lo, hi) in enumerate([(0, 6), (6, 12), (12, 18)]):
        assert groups[..., role].min() >= lo and groups[..., role].max() < hi
    np.testing.assert_array_equal(task.arm_decode(ex, enc["tokens"]), ex["solution"] - 1)
  garbage = np.random.default_rng(1).integers(-3, size + 3, enc["tokens"].shape)
  dec = task.arm_decode(ex, garbage)
  given = ex["puzzle"] > 0
  np.testing.assert_array_equal(dec[given], ex["puzzle"][given] - 1)
  assert dec.min() >= 0 and dec.max() <= 6
  with pytest.raises(ValueError, match="arm_vocab"):
    get_task("sudoku", box_rows=2, box_cols=3, arm_vocab="pairs")


@pytest.mark.parametrize("vocab", ["shared", "by_role", "cell", "joint"])
def test_arm_legal_moves_fill_each_empty_cell_once(small_sets, vocab):
  """Greedy decoding of random logits, restricted to `arm_legal_fn`, writes every
  empty cell exactly once with a digit; unrestricted, it leaves cells empty."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mdm_jax import sampling  # pylint: disable=g-import-not-at-top
  task = get_task("sudoku", box_rows=2, box_cols=3, arm_vocab=vocab)
  ex = {k: v[:8] for k, v in small_sets[(2, 3)].items()}
  tokens, plen = task.arm_prompt(ex, "row_major")
  layout = task.arm_layout("row_major")
  logits = jnp.asarray(np.random.default_rng(0).normal(
      size=(len(tokens), layout.seq_len, layout.vocab_size)), jnp.float32)
  out = np.asarray(sampling.ar_greedy(lambda t: logits, tokens, plen, task.arm_legal_fn()))
  np.testing.assert_array_equal(out[np.arange(out.shape[1])[None] < plen[:, None]],
                                tokens[np.arange(out.shape[1])[None] < plen[:, None]])
  decoded = task.arm_decode(ex, out)
  assert (decoded < 6).all()  # no cell left MASK
  given = ex["puzzle"] > 0
  np.testing.assert_array_equal(decoded[given], ex["puzzle"][given] - 1)
  width = out.shape[1] // 36
  r, c, v = task._arm_cells(out.reshape(len(out), 36, width).astype(np.int64))
  for i, n in enumerate(plen // width):
    cells = r[i, n:] * 6 + c[i, n:]
    assert sorted(cells.tolist()) == np.flatnonzero(~given[i]).tolist()
    assert ((v[i, n:] >= 1) & (v[i, n:] <= 6)).all()
  free = task.arm_decode(ex, np.asarray(sampling.ar_greedy(lambda t: logits, tokens, plen)))
  assert (free == 6).any()
  beam = task.arm_decode(ex, np.asarray(sampling.ar_beam(
      lambda t: jnp.repeat(logits, 3, axis=0), tokens, plen, 3,  # beam search too
      task.arm_legal_fn())))
  assert (beam < 6).all()
  np.testing.assert_array_equal(beam[given], ex["puzzle"][given] - 1)


@pytest.mark.parametrize("box", [(2, 3), (3, 3)])
def test_position_groups_tie_exactly_the_peers(box):
  task = sd.SudokuTask(*box)
  groups = task.position_groups()
  n = task.n
  assert groups.shape == (n * n, 3) and groups.min() == 0 and groups.max() == 3 * n - 1
  shares = (groups[:, None, :] == groups[None, :, :]).any(-1)
  g = task.geometry
  peers = np.zeros((n * n, n * n), bool)
  for unit in np.asarray(g.units):
    peers[np.ix_(unit, unit)] = True
  np.testing.assert_array_equal(shares, peers)


def test_arm_token_groups_follow_the_cell_a_token_names():
  task = sd.SudokuTask(2, 3, arm_vocab="cell")
  cell_groups = task.position_groups()
  tok = task.token_groups("arm")
  assert tok.shape == (task.arm_layout("solver").vocab_size, 3)
  np.testing.assert_array_equal(tok[:36], cell_groups)
  assert (tok[36:] == -1).all()  # value tokens
  joint = sd.SudokuTask(2, 3, arm_vocab="joint").token_groups("arm")
  cell = 4 * 6 + 1
  np.testing.assert_array_equal(joint[cell * 6 + 2], cell_groups[cell])
  assert sd.SudokuTask(2, 3).token_groups("arm") is None
  assert sd.SudokuTask(2, 3, arm_vocab="by_role").token_groups("arm") is None


# ---------------------------------------------------------------------------------
# Forced cells, the 'forced' ARM order and the rule mask.


def _candidates(board, br, bc):
  """Independent per-cell candidate sets of a 1-based board (0 = empty)."""
  n = br * bc
  g = np.asarray(board).reshape(n, n)
  out = {}
  for r in range(n):
    for c in range(n):
      if g[r, c] == 0:
        box = g[r // br * br:r // br * br + br, c // bc * bc:c // bc * bc + bc]
        out[(r, c)] = set(range(1, n + 1)) - set(g[r]) - set(g[:, c]) - set(box.ravel())
  return out


def _forced_by_hand(board, br, bc):
  n = br * bc
  cand = _candidates(board, br, bc)
  forced = set(k for k, v in cand.items() if len(v) == 1)
  units = ([[(r, c) for c in range(n)] for r in range(n)]
           + [[(r, c) for r in range(n)] for c in range(n)]
           + [[(r, c) for r in range(R, R + br) for c in range(C, C + bc)]
              for R in range(0, n, br) for C in range(0, n, bc)])
  for unit in units:
    for d in range(1, n + 1):
      where = [k for k in unit if k in cand and d in cand[k]]
      if len(where) == 1:
        forced.add(where[0])
  return forced


@pytest.mark.parametrize("shape", SHAPES)
def test_forced_cells_are_the_naked_and_hidden_singles(small_sets, shape):
  ex = small_sets[shape]
  n = shape[0] * shape[1]
  rng = np.random.default_rng(0)
  boards = ex["puzzle"].astype(np.int64).copy()
  # Half-filled boards too: some solution digits written into the blanks.
  more = np.where((boards == 0) & (rng.random(boards.shape) < 0.5), ex["solution"], boards)
  for b in np.concatenate([boards, more]):
    got = sd.forced_cells(ss.geometry(*shape), b[None])[0]
    want = np.zeros(n * n, bool)
    for r, c in _forced_by_hand(b, *shape):
      want[r * n + c] = True
    np.testing.assert_array_equal(got, want)


def test_forced_order_writes_a_forced_cell_at_every_step(small_sets):
  task = get_task("sudoku", box_rows=2, box_cols=3, arm_vocab="cell")
  ex = small_sets[(2, 3)]
  g = task.geometry
  order = task.cell_order(ex, "forced", np.random.default_rng(0))
  again = task.cell_order(ex, "forced", np.random.default_rng(0))
  other = task.cell_order(ex, "forced", np.random.default_rng(1))
  np.testing.assert_array_equal(order, again)  # same rng, same order
  assert (order != other).any()  # drawn afresh: another rng, another order
  for i in range(len(order)):
    assert sorted(order[i]) == list(range(36))
    k = int((ex["puzzle"][i] > 0).sum())
    np.testing.assert_array_equal(order[i, :k], np.flatnonzero(ex["puzzle"][i] > 0))
    board = ex["puzzle"][i].astype(np.int64).copy()
    for cell in order[i, k:]:
      forced = sd.forced_cells(g, board[None])[0]
      assert forced[cell] or not forced.any()
      board[cell] = ex["solution"][i, cell]
  enc = task.arm_encode(ex, "forced", np.random.default_rng(0))
  np.testing.assert_array_equal(task.arm_decode(ex, enc["tokens"]), ex["solution"] - 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_rule_mask_allows_the_digits_no_filled_peer_holds(small_sets, shape):
  task = get_task("sudoku", box_rows=shape[0], box_cols=shape[1])
  ex = small_sets[shape]
  n = task.n
  tokens = task.mdm_prompt(ex)
  allowed = np.asarray(task.rule_mask_fn()(tokens))
  assert allowed.shape == tokens.shape + (n + 1,) and not allowed[..., n].any()
  for b in range(len(tokens)):
    board = np.where(tokens[b] == n, 0, tokens[b] + 1)
    cand = _candidates(board, *shape)
    for (r, c), digits in cand.items():
      assert set(np.flatnonzero(allowed[b, r * n + c, :n]) + 1) == digits
