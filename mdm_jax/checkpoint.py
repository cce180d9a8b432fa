"""Orbax checkpoints of a training run, preemption handling, inference loading.

Layout: `<workdir>/checkpoints/<step>/` with the items
  params, ema_params, opt_state   arrays (StandardSave; sharded, async)
  counters                        {'step': int32[], 'rng': uint32[2]} (StandardSave)
  data                            per-process data-iterator state (grain's handler:
                                  process_<i>-of-<n>.json)
  config                          the run's ConfigDict as JSON (JsonSave)
plus orbax's metrics file (the validation loss, when measured at that step).

Exports (`export_params`, the format in `export.py`): the raw and EMA parameters
only, as small plain files that `config.train.init_from` and `load_for_inference`
read back. Command line:
`python -m mdm_jax.checkpoint export WORKDIR OUT_DIR [--dtype auto --max-file-mib 15]`.

Retention policy: the `keep` latest checkpoints, plus the `keep_best` checkpoints
with the lowest validation loss among those saved with a validation loss.
Checkpoint writes go to a temporary directory renamed on completion (orbax; on
gs:// orbax writes in place and marks a finished step with `commit_success.txt`),
so a crash mid-save never corrupts an existing checkpoint; `wait()` blocks until
the async writes are finished. Workdirs and exports may be local or gs:// paths
(`mdm_jax.fileio`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any, Sequence

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mdm_jax import fileio
from mdm_jax.config_schema import config_from_json, config_to_json  # noqa: F401
from mdm_jax.export import (  # noqa: F401  (the export format lives in export.py)
    EXPORT_ARRAYS, EXPORT_DTYPES, EXPORT_EMA_ARRAYS, EXPORT_META, export_params,
    is_export)
from mdm_jax import export as export_lib

ARRAY_ITEMS = ("params", "ema_params", "opt_state", "counters")
VAL_METRIC = "val_loss"
_COMMIT_SUCCESS = "commit_success.txt"  # orbax's marker of a finished step on GCS


def checkpoint_dir(workdir: str) -> str:
  return fileio.join(fileio.normalize(workdir), "checkpoints")


def _remove_unfinished(directory: str) -> None:
  """Deletes the temporary directories of saves that a crash interrupted.

  Synchronous (orbax's own clean-up runs in a thread, racing with the listing of
  finished steps); process 0 deletes, the others wait at a barrier. Local: the
  `*.orbax-checkpoint-tmp-*` directories; gs://: step directories without
  orbax's `commit_success.txt` (orbax writes them in place there).
  """
  if jax.process_index() == 0 and fileio.isdir(directory):
    remote = fileio.is_remote(directory)
    for name in fileio.listdir(directory):
      path = fileio.join(directory, name)
      if ".orbax-checkpoint-tmp" in name:
        fileio.rmtree(path)
      elif remote and name.isdigit() and not fileio.exists(
          fileio.join(path, _COMMIT_SUCCESS)):
        fileio.rmtree(path)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("mdm_jax_checkpoint_cleanup")


def _score(metrics: dict[str, Any] | None) -> float:
  """Higher is better: minus the validation loss; -inf when there is none."""
  if not metrics or VAL_METRIC not in metrics:
    return -float("inf")
  return -float(metrics[VAL_METRIC])


class _IteratorState:
  """Adapts an iterator with get_state()/set_state() to grain's checkpoint handler.

  Grain's handler stores `get_state()` bytes per process; any JSON-able state (a
  dict from a grain DatasetIterator, bytes from a DataLoader iterator) is wrapped.
  """

  def __init__(self, iterator: Any, *, snapshot: bool = False):
    self.iterator = iterator
    # A snapshot taken now, so that an async save cannot see a later position.
    self._snapshot = self._encode() if snapshot else None

  def get_state(self) -> bytes:
    return self._snapshot if self._snapshot is not None else self._encode()

  def _encode(self) -> bytes:
    state = self.iterator.get_state()
    if isinstance(state, bytes):
      payload = {"bytes": state.decode("utf-8")}
    else:
      payload = {"json": state}
    return json.dumps(payload).encode("utf-8")

  def set_state(self, raw: bytes) -> None:
    payload = json.loads(raw.decode("utf-8"))
    if "bytes" in payload:
      self.iterator.set_state(payload["bytes"].encode("utf-8"))
    else:
      self.iterator.set_state(payload["json"])

  def start_prefetch(self) -> None:
    start = getattr(self.iterator, "start_prefetch", None)
    if start is not None:
      start()


class Checkpointer:
  """Saves and restores a run's state under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, keep_best: int = 1,
               async_save: bool = True, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"config.train.keep must be >= 1, got {keep}")
    self.directory = checkpoint_dir(workdir)
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best > 0:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=_score, n=keep_best, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save,
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=_score, best_mode="max",  # makes orbax store the metrics
        cleanup_tmp_directories=False)  # done synchronously below
    if not read_only:
      _remove_unfinished(self.directory)
    handlers = {name: ocp.StandardCheckpointHandler() for name in ARRAY_ITEMS}
    handlers["config"] = ocp.JsonCheckpointHandler()
    handlers["data"] = grain.checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=handlers)
    self._closed = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest validation loss (None if none has one)."""
    best = None
    for step in self.manager.all_steps():
      m = self.manager.metrics(step)
      if m and VAL_METRIC in m and (best is None or m[VAL_METRIC] < best[1]):
        best = (step, m[VAL_METRIC])
    return None if best is None else best[0]

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: dict[str, Any], *, iterator: Any | None,
           config: ml_collections.ConfigDict, val_loss: float | None = None) -> bool:
    """Starts an (async) save of `state` at `step`; returns whether it saved.

    `state` holds 'params', 'ema_params', 'opt_state', 'step' and 'rng'.
    """
    items = {
        "params": ocp.args.StandardSave(state["params"]),
        "ema_params": ocp.args.StandardSave(state["ema_params"]),
        "opt_state": ocp.args.StandardSave(state["opt_state"]),
        "counters": ocp.args.StandardSave({"step": state["step"], "rng": state["rng"]}),
        "config": ocp.args.JsonSave(config_to_json(config)),
    }
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(
          _IteratorState(iterator, snapshot=True))
    metrics = {}  # {} (not None): a step without validation ranks last for BestN
    if val_loss is not None and np.isfinite(val_loss):
      metrics = {VAL_METRIC: float(val_loss)}
    return self.manager.save(int(step), args=ocp.args.Composite(**items),
                             metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: dict[str, Any], *,
              iterator: Any | None = None) -> tuple[dict[str, Any], bool]:
    """Restores step `step` onto the shardings of `abstract_state`.

    `abstract_state` has the structure of the state passed to `save`, with
    jax.ShapeDtypeStruct leaves carrying the target shardings (so a checkpoint
    written on another number of devices restores onto the current mesh). When
    `iterator` is given its position is restored in place; returns (state,
    whether the iterator was restored; False e.g. when the process count changed).
    """
    items = {
        name: ocp.args.StandardRestore(abstract_state[name])
        for name in ("params", "ema_params", "opt_state")
    }
    items["counters"] = ocp.args.StandardRestore(
        {"step": abstract_state["step"], "rng": abstract_state["rng"]})
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    state = {name: restored[name] for name in ("params", "ema_params", "opt_state")}
    state["step"] = restored["counters"]["step"]
    state["rng"] = restored["counters"]["rng"]
    data_restored = False
    if iterator is not None:
      try:
        self.manager.restore(int(step), args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(_IteratorState(iterator))))
        data_restored = True
      except (ValueError, KeyError, FileNotFoundError) as e:
        logging.warning("data-iterator state not restored (%s); the data order "
                        "restarts from a step-dependent seed", e)
    return state, data_restored

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self.manager.restore(
        int(step), args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return config_from_json(restored["config"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    self.manager.wait_until_finished()
    self.manager.close()


def _find_checkpoint_dir(path: str) -> str:
  path = fileio.normalize(path)
  if fileio.isdir(fileio.join(path, "checkpoints")):
    return fileio.join(path, "checkpoints")
  if fileio.isdir(path) and os.path.basename(path.rstrip("/")) == "checkpoints":
    return path
  if fileio.isdir(path) and fileio.isdir(fileio.join(path, "params")):
    return path  # a single step directory
  raise ValueError(f"no checkpoints found under {path} (expected {path}/checkpoints)")


def saved_step(path: str) -> int:
  """The step `load_for_inference(path)` restores by default (export or latest)."""
  if is_export(path):
    return export_lib.export_step(path)
  directory = _find_checkpoint_dir(path)
  if fileio.isdir(fileio.join(directory, "params")):  # one step dir
    return int(os.path.basename(directory.rstrip("/")))
  with _quiet_absl(), ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
  ) as manager:
    step = manager.latest_step()
  if step is None:
    raise ValueError(f"no finished checkpoint in {path}")
  return int(step)


def load_init(path: str) -> tuple[Any, Any, int]:
  """(params, EMA params, step) as numpy trees from an export or a run's workdir."""
  if is_export(path):
    params, ema, step, _ = export_lib.load_export(path)
    return params, ema, step
  trees, _, step = load_trees(path, None, export_lib.TREES)
  return jax.device_get(trees["params"]), jax.device_get(trees["ema_params"]), step


def load_for_inference(workdir_or_ckpt_dir: str, *, step: int | None = None,
                       ema: bool = True) -> tuple[Any, ml_collections.ConfigDict]:
  """Restores EMA (or raw) parameters onto the local devices, plus the config.

  `workdir_or_ckpt_dir` is a workdir, its `checkpoints/` directory, one step
  directory, or an `export_params` directory. `step=None` takes the latest step.
  Parameters come back replicated on the local devices, whatever mesh wrote them.
  """
  item = "ema_params" if ema else "params"
  trees, config, _ = load_trees(workdir_or_ckpt_dir, step, (item,))
  return trees[item], config


def load_trees(path: str, step: int | None, items: Sequence[str]
               ) -> tuple[dict[str, Any], ml_collections.ConfigDict, int]:
  """({item: tree}, config, step) for items of ('params', 'ema_params'), in one read,
  replicated on the local devices; `path` as `load_for_inference` takes it."""
  if is_export(path):
    return export_lib.load_export_trees(path, step, tuple(items))
  replicated = export_lib.local_replicated()
  directory = _find_checkpoint_dir(path)
  if fileio.isdir(fileio.join(directory, "params")):  # one step dir
    base, name = os.path.split(directory.rstrip("/"))
    if step is None:
      step = int(name)
    directory = base
  handlers = {i: ocp.StandardCheckpointHandler() for i in items}
  handlers["config"] = ocp.JsonCheckpointHandler()
  # orbax warns about read-only managers and once per item it was not asked to restore
  with _quiet_absl(), ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers=handlers) as manager:
    steps = manager.all_steps()
    if not steps:
      raise ValueError(f"no finished checkpoint in {directory}")
    if step is None:
      step = max(steps)
    if step not in steps:
      raise ValueError(f"no checkpoint for step {step} in {directory}; "
                       f"available: {sorted(steps)}")
    meta = manager.item_metadata(step)
    args = {i: ocp.args.StandardRestore(jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=replicated),
        meta[i])) for i in items}
    restored = manager.restore(step, args=ocp.args.Composite(
        **args, config=ocp.args.JsonRestore()))
  return ({i: restored[i] for i in items}, config_from_json(restored["config"]),
          int(step))


@contextlib.contextmanager
def _quiet_absl():
  """absl warnings off for the block (its errors still show)."""
  before = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(before)


class PreemptionWatcher:
  """Turns SIGTERM into a flag that the training loop polls each step.

  Multi-process runs use JAX's preemption sync point instead (every process
  then saves at the same step); single-process runs install a SIGTERM handler
  for the lifetime of the watcher (use as a context manager).
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._installed = False

  def __enter__(self) -> "PreemptionWatcher":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _handler(self, signum, frame) -> None:
    del signum, frame
    self._flag.set()

  def request(self) -> None:
    """Asks for a stop at the next step (tests, hooks)."""
    self._flag.set()

  def reached(self, step: int) -> bool:
    if self._flag.is_set():
      return True
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))
      except RuntimeError:  # preemption service disabled
        return False
    return False


# ----------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mdm_jax.checkpoint",
      description="Export a run's parameters as small plain files (see export_params).")
  sub = parser.add_subparsers(dest="what", required=True)
  p_export = sub.add_parser(
      "export", help="raw + EMA params, step and config of WORKDIR -> OUT_DIR")
  p_export.add_argument("workdir", help="run directory (or a checkpoint / export)")
  p_export.add_argument("out_dir", help="directory to write (created if missing)")
  p_export.add_argument("--step", type=int, default=None, help="default: the latest")
  p_export.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                        help="stored dtype; 'auto': float32 unless a file would exceed "
                             "--max-file-mib (default: float32)")
  p_export.add_argument("--max-file-mib", type=float, default=None,
                        help="largest file size in MiB (default: no limit)")
  args = parser.parse_args(argv)
  limit = None if args.max_file_mib is None else int(args.max_file_mib * 2**20)
  try:
    out = export_params(args.workdir, args.out_dir, step=args.step, dtype=args.dtype,
                        max_file_bytes=limit)
  except (ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())[:500]}", file=sys.stderr)
    return 2
  meta = fileio.read_json(fileio.join(out, EXPORT_META))
  sizes = ", ".join(f"{n} {fileio.getsize(fileio.join(out, n)) / 2**20:.1f} MiB"
                    for n in sorted(set(meta["files"].values())))
  print(f"exported step {meta['step']} ({meta['dtype']}: {sizes}) to {out}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
