"""Tests of mdm_jax.plots: per-cell statistics on hand-made arrays, PNG writers."""
import importlib.util
import json
import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from mdm_jax import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_px=200):
  """A PNG of at least min_px x min_px pixels, in more than a few colours."""
  with open(path, "rb") as f:
    if f.read(8) != PNG:
      return False
  pixels = mpimg.imread(path)  # [H, W, 3 or 4] floats
  colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
  return min(pixels.shape[:2]) >= min_px and len(colours) > 8


def _drawn(fig):
  """What the figure's axes show: (line y-data, image arrays, bar heights)."""
  lines = [np.asarray(l.get_ydata(), float) for ax in fig.axes for l in ax.get_lines()]
  images = [np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan)
            for ax in fig.axes for im in ax.get_images()]
  bars = [p.get_height() for ax in fig.axes for p in ax.patches
          if hasattr(p, "get_height")]
  return lines, images, np.asarray(bars, float)


@pytest.fixture
def drawn(monkeypatch):
  """{file name: _drawn(fig)} of every figure the plots module saves."""
  seen = {}
  save = plots._save  # pylint: disable=protected-access

  def recording_save(fig, path):
    seen[os.path.basename(path)] = _drawn(fig)
    return save(fig, path)

  monkeypatch.setattr(plots, "_save", recording_save)
  return seen


def _has_line(lines, values):
  return any(l.shape == np.shape(values) and np.allclose(l, values) for l in lines)


def test_cell_mean_by_hand():
  # Two puzzles, 4 positions on a 2x2 grid; position 0 is never valid.
  values = np.array([[9, 1, 2, 3],
                     [9, 3, 4, 5]])
  valid = np.array([[False, True, True, False],
                    [False, True, False, True]])
  got = plots.cell_mean(values, valid, (2, 2))
  assert np.isnan(got[0, 0])
  assert got[0, 1] == 2.0 and got[1, 0] == 2.0 and got[1, 1] == 5.0
  # positions map grid cells to sequence positions (here reversed).
  rev = plots.cell_mean(values, valid, (2, 2), positions=[3, 2, 1, 0])
  np.testing.assert_array_equal(rev.ravel()[:3], [5.0, 2.0, 2.0])
  assert np.isnan(rev[1, 1])
  # A layout with a prompt before the grid: the grid is the last 4 of 6 positions.
  wide = np.concatenate([np.zeros((2, 2)), values], axis=1)
  wide_valid = np.concatenate([np.ones((2, 2), bool), valid], axis=1)
  np.testing.assert_array_equal(
      plots.cell_mean(wide, wide_valid, (2, 2), positions=np.arange(2, 6)), got)
  with pytest.raises(ValueError, match="positions"):
    plots.cell_mean(values, valid, (3, 3))
  with pytest.raises(ValueError, match="values and valid"):
    plots.cell_mean(values, valid[:1], (2, 2))


def test_position_mean_by_hand():
  values = np.array([[1.0, 2.0, 0.0], [3.0, 6.0, 0.0]])
  valid = np.array([[True, True, False], [True, False, False]])
  got = plots.position_mean(values, valid)
  np.testing.assert_array_equal(got[:2], [2.0, 2.0])
  assert np.isnan(got[2])


def test_heatmaps_curves_and_position_plots_write_pngs(tmp_path, drawn):
  rng = np.random.default_rng(0)
  grids = {"vanilla": rng.random((9, 9)), "margin": rng.random((9, 9))}
  grids["margin"][0, 0] = np.nan
  p = plots.plot_cell_heatmaps(grids, str(tmp_path / "a" / "heat.png"), title="t",
                               colorbar_label="step", box=(3, 3))
  assert _is_png(p)
  _, images, _ = drawn["heat.png"]  # one panel per strategy, showing its grid
  assert len(images) == 2
  for got, want in zip(images, grids.values()):
    np.testing.assert_array_equal(got, want)
  p = plots.plot_accuracy_vs_steps({"MDM vanilla": {5: 0.1, 50: 0.2},
                                    "MDM top prob margin": {"5": 0.5, "50": 0.9}},
                                   str(tmp_path / "acc.png"), title="t")
  assert _is_png(p)
  lines, _, _ = drawn["acc.png"]  # in percent
  assert _has_line(lines, [10.0, 20.0]) and _has_line(lines, [50.0, 90.0])
  err = rng.random(30)
  p = plots.plot_position_error(err, np.arange(30) < 10, str(tmp_path / "pe.png"),
                                title="t")
  assert _is_png(p)
  _, _, bars = drawn["pe.png"]
  np.testing.assert_allclose(np.sort(bars), np.sort(err))  # one bar per position
  p = plots.plot_position_curves({"a": err, "b": err[::-1]}, str(tmp_path / "pc.png"),
                                 title="t", ylabel="y", boundary=10)
  assert _is_png(p)
  lines, _, _ = drawn["pc.png"]
  assert _has_line(lines, err) and _has_line(lines, err[::-1])
  with pytest.raises(ValueError, match="empty"):
    plots.plot_cell_heatmaps({}, str(tmp_path / "x.png"), title="t", colorbar_label="c")
  with pytest.raises(ValueError, match="empty"):
    plots.plot_accuracy_vs_steps({}, str(tmp_path / "x.png"), title="t")


def _write_metrics(workdir, records, torn=True):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
    if torn:
      f.write('{"step": 99, "train/lo')  # a killed run's last line


def test_read_metrics_and_loss_curves(tmp_path, drawn):
  wd = str(tmp_path / "run")
  recs = [{"step": s, "time": 0.0, "train/loss": 3.0 / s, "train/lr": 1e-3}
          for s in range(1, 6)]
  recs[2]["val/loss"] = 1.5
  recs.append({"step": 5, "train/loss": 0.5})  # a resumed run rewrote step 5
  _write_metrics(wd, recs)
  got = plots.read_metrics(wd)
  assert len(got) == 6 and all(r["step"] != 99 for r in got)
  assert plots.loss_keys(got) == ["train/loss", "val/loss"]
  steps, values = plots._series(got, "train/loss")
  np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])
  assert values[-1] == 0.5  # the later record wins
  assert _is_png(plots.plot_loss_curves(wd, str(tmp_path / "loss.png")))
  lines, _, _ = drawn["loss.png"]
  assert _has_line(lines, [3.0, 1.5, 1.0, 0.75, 0.5]) and _has_line(lines, [1.5])
  _write_metrics(str(tmp_path / "nolo"), [{"step": 1, "train/lr": 1.0}])
  with pytest.raises(ValueError, match="no loss metric"):
    plots.plot_loss_curves(str(tmp_path / "nolo"), str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match="no metrics file"):
    plots.read_metrics(str(tmp_path / "missing"))


def _pi_workdir(root, order, losses):
  spec = importlib.util.spec_from_file_location(
      "cfg_common", os.path.join(os.path.dirname(__file__), "..", "configs", "common.py"))
  common = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(common)
  c = common.base_config()
  c.objective = "pi"
  c.task.name = "lo_nae_sat"
  c.task.params = {"num_latents": 5, "num_obs": 7}
  c.data.pi_order = order
  c.train.batch_size = 16
  wd = os.path.join(root, order)
  os.makedirs(wd)
  from mdm_jax import checkpoint
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump(checkpoint.config_to_json(c), f)
  _write_metrics(wd, [{"step": 10 * (i + 1), "train/loss": 9.0, "val/loss": l}
                      for i, l in enumerate(losses)], torn=False)
  return wd, c


def test_pi_learner_runs_and_plot(tmp_path, drawn):
  from mdm_jax import experiment
  from mdm_jax.models import transformer
  runs = []
  for order, losses in (("uniform", [0.9, 0.8]), ("identity", [0.5, 0.4]),
                        ("closer", [0.7, 0.6]), ("much_closer", [0.6, 0.5])):
    wd, c = _pi_workdir(str(tmp_path), order, losses)
    run = plots.pi_learner_run(wd)
    _, mc = experiment.build_model(c, experiment.build_task(c))
    per_step = 3 * transformer.flops_per_token(mc) * 16 * 12  # fwd+bwd, batch, L = 5 + 7
    np.testing.assert_allclose(run["flops"], [10 * per_step, 20 * per_step])
    np.testing.assert_array_equal(run["loss"], losses)  # the validation loss
    assert run["pi_order"] == order and order.replace("_", " ") in run["label"]
    runs.append(run)
  assert _is_png(plots.plot_pi_learners(runs, str(tmp_path / "pi.png")))
  lines, _, _ = drawn["pi.png"]
  for losses in ([0.9, 0.8], [0.5, 0.4], [0.7, 0.6], [0.6, 0.5]):
    assert _has_line(lines, losses)
  assert plots.main(["pi", "--out", str(tmp_path / "pi2.png")]
                    + [str(tmp_path / o) for o in ("identity", "uniform")]) == 0
  assert _is_png(str(tmp_path / "pi2.png"))
  assert plots.main(["pi", "--out", str(tmp_path / "x.png"), str(tmp_path / "nope")]) == 2


def test_cli_loss(tmp_path, capsys):
  wd = str(tmp_path / "run")
  _write_metrics(wd, [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.0}])
  assert plots.main(["loss", wd]) == 0
  assert _is_png(os.path.join(wd, "eval", "loss_curves.png"))
  assert plots.main(["loss", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.strip().startswith("error: no metrics file") and "Traceback" not in err
