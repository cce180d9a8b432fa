"""Pictures of what a model did (matplotlib, Agg backend, PNG files).

- `plot_cell_heatmaps`: one n x n panel per strategy, e.g. the mean step at which
  each Sudoku cell was decoded, or the error rate per cell;
- `plot_example_orders`: a few single puzzles, one row of panels per decoder (and
  the task's solver), each blank cell showing the step at which it was decoded;
- `plot_accuracy_vs_steps`: puzzles solved against the number of reverse steps;
- `plot_loss_curves`: training / validation losses from `<workdir>/metrics.jsonl`;
- `plot_pi_learners`: validation loss against training compute for pi-learners
  (identity / much closer / closer / uniform orders), one curve per workdir;
- `plot_position_error`: per-position error of the denoiser (L&O-NAE-SAT,
  latents versus observations; the paper's Figure 2).

Command line: `python -m mdm_jax.plots loss WORKDIR` writes
`WORKDIR/eval/loss_curves.png`; `python -m mdm_jax.plots pi --out FILE WORKDIR...`
plots pi-learner runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from mdm_jax import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position

PI_ORDERS = ("identity", "much_closer", "closer", "uniform")
_PI_LABELS = {"identity": "identity", "much_closer": "much closer", "closer": "closer",
              "uniform": "uniform"}
_DPI = 110


def _save(fig: Any, path: str) -> str:
  fileio.makedirs(os.path.dirname(fileio.normalize(path)))
  fileio.savefig(fig, path, dpi=_DPI, bbox_inches="tight")
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------------
# Per-cell statistics.


def cell_mean(values_NxL: np.ndarray, valid_NxL: np.ndarray, grid_shape: tuple[int, int],
              positions: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
  """float[rows, cols]: mean of `values` over the rows where `valid`, per grid cell.

  `positions[k]` is the sequence position of grid cell k (row-major); default the
  first rows*cols positions. Cells never valid are NaN.
  """
  values_NxL = np.asarray(values_NxL, np.float64)
  valid_NxL = np.asarray(valid_NxL, bool)
  if values_NxL.shape != valid_NxL.shape or values_NxL.ndim != 2:
    raise ValueError(f"values and valid must both be [N, L], got {values_NxL.shape} "
                     f"and {valid_NxL.shape}")
  rows, cols = grid_shape
  if positions is None:
    positions = np.arange(rows * cols)
  positions = np.asarray(positions, int)
  if positions.shape != (rows * cols,) or positions.max() >= values_NxL.shape[1]:
    raise ValueError(f"positions must name {rows * cols} cells inside length "
                     f"{values_NxL.shape[1]}")
  v = values_NxL[:, positions]
  m = valid_NxL[:, positions]
  count = m.sum(axis=0)
  total = np.where(m, v, 0.0).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  return mean.reshape(rows, cols)


def _box_lines(ax: Any, rows: int, cols: int, box: tuple[int, int] | None) -> None:
  ax.set_xticks(np.arange(cols))
  ax.set_yticks(np.arange(rows))
  ax.set_xticklabels([str(c + 1) for c in range(cols)], fontsize=7)
  ax.set_yticklabels([str(r + 1) for r in range(rows)], fontsize=7)
  ax.tick_params(length=0)
  for r in range(rows + 1):
    thick = box is not None and r % box[0] == 0
    ax.axhline(r - 0.5, color="black", lw=1.8 if thick else 0.3)
  for c in range(cols + 1):
    thick = box is not None and c % box[1] == 0
    ax.axvline(c - 0.5, color="black", lw=1.8 if thick else 0.3)


def plot_cell_heatmaps(grids: Mapping[str, np.ndarray], path: str, *, title: str,
                       colorbar_label: str, box: tuple[int, int] | None = None,
                       cmap: str = "viridis", vmin: float | None = None,
                       vmax: float | None = None, fmt: str = "{:.1f}",
                       subtitles: Mapping[str, str] | None = None) -> str:
  """One heatmap panel per entry of `grids` (name -> float[rows, cols]), one scale.

  NaN cells (e.g. cells that were always given) are drawn grey. Values are written
  in the cells when the grid has at most 12 columns.
  """
  if not grids:
    raise ValueError("grids is empty: nothing to plot")
  arrays = {k: np.asarray(v, float) for k, v in grids.items()}
  finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()] + [np.zeros(0)])
  lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
  hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
  if hi <= lo:
    hi = lo + 1.0
  k = len(arrays)
  rows, cols = next(iter(arrays.values())).shape
  fig, axes = plt.subplots(1, k, figsize=(3.4 * k + 0.8, 3.6), squeeze=False,
                           constrained_layout=True)
  colormap = matplotlib.colormaps[cmap].with_extremes(bad="#d0d0d0")
  image = None
  for ax, (name, grid) in zip(axes[0], arrays.items()):
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=colormap, vmin=lo, vmax=hi)
    _box_lines(ax, rows, cols, box)
    ax.set_title((subtitles or {}).get(name, name), fontsize=10)
    if cols <= 12:
      for r in range(rows):
        for c in range(cols):
          if np.isfinite(grid[r, c]):
            red, green, blue, _ = colormap((grid[r, c] - lo) / (hi - lo))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(c, r, fmt.format(grid[r, c]), ha="center", va="center",
                    fontsize=6 if cols > 9 else 7, color="white" if dark else "black")
  cbar = fig.colorbar(image, ax=list(axes[0]), shrink=0.85)
  cbar.set_label(colorbar_label)
  fig.suptitle(title, fontsize=11)
  return _save(fig, path)


def plot_example_orders(givens_KxC: np.ndarray, steps: Mapping[str, np.ndarray], path: str,
                        *, grid_shape: tuple[int, int], title: str,
                        box: tuple[int, int] | None = None,
                        subtitles: Mapping[str, Sequence[str]] | None = None) -> str:
  """Decoding orders of K single puzzles, one row of K panels per entry of `steps`.

  givens_KxC: the clue digits of each puzzle's grid cells (row-major, 0 = blank).
  steps[name]: float[K, C], the step (or rank) at which each blank cell was fixed
  by that decoder; NaN or < 0 where not generated. Each panel colours its cells by
  their rank within the puzzle (early = dark) and writes the step + 1 in them;
  clues are drawn as grey digits. subtitles[name][k] titles panel k of that row.
  """
  givens_KxC = np.asarray(givens_KxC)
  rows, cols = grid_shape
  if givens_KxC.ndim != 2 or givens_KxC.shape[1] != rows * cols:
    raise ValueError(f"givens must be [K, {rows * cols}], got {givens_KxC.shape}")
  if not steps:
    raise ValueError("steps is empty: nothing to plot")
  k = givens_KxC.shape[0]
  fig, axes = plt.subplots(len(steps), k, figsize=(3.0 * k, 3.1 * len(steps)),
                           squeeze=False, constrained_layout=True)
  colormap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
  for r_i, (name, steps_KxC) in enumerate(steps.items()):
    steps_KxC = np.asarray(steps_KxC, float)
    if steps_KxC.shape != givens_KxC.shape:
      raise ValueError(f"steps[{name!r}] must have shape {givens_KxC.shape}, got "
                       f"{steps_KxC.shape}")
    for j in range(k):
      ax = axes[r_i, j]
      step_C = np.where(steps_KxC[j] >= 0, steps_KxC[j], np.nan)
      finite = np.isfinite(step_C)
      rank_C = np.full(step_C.shape, np.nan)
      if finite.any():
        lo, hi = np.nanmin(step_C), np.nanmax(step_C)
        rank_C[finite] = (step_C[finite] - lo) / max(hi - lo, 1e-9)
      ax.imshow(np.ma.masked_invalid(rank_C.reshape(rows, cols)), cmap=colormap,
                vmin=0.0, vmax=1.0)
      _box_lines(ax, rows, cols, box)
      ax.set_xticks([])
      ax.set_yticks([])
      for c_i in range(rows * cols):
        r, c = divmod(c_i, cols)
        if givens_KxC[j, c_i] > 0:
          ax.text(c, r, str(int(givens_KxC[j, c_i])), ha="center", va="center",
                  fontsize=7, color="#777777", fontweight="bold")
        elif finite[c_i]:
          red, green, blue, _ = colormap(rank_C[c_i])
          dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
          ax.text(c, r, str(int(step_C[c_i]) + 1), ha="center", va="center",
                  fontsize=6, color="white" if dark else "black")
      sub = (subtitles or {}).get(name)
      ax.set_title(sub[j] if sub is not None else name, fontsize=8)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)


# ----------------------------------------------------------------------------------
# Curves.


def plot_accuracy_vs_steps(sweep: Mapping[str, Mapping[int, float]], path: str, *,
                           title: str, ylabel: str = "puzzles solved (%)") -> str:
  """One line per strategy: accuracy (a share in [0, 1]) against num_steps."""
  if not sweep:
    raise ValueError("sweep is empty: nothing to plot")
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, points in sweep.items():
    steps = sorted(int(s) for s in points)
    acc = [100.0 * points[s] if s in points else 100.0 * points[str(s)] for s in steps]
    ax.plot(steps, acc, marker="o", label=name)
  ax.set_xscale("log")
  all_steps = sorted({int(s) for p in sweep.values() for s in p})
  ax.set_xticks(all_steps)
  ax.set_xticklabels([str(s) for s in all_steps])
  ax.minorticks_off()
  ax.set_xlabel("number of sampling steps")
  ax.set_ylabel(ylabel)
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def read_metrics(workdir_or_file: str) -> list[dict[str, Any]]:
  """Records of `<workdir>/metrics.jsonl` (a torn last line is skipped)."""
  path = workdir_or_file
  if fileio.isdir(path):
    path = fileio.join(path, "metrics.jsonl")
  if not fileio.isfile(path):
    raise ValueError(f"no metrics file at {path}")
  records = []
  for line in fileio.read_text(path).splitlines():
    try:
      rec = json.loads(line)
    except ValueError:
      continue
    if isinstance(rec, dict) and "step" in rec:
      records.append(rec)
  return records


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = {}
  for rec in records:
    v = rec.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
      pts[int(rec["step"])] = float(v)  # a resumed run's later record wins
  steps = np.asarray(sorted(pts), float)
  return steps, np.asarray([pts[int(s)] for s in steps], float)


def loss_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """Metric names that hold a loss (contain 'loss'), in first-seen order."""
  keys: list[str] = []
  for rec in records:
    for k, v in rec.items():
      if "loss" in k and k not in keys and isinstance(v, (int, float)):
        keys.append(k)
  return keys


def plot_loss_curves(workdir_or_file: str, path: str, *, title: str | None = None) -> str:
  """Every loss metric of `metrics.jsonl` against the training step."""
  records = read_metrics(workdir_or_file)
  keys = loss_keys(records)
  if not keys:
    raise ValueError(f"no loss metric in {workdir_or_file} (keys containing 'loss')")
  fig, ax = plt.subplots(figsize=(6.5, 4))
  positive = True
  for k in keys:
    steps, values = _series(records, k)
    if steps.size == 0:
      continue
    positive &= bool(np.all(values > 0))
    style = dict(marker="o", ms=3) if steps.size < 30 else {}
    ax.plot(steps, values, label=k, lw=1.2, **style)
  lows = [v for k in keys for v in _series(records, k)[1]]
  if positive and lows and max(lows) / min(lows) > 10:
    ax.set_yscale("log")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel("training step")
  ax.set_ylabel("loss")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  ax.set_title(title or f"training curves: {os.path.basename(fileio.normalize(workdir_or_file))}",
               fontsize=11)
  return _save(fig, path)


def training_minutes(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
  """(steps, minutes of training at that step) from the records' wall times; the
  start is extrapolated back from the first two records (compilation excluded)."""
  pts = {int(r["step"]): float(r["time"]) for r in records
         if isinstance(r.get("time"), (int, float))}
  steps = np.asarray(sorted(pts), float)
  if steps.size < 2:
    raise ValueError("need at least two timed metric records")
  times = np.asarray([pts[int(k)] for k in steps])
  start = times[0] - steps[0] * (times[1] - times[0]) / max(steps[1] - steps[0], 1.0)
  return steps, (times - start) / 60.0


def plot_solve_rate_vs_time(workdir_or_file: str, path: str, *,
                            keys: Sequence[str] = ("val/solve_rate", "val_raw/solve_rate"),
                            title: str | None = None) -> str:
  """The periodic validation solve rate against minutes of training (top axis: steps)."""
  records = read_metrics(workdir_or_file)
  all_steps, minutes = training_minutes(records)
  fig, ax = plt.subplots(figsize=(6.0, 4))
  plotted = 0
  for k in keys:
    steps, values = _series(records, k)
    if steps.size == 0:
      continue
    label = {"val/solve_rate": "EMA params", "val_raw/solve_rate": "raw params"}.get(k, k)
    ax.plot(np.interp(steps, all_steps, minutes), 100.0 * values, marker="o", label=label)
    plotted += 1
  if not plotted:
    plt.close(fig)
    raise ValueError(f"no solve-rate metric ({', '.join(keys)}) in {workdir_or_file}")
  top = ax.secondary_xaxis("top", functions=(lambda m: np.interp(m, minutes, all_steps),
                                             lambda st: np.interp(st, all_steps, minutes)))
  top.set_xlabel("training step")
  ax.set_xlabel("minutes of training")
  ax.set_ylabel("validation puzzles solved (%)")
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title or "solve rate during training", fontsize=11)
  return _save(fig, path)


def _val_loss_key(records: Sequence[Mapping[str, Any]]) -> str:
  keys = loss_keys(records)
  for k in keys:
    if "val" in k:
      return k
  if not keys:
    raise ValueError("no loss metric in metrics.jsonl")
  return keys[0]


def plot_pi_learners(runs: Sequence[Mapping[str, Any]], path: str, *,
                     title: str = "pi-learners: validation loss vs training compute") -> str:
  """Validation loss against training FLOPs, one line per run.

  Each run: {'label': str, 'flops': float[K], 'loss': float[K]} (see
  `pi_learner_run` for building one from a workdir). Runs are drawn in the order
  identity, much closer, closer, uniform when their labels say so.
  """
  if not runs:
    raise ValueError("no pi-learner runs to plot")
  order = {o: i for i, o in enumerate(PI_ORDERS)}
  runs = sorted(runs, key=lambda r: order.get(r.get("pi_order", ""), len(order)))
  colors = {"identity": "tab:blue", "much_closer": "tab:green", "closer": "tab:orange",
            "uniform": "tab:red"}
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for run in runs:
    flops = np.asarray(run["flops"], float)
    loss = np.asarray(run["loss"], float)
    keep = (flops > 0) & np.isfinite(loss)
    ax.plot(flops[keep], loss[keep], marker="o", ms=3, label=run["label"],
            color=colors.get(run.get("pi_order", ""), "black"))  # black: not a pi-learner
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("training compute (FLOPs)")
  ax.set_ylabel("validation loss (nats / answer token)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, title="order pi")
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def plot_position_error(error_L: np.ndarray, is_latent_L: np.ndarray, path: str, *,
                        title: str, ylabel: str = "prediction error") -> str:
  """Per-position error, latents and observations in two colours (paper Figure 2)."""
  error_L = np.asarray(error_L, float)
  is_latent_L = np.asarray(is_latent_L, bool)
  if error_L.shape != is_latent_L.shape or error_L.ndim != 1:
    raise ValueError(f"error and is_latent must be [L], got {error_L.shape}, "
                     f"{is_latent_L.shape}")
  pos = np.arange(error_L.size)
  fig, ax = plt.subplots(figsize=(7, 3.8))
  for mask, name, color in ((is_latent_L, "latent", "tab:red"),
                            (~is_latent_L, "observation", "tab:blue")):
    ok = mask & np.isfinite(error_L)
    if ok.any():
      mean = float(error_L[ok].mean())
      ax.bar(pos[ok], error_L[ok], width=1.0, color=color, alpha=0.8,
             label=f"{name} positions (mean {mean:.3f})")
      ax.axhline(mean, color=color, ls="--", lw=1)
  ax.set_xlabel("sequence position")
  ax.set_ylabel(ylabel)
  ax.set_xlim(-0.5, error_L.size - 0.5)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def position_mean(values_NxL: np.ndarray, valid_NxL: np.ndarray) -> np.ndarray:
  """float[L]: mean of `values` per position over the rows where `valid` (NaN if none)."""
  values_NxL = np.asarray(values_NxL, np.float64)
  valid_NxL = np.asarray(valid_NxL, bool)
  count = valid_NxL.sum(axis=0)
  total = np.where(valid_NxL, values_NxL, 0.0).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_position_curves(curves: Mapping[str, np.ndarray], path: str, *, title: str,
                         ylabel: str, boundary: int | None = None,
                         boundary_labels: tuple[str, str] = ("latents", "observations")
                         ) -> str:
  """One line per entry (name -> float[L]) against the sequence position.

  `boundary` draws a vertical line between two groups of positions (L&O-NAE-SAT:
  latents before, observations after).
  """
  if not curves:
    raise ValueError("curves is empty: nothing to plot")
  fig, ax = plt.subplots(figsize=(7.5, 3.8))
  for name, values in curves.items():
    values = np.asarray(values, float)
    ax.plot(np.arange(values.size), values, lw=1.2, label=name)
  if boundary is not None:
    ax.axvline(boundary - 0.5, color="black", ls=":", lw=1)
    top = ax.get_ylim()[1]
    ax.text(boundary - 1, top, boundary_labels[0] + " ", ha="right", va="top", fontsize=8)
    ax.text(boundary, top, " " + boundary_labels[1], ha="left", va="top", fontsize=8)
  ax.set_xlabel("sequence position")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


# ----------------------------------------------------------------------------------
# pi-learner runs.


def pi_learner_run(workdir: str) -> dict[str, Any]:
  """{'label', 'pi_order', 'flops', 'loss'} of one training run (any objective).

  Reads `<workdir>/config.json` and `<workdir>/metrics.jsonl`. Training compute at
  step s = 3 (forward + backward) * forward FLOPs per token * batch_size * seq_len * s.
  The loss is the validation loss (the first metric named '*val*loss*').
  """
  from mdm_jax import experiment  # pylint: disable=g-import-not-at-top
  from mdm_jax.models import transformer  # pylint: disable=g-import-not-at-top
  from mdm_jax import config_schema  # pylint: disable=g-import-not-at-top
  cfg_path = fileio.join(workdir, "config.json")
  if not fileio.isfile(cfg_path):
    raise ValueError(f"no config.json in {workdir} (is it a training workdir?)")
  config = config_schema.merge_saved(fileio.read_json(cfg_path))
  records = read_metrics(workdir)
  key = _val_loss_key(records)
  steps, loss = _series(records, key)
  task = experiment.build_task(config)
  _, model_config = experiment.build_model(config, task)
  per_step = (3.0 * transformer.flops_per_token(model_config)
              * int(config.train.batch_size) * model_config.seq_len)
  objective = str(config.objective)
  if objective == "pi":
    order = str(config.data.pi_order)
    label = f"pi-learner, {_PI_LABELS.get(order, order)}"
  else:
    order = ""
    label = objective.upper()
  return {"label": label, "pi_order": order, "flops": steps * per_step, "loss": loss,
          "metric": key, "workdir": fileio.normalize(workdir)}


# ----------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mdm_jax.plots",
      description="Training pictures: loss curves of a run, or pi-learner runs compared.")
  sub = parser.add_subparsers(dest="what", required=True)
  p_loss = sub.add_parser("loss", help="loss curves of WORKDIR -> WORKDIR/eval/loss_curves.png")
  p_loss.add_argument("workdir")
  p_loss.add_argument("--out", default=None)
  p_pi = sub.add_parser("pi", help="validation loss vs compute of several runs")
  p_pi.add_argument("workdirs", nargs="+")
  p_pi.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  try:
    if args.what == "loss":
      out = args.out or os.path.join(args.workdir, "eval", "loss_curves.png")
      print(plot_loss_curves(args.workdir, out))
    else:
      print(plot_pi_learners([pi_learner_run(w) for w in args.workdirs], args.out))
  except (ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
