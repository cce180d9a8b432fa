"""Tests of the solve command: parsing, checks, printing, exit codes (subprocesses)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import solve
from mdm_jax.data import sudoku_solver

# A valid 4x4 (2x2 boxes) solution and 9x9 solution, written by hand.
SOL4 = "1234341221434321"
SOL9 = ("534678912672195348198342567859761423426853791"
        "713924856961537284287419635345286179")


def _grid(s):
  return np.array([int(c) for c in s], np.int8)


def test_parse_puzzle_accepts_blanks_and_separators():
  g = solve.parse_puzzle("12.. |3.0 2 | 4... |....\n", 4)
  np.testing.assert_array_equal(g[:8], [1, 2, 0, 0, 3, 0, 0, 2])
  with pytest.raises(solve.SolveError) as e:
    solve.parse_puzzle("12..", 4)
  assert e.value.code == 2 and "has 4 cells, expected 16" in e.value.message
  with pytest.raises(solve.SolveError) as e:
    solve.parse_puzzle("12x." + "." * 12, 4, name="line 3")
  assert e.value.code == 2 and "line 3: bad character 'x' at cell 3 (row 1, column 3)" \
      in e.value.message
  with pytest.raises(solve.SolveError) as e:
    solve.parse_puzzle("5" + "." * 15, 4)  # digit out of range for 4x4
  assert "bad character '5'" in e.value.message and "1-4" in e.value.message
  g16 = solve.parse_puzzle("G" + "a" + "." * 254, 16)  # 16x16: letters, any case
  assert g16[0] == 16 and g16[1] == 10


def test_unit_names_follow_rows_columns_and_row_major_boxes():
  units = dict(solve._units(2, 3))  # 6x6 grid, boxes of 2 rows x 3 columns
  np.testing.assert_array_equal(units["row 2"], np.arange(6, 12))
  np.testing.assert_array_equal(units["column 1"], np.arange(0, 36, 6))
  np.testing.assert_array_equal(sorted(units["box 2"]), [3, 4, 5, 9, 10, 11])
  np.testing.assert_array_equal(sorted(units["box 3"]), [12, 13, 14, 18, 19, 20])
  assert len(units) == 18


def test_conflicts_name_row_column_and_box():
  assert solve.conflicts(_grid(SOL9), 3, 3) == []
  g = _grid("0" * 81)
  g[0] = 5
  g[8] = 5  # row 1
  assert solve.conflicts(g, 3, 3) == ["digit 5 appears 2 times in row 1 (r1c1, r1c9)"]
  g = _grid("0" * 81)
  g[0] = g[72] = 7  # column 1
  assert solve.conflicts(g, 3, 3) == ["digit 7 appears 2 times in column 1 (r1c1, r9c1)"]
  g = _grid("0" * 81)
  g[3 * 9 + 3] = g[5 * 9 + 5] = 2  # box 5 only (different rows and columns)
  assert solve.conflicts(g, 3, 3) == ["digit 2 appears 2 times in box 5 (r4c4, r6c6)"]


def test_answer_problems():
  puzzle = _grid(SOL4)
  puzzle[[1, 6, 11]] = 0
  assert solve.answer_problems(puzzle, _grid(SOL4), 2, 2) == []
  changed = _grid(SOL4)
  changed[0], changed[1] = 2, 1  # changes a given (and keeps rows valid)
  probs = solve.answer_problems(puzzle, changed, 2, 2)
  assert probs[0] == "changed the given r1c1 (1 -> 2)"
  assert any("column" in p for p in probs)
  empty = _grid(SOL4)
  empty[6] = 0
  assert solve.answer_problems(puzzle, empty, 2, 2) == ["left no digit in r2c3"]


def test_format_grid_has_box_separators():
  text = solve.format_grid(_grid(SOL4), 2, 2).splitlines()
  assert text == ["+-----+-----+",
                  "| 1 2 | 3 4 |",
                  "| 3 4 | 1 2 |",
                  "+-----+-----+",
                  "| 2 1 | 4 3 |",
                  "| 4 3 | 2 1 |",
                  "+-----+-----+"]
  text9 = solve.format_grid(_grid(SOL9), 3, 3).splitlines()
  assert len(text9) == 13 and text9[1] == "| 5 3 4 | 6 7 8 | 9 1 2 |"
  order = np.arange(16) - 1  # -1 = given
  text = solve.format_grid(order, 2, 2, width=2,
                           fmt=lambda v: "." if v < 0 else str(v + 1)).splitlines()
  assert text[1] == "|  .  1 |  2  3 |"
  six = solve.format_grid(np.zeros(36, int), 2, 3).splitlines()  # 2x3 boxes
  assert six[0] == "+-------+-------+" and six[1] == "| . . . | . . . |"
  assert six[3] == six[0] and len(six) == 10


def test_read_puzzles(tmp_path):
  f = tmp_path / "p.txt"
  f.write_text("# my puzzles\n" + SOL4 + "\n\n" + "." * 16 + "\n")
  got = solve.read_puzzles(str(f))
  assert got == [("p.txt line 2", SOL4), ("p.txt line 4", "." * 16)]
  assert solve.read_puzzles(SOL4) == [("puzzle", SOL4)]
  for arg, msg in ((str(tmp_path / "nope.txt"), "no such puzzle file"),
                   (str(tmp_path), "is a directory")):
    with pytest.raises(solve.SolveError, match=msg) as e:
      solve.read_puzzles(arg)
    assert e.value.code == 2
  (tmp_path / "empty.txt").write_text("# nothing\n")
  with pytest.raises(solve.SolveError, match="holds no puzzle"):
    solve.read_puzzles(str(tmp_path / "empty.txt"))


# ----------------------------------------------------------------------------------
# The command, with a real (initialised) checkpoint and with stand-in models.


def _config(root, task_name="sudoku"):
  spec = importlib.util.spec_from_file_location(
      "cfg_common", os.path.join(os.path.dirname(__file__), "..", "configs", "common.py"))
  common = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(common)
  c = common.base_config()
  c.task.name = task_name
  c.task.params = ({"box_rows": 2, "box_cols": 2} if task_name == "sudoku" else
                   dict(min_houses=3, max_houses=3, min_attrs=3, max_attrs=3))
  c.data.dir = str(root / "data")
  c.model.overrides.num_layers, c.model.overrides.d_model = 1, 32
  c.model.overrides.num_heads, c.model.overrides.mlp_dim = 2, 64
  c.sampler.num_steps = 4
  return c


def _save_initialised(config, workdir):
  from mdm_jax import checkpoint, experiment, train
  task = experiment.build_task(config)
  model, mc = experiment.build_model(config, task)
  state = train.init_state(config, model, train.make_optimizer(config), mc.seq_len,
                           jax.random.PRNGKey(0))
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(1, state, iterator=None, config=config)
  ckpt.close()


@pytest.fixture(scope="module")
def ckpt4(tmp_path_factory):
  """An initialised 4x4 (2x2 boxes) Sudoku MDM checkpoint."""
  root = tmp_path_factory.mktemp("solve")
  workdir = str(root / "run")
  _save_initialised(_config(root), workdir)
  return workdir


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  p = subprocess.run([sys.executable, "-m", "mdm_jax.solve", *args], capture_output=True,
                     text=True, env=env, timeout=300)
  assert "Traceback" not in p.stderr, p.stderr
  return p.returncode, p.stdout, [l for l in p.stderr.splitlines() if l.startswith("error:")]


def test_cli_missing_checkpoint_and_usage_errors(tmp_path):
  code, _, errors = _run("--checkpoint", str(tmp_path / "nope"), SOL4)
  assert code == 5 and len(errors) == 1 and "does not exist" in errors[0]
  code, _, errors = _run(SOL4)  # no packaged model for 4x4 puzzles
  assert code == 2 and len(errors) == 1 and "no packaged model for 4x4" in errors[0]
  assert "--checkpoint" in errors[0]
  code, _, errors = _run("--tries", "0", SOL4)
  assert code == 2 and errors == ["error: --tries must be >= 1, got 0"]


def test_cli_malformed_and_contradictory_puzzles(ckpt4, tmp_path):
  f = tmp_path / "puzzles.txt"
  f.write_text("1234....\n12x4" + "." * 12 + "\n" + "." * 16 + "\n")
  code, out, errors = _run("--checkpoint", ckpt4, str(f))
  assert code == 2 and out == ""
  assert errors == [
      "error: puzzles.txt line 1: has 8 cells, expected 16 (4x4 grid in row-major order; "
      "'.' or '0' for blanks)",
      "error: puzzles.txt line 2: bad character 'x' at cell 3 (row 1, column 3); use 1-4 "
      "for digits and '.' or '0' for blanks"]
  code, out, errors = _run("--checkpoint", ckpt4, "--strategy", "top_prob",
                           "1..1" + "." * 12)
  assert code == 3 and out == ""
  assert errors == ["error: puzzle: contradictory puzzle: digit 1 appears 2 times in row 1 "
                    "(r1c1, r1c4)"]


def test_real_checkpoint_runs_and_keeps_the_givens(ckpt4, capsys):
  puzzle = "1.3." + "3..2" + ".1.3" + "4..1"
  code = solve.main(["--checkpoint", ckpt4, "--steps", "3", puzzle])
  out = capsys.readouterr()
  lines = out.out.splitlines()
  assert lines[0].startswith("puzzle: ") and "(margin, 3 steps, 8 blanks)" in lines[0]
  grid_rows = [l for l in lines[1:8] if l.startswith("| ")]
  digits = "".join(ch for l in grid_rows for ch in l if ch.isdigit())
  assert len(digits) == 16
  assert all(d == p for d, p in zip(digits, puzzle) if p != ".")  # givens kept
  # The exit code says whether the printed grid is a solution (checked here on its own).
  g = np.array([int(d) for d in digits]).reshape(4, 4)
  units = [*g, *g.T, *(g[r:r + 2, c:c + 2].ravel() for r in (0, 2) for c in (0, 2))]
  valid = all(sorted(u) == [1, 2, 3, 4] for u in units)
  assert code == (0 if valid else 4), (code, digits)
  order_rows = [l for l in lines[9:] if l.startswith("|")]
  assert "decoding order" in lines[8] and len(order_rows) == 4
  steps = [t for l in order_rows for t in l.replace("|", " ").split()]
  assert [t == "." for t in steps] == [p != "." for p in puzzle]
  assert all(1 <= int(t) <= 3 for t in steps if t != ".")
  if code == 4:
    assert "the model's answer is invalid" in out.err


def _stand_in(task, solutions_by_puzzle, monkeypatch, ckpt_config):
  """Replaces the checkpoint with a model that writes `solutions_by_puzzle`."""
  n = task.n
  puzzles = np.stack([_grid(p.replace(".", "0")) for p in solutions_by_puzzle])
  sols = np.stack([_grid(s) for s in solutions_by_puzzle.values()])
  table_p, table_s = jnp.asarray(puzzles), jnp.asarray(sols)

  def apply_fn(params, tokens_BxL):
    ok = jnp.all(~(table_p[None] > 0) | (tokens_BxL[:, None] == table_p[None] - 1), -1)
    target = table_s[jnp.argmax(ok, 1)] - 1
    return params["scale"] * jax.nn.one_hot(target, n + 1)

  monkeypatch.setattr(solve, "_load", lambda ckpt: ({"scale": jnp.float32(10.0)},
                                                    ckpt_config, task, apply_fn))


def test_solves_with_a_good_model_and_flags_a_bad_one(tmp_path, monkeypatch, capsys):
  from mdm_jax import data
  task = data.get_task("sudoku", box_rows=2, box_cols=2)
  config = _config(tmp_path)
  p1 = "1.3." + "3..2" + ".1.3" + "4..1"
  p2 = "...4" + "3..." + "2..." + "...1"
  _stand_in(task, {p1: SOL4, p2: SOL4}, monkeypatch, config)
  f = tmp_path / "two.txt"
  f.write_text(p1 + "\n" + p2 + "\n" + SOL4 + "\n")  # the last one has no blank
  assert solve.main(["--checkpoint", "x", "--strategy", "entropy", str(f)]) == 0
  out = capsys.readouterr()
  assert out.err == ""
  assert out.out.count(": solved (entropy, 4 steps,") == 3
  assert out.out.count("| 1 2 | 3 4 |") == 3 and out.out.count("| 4 3 | 2 1 |") == 3
  # A model that writes a wrong digit (1 everywhere) -> invalid answer, exit 4.
  bad = "1111" * 4
  _stand_in(task, {p1: bad}, monkeypatch, config)
  assert solve.main(["--checkpoint", "x", p1]) == 4
  out = capsys.readouterr()
  assert "puzzle: INVALID ANSWER" in out.out
  errors = out.err.strip().splitlines()
  # The sampler never touches givens, so the first problem is a repeated digit.
  assert len(errors) == 1 and errors[0].startswith(
      "error: puzzle: the model's answer is invalid: digit 1 appears 3 times in row 1 "
      "(r1c1, r1c2, r1c4) (and ")


def test_non_sudoku_checkpoint_is_refused(tmp_path, capsys):
  workdir = str(tmp_path / "zebra")
  _save_initialised(_config(tmp_path, "zebra"), workdir)
  assert solve.main(["--checkpoint", workdir, SOL4]) == 5
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "is a 'zebra' model; this command solves Sudoku" in err[0]
  empty = tmp_path / "empty_run"
  empty.mkdir()
  assert solve.main(["--checkpoint", str(empty), SOL4]) == 5
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"error: cannot load checkpoint {empty}: ")
