"""The diagnostic probes of benchmarks/ (cited in REPRODUCTION.md) on tiny trained runs."""
import importlib.util
import pathlib
import re

import pytest

from mdm_jax import train
from tiny import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _probe(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("probes")
  zebra = tiny_config(root / "data")
  lo = tiny_config(root / "data")
  lo.task.name = "lo_nae_sat"
  lo.task.params = {"num_latents": 6, "num_obs": 10, "triples_seed": 0}
  out = {}
  for name, config in (("zebra", zebra), ("lo", lo)):
    out[name] = str(root / name)
    train.train(config, out[name])
  return out


def _numbers(text):
  return [float(x) for x in re.findall(r"\| (\d\.\d{4}) ", text)]


def test_zebra_probe_reports_errors_with_and_without_clues(runs, capsys):
  assert _probe("zebra_probe").main([runs["zebra"], "--num", "40", "--step", "6"]) == 0
  out = capsys.readouterr().out
  assert "(step 6): zebra, 40 held-out puzzles, 3-3 houses" in out
  assert "chance with every cell masked and no clues: 0.6667" in out
  errors = _numbers(out)
  assert len(errors) == 6 and all(0.0 <= e <= 1.0 for e in errors)


def test_zebra_probe_orders_by_confidence_and_solver_rank(runs, capsys):
  assert _probe("zebra_probe").main([runs["zebra"], "--num", "40", "--step", "6",
                                     "--orders"]) == 0
  out = capsys.readouterr().out
  ranks = re.findall(r"^\| (\d+) \| (\d\.\d{4}) / (\d\.\d{3}) \| (\d\.\d{4}) \|$", out, re.M)
  assert [int(r[0]) for r in ranks] == list(range(1, 10))  # 3x3 puzzles: nine cells
  conf = [float(r[2]) for r in ranks]
  assert conf == sorted(conf, reverse=True)  # ranked by the model's confidence
  # Over all nine ranks both columns score every cell once: the same mean error.
  assert abs(sum(float(r[1]) for r in ranks) - sum(float(r[3]) for r in ranks)) < 1e-3
  m = re.search(r"all right in (\d+\.\d)%; first wrong cell at step 1\.\.9: (.*)$", out, re.M)
  shares = [float(x.rstrip("%")) for x in m.group(2).split(" / ")]
  assert len(shares) == 9 and abs(float(m.group(1)) + sum(shares) - 100) < 0.6


def test_lo_nae_sat_probe_reports_errors_and_sample_diversity(runs, capsys):
  assert _probe("lo_nae_sat_probe").main([runs["lo"], "--num", "30"]) == 0
  out = capsys.readouterr().out
  assert "lo_nae_sat N=6 P=10, 30 held-out sequences" in out
  rows = [l for l in out.splitlines() if l.startswith(("| vanilla |", "| margin |"))]
  assert len(rows) == 2
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    distinct, of = map(int, re.match(r"(\d+) of (\d+)", cells[3]).groups())
    assert of == 30 and 1 <= distinct <= min(30, 2 ** 6)
    assert int(cells[4]) <= distinct
    assert 0.0 <= float(cells[5]) <= 1.0


@pytest.mark.parametrize("probe,other", [("zebra_probe", "lo"), ("lo_nae_sat_probe", "zebra")])
def test_probe_of_the_wrong_task_is_a_one_line_error(runs, probe, other, capsys):
  assert _probe(probe).main([runs[other], "--num", "4"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "not" in err


def test_arm_trace_replay_classifies_the_first_wrong_move():
  trace = _probe("arm_trace")
  from mdm_jax import data  # pylint: disable=g-import-not-at-top
  from mdm_jax.data import sudoku as sd  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  task = data.get_task("sudoku", box_rows=2, box_cols=3)
  ex = task.generate("test", 8, seed=0)
  g = task.geometry
  for i in range(8):
    puzzle, solution = ex["puzzle"][i], ex["solution"][i]
    solver = task.cell_order({k: v[i:i + 1] for k, v in ex.items()}, "solver")[0]
    blanks = [int(c) for c in solver if puzzle[c] == 0]
    right = trace.replay(g, puzzle, solution, [(c, int(solution[c])) for c in blanks])
    assert right["first_error"] == 0 and right["forced_right"] + right["free_right"] == len(blanks)
    forced = np.flatnonzero(sd.forced_cells(g, puzzle[None])[0])
    free = np.flatnonzero((puzzle == 0) & ~sd.forced_cells(g, puzzle[None])[0])
    wrong = lambda c: int(solution[c]) % task.n + 1  # noqa: E731  # any other digit
    assert trace.replay(g, puzzle, solution, [(int(forced[0]), wrong(forced[0]))]) == {
        "forced": 1, "forced_right": 0, "free": 0, "free_right": 0, "first_error": 1}
    if len(free):
      out = trace.replay(g, puzzle, solution, [(int(free[0]), wrong(free[0]))])
      assert out["first_error"] == 2 and out["free"] == 1


def test_arm_trace_bad_input_is_a_one_line_error(runs, capsys):
  assert _probe("arm_trace").main([runs["zebra"], "--num", "0"]) == 2
  assert capsys.readouterr().err.strip().startswith("error: --num")
  assert _probe("arm_trace").main([runs["zebra"]]) == 2
  assert "is not a Sudoku ARM run" in capsys.readouterr().err
