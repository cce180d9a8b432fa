"""Metric writers (TensorBoard, JSONL, log lines) and the training progress display.

Only process 0 writes; on other processes every method is a no-op.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from mdm_jax import fileio


def log_line(msg: str, *args: Any) -> None:
  """A user-facing line on stderr (process 0 only): '[mdm_jax HH:MM:SS] msg'.

  Independent of absl's verbosity, which the command line sets to WARNING so that
  library chatter (orbax) stays out of the way.
  """
  if jax.process_index() != 0:
    return
  text = msg % args if args else msg
  print(f"[mdm_jax {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _scalar(v: Any) -> float | None:
  try:
    a = np.asarray(v)
  except Exception:  # pylint: disable=broad-except
    return None
  if a.size != 1 or not np.issubdtype(a.dtype, np.number):
    return None
  return float(a.reshape(()))


def format_scalars(scalars: Mapping[str, float]) -> str:
  parts = []
  for k, v in scalars.items():
    if isinstance(v, float) and (abs(v) >= 1e4 or (0 < abs(v) < 1e-3)):
      parts.append(f"{k}={v:.3e}")
    elif isinstance(v, float):
      parts.append(f"{k}={v:.4f}")
    else:
      parts.append(f"{k}={v}")
  return " ".join(parts)


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl`, `<workdir>/tb/` and the log.

  Each JSONL line is {"step": int, "time": float, "<name>": float, ...}. With
  `resume_step`, lines of an earlier interrupted run with step > resume_step are
  dropped, so that the file describes exactly one history. On a gs:// workdir
  the JSONL object is rewritten at most every `remote_flush_secs` seconds
  (`fileio.LineAppender`: Cloud Storage has no append) and on close;
  TensorBoard events go through tensorboardX's own GCS writer
  (google-cloud-storage).
  """

  def __init__(self, workdir: str, *, resume_step: int | None = None,
               tensorboard: bool = True, enabled: bool | None = None,
               remote_flush_secs: float = 30.0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    workdir = fileio.normalize(workdir)
    self.path = fileio.join(workdir, "metrics.jsonl")
    self._tb = None
    self._file = None
    if not self.enabled:
      return
    fileio.makedirs(workdir)
    if resume_step is not None and fileio.exists(self.path):
      self._truncate_after(resume_step)
    self._file = fileio.LineAppender(self.path, remote_flush_secs=remote_flush_secs)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      purge = None if resume_step is None else resume_step + 1
      self._tb = SummaryWriter(fileio.join(workdir, "tb"), purge_step=purge)

  def _truncate_after(self, step: int) -> None:
    keep = []
    for line in fileio.read_text(self.path).splitlines(keepends=True):
      try:
        if int(json.loads(line)["step"]) <= step:
          keep.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        continue  # a torn last line of a killed run
    fileio.atomic_write(self.path, "".join(keep))

  def write_scalars(self, step: int, scalars: Mapping[str, Any], *,
                    log: bool = True) -> dict[str, float]:
    """Writes the numeric scalars of `scalars`; returns them as floats."""
    values = {}
    for k, v in scalars.items():
      f = _scalar(v)
      if f is not None:
        values[k] = f
    if not self.enabled or not values:
      return values
    record = {"step": int(step), "time": round(time.time(), 3)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, int(step))
    if log:
      log_line("step %d: %s", step, format_scalars(values))
    return values

  def write_text(self, step: int, name: str, text: str) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_text(name, text, int(step))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush(force=True)
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file (skipping a torn last line)."""
  out = []
  for line in fileio.read_text(path).splitlines():
    try:
      out.append(json.loads(line))
    except ValueError:
      continue
  return out


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class Progress:
  """Steps/s, tokens/s and ETA: a tqdm bar on a terminal, log lines otherwise.

  Rates are measured over the window since the previous `update` call that
  reported, so compilation time of the first step is excluded after it.
  """

  def __init__(self, total_steps: int, start_step: int, tokens_per_step: int, *,
               enabled: bool | None = None, bar: bool | None = None,
               desc: str = "train"):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total = int(total_steps)
    self.tokens_per_step = int(tokens_per_step)
    self._last_step = int(start_step)
    self._last_time = time.perf_counter()
    self.rates = {"steps_per_sec": float("nan"), "tokens_per_sec": float("nan")}
    self._bar = None
    if self.enabled and (sys.stderr.isatty() if bar is None else bar):
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=self.total, initial=start_step, desc=desc,
                       dynamic_ncols=True, leave=True, file=sys.stderr)

  def update(self, step: int, postfix: Mapping[str, float] | None = None
             ) -> dict[str, float]:
    """Reports progress up to `step`; returns the window's rates."""
    now = time.perf_counter()
    dt = now - self._last_time
    dsteps = step - self._last_step
    if dsteps > 0 and dt > 0:
      sps = dsteps / dt
      self.rates = {"steps_per_sec": sps, "tokens_per_sec": sps * self.tokens_per_step}
    self._last_step, self._last_time = step, now
    if self._bar is not None:
      self._bar.n = step
      fields = {"tok/s": f"{self.rates['tokens_per_sec']:.3g}"}
      if postfix:
        fields.update({k: f"{v:.4g}" for k, v in postfix.items()})
      self._bar.set_postfix(fields, refresh=False)
      self._bar.refresh()
    return dict(self.rates)

  def reset_clock(self, step: int) -> None:
    """Starts the next rate window now (e.g. after a validation pass)."""
    self._last_step, self._last_time = step, time.perf_counter()

  def status(self, step: int) -> str:
    """'12.3 steps/s, 4.5e+04 tokens/s, ETA 0:42' for the latest window."""
    sps = self.rates["steps_per_sec"]
    eta = (self.total - step) / sps if sps > 0 else float("nan")
    return (f"{sps:.2f} steps/s, {self.rates['tokens_per_sec']:.3g} tokens/s, "
            f"ETA {_fmt_duration(eta)}")

  def write(self, msg: str) -> None:
    """Prints a line without breaking the bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(msg, file=sys.stderr)
    else:
      log_line("%s", msg)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
