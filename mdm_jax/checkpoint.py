"""Orbax checkpoints of a training run, preemption handling, inference loading.

Layout: `<workdir>/checkpoints/<step>/` with the items
  params, ema_params, opt_state   arrays (StandardSave; sharded, async)
  counters                        {'step': int32[], 'rng': uint32[2]} (StandardSave)
  data                            per-process data-iterator state (grain's handler:
                                  process_<i>-of-<n>.json)
  config                          the run's ConfigDict as JSON (JsonSave)
plus orbax's metrics file (the validation loss, when measured at that step).

Exports (`export_params`): `<dir>/export.json` (step, config, stored dtype, files)
and `<dir>/params.npz` (+ `ema_params.npz` when split to keep files small), the
raw and EMA parameters only, in float32 or bfloat16: small plain files that
`config.train.init_from` and `load_for_inference` read back. Command line:
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
import io
import json
import os
import signal
import sys
import threading
from typing import Any, Sequence

from absl import logging
from flax import traverse_util
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mdm_jax import fileio

ARRAY_ITEMS = ("params", "ema_params", "opt_state", "counters")
VAL_METRIC = "val_loss"
_COMMIT_SUCCESS = "commit_success.txt"  # orbax's marker of a finished step on GCS


def checkpoint_dir(workdir: str) -> str:
  return fileio.join(fileio.normalize(workdir), "checkpoints")


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def config_from_json(d: dict[str, Any]) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)


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


EXPORT_ARRAYS = "params.npz"  # raw params (and the EMA params, when they fit)
EXPORT_EMA_ARRAYS = "ema_params.npz"  # the EMA params, when split off
EXPORT_META = "export.json"
EXPORT_DTYPES = ("float32", "bfloat16", "auto")
_TREES = ("params", "ema_params")
_NPZ_ENTRY_BYTES = 512  # npy header + zip headers per array (a generous bound)


def is_export(path: str) -> bool:
  return fileio.isfile(fileio.join(fileio.expand(path), EXPORT_META))


def _to_stored(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
  """bfloat16: floating arrays as their bfloat16 bits (uint16; .npz has no bfloat16)."""
  if dtype == "float32":
    return arrays
  out = {}
  for name, a in arrays.items():
    if np.issubdtype(a.dtype, np.floating):
      out[name] = np.asarray(a, jax.numpy.bfloat16).view(np.uint16)
    elif a.dtype == np.uint16:
      raise ValueError(f"cannot export {name} (uint16) as bfloat16 bits")
    else:
      out[name] = a
  return out


def _from_stored(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
  if dtype == "float32":
    return arrays
  return {name: a.view(jax.numpy.bfloat16).astype(np.float32) if a.dtype == np.uint16
          else a for name, a in arrays.items()}


def _export_layout(arrays: dict[str, np.ndarray], dtype: str,
                   max_file_bytes: int | None) -> tuple[str, dict[str, str]]:
  """(stored dtype, {tree: file name}): the most exact layout within max_file_bytes.

  Tried in order: one file, then raw and EMA params in two files; with dtype
  'auto', float32 first, then bfloat16.
  """
  def nbytes(prefix: str, dt: str) -> int:
    size = 2 if dt == "bfloat16" else 4
    return sum(_NPZ_ENTRY_BYTES + (a.size * size if np.issubdtype(a.dtype, np.floating)
                                   else a.nbytes)
               for name, a in arrays.items() if name.split("/")[0] == prefix)

  one = {tree: EXPORT_ARRAYS for tree in _TREES}
  two = {"params": EXPORT_ARRAYS, "ema_params": EXPORT_EMA_ARRAYS}
  tried = []
  for dt in (("float32", "bfloat16") if dtype == "auto" else (dtype,)):
    for files in (one, two):
      sizes: dict[str, int] = {}
      for tree, name in files.items():
        sizes[name] = sizes.get(name, 0) + nbytes(tree, dt)
      if max_file_bytes is None or max(sizes.values()) <= max_file_bytes:
        return dt, files
      tried.append(f"{dt} in {len(sizes)} file(s): {max(sizes.values()) / 2**20:.1f} MiB")
  raise ValueError(f"the parameters do not fit files of {max_file_bytes / 2**20:.1f} MiB "
                   f"({'; '.join(tried)})")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def export_params(workdir: str, out_dir: str, *, step: int | None = None,
                  dtype: str = "float32", max_file_bytes: int | None = None) -> str:
  """Writes raw + EMA params (.npz), the step and the config to `out_dir`.

  A small, plain-file copy of a run (no optimizer state) that `load_init` (training
  goes on from it: config.train.init_from) and `load_for_inference` read back.
  Files are written under temporary names and renamed, the metadata
  (`export.json`) last, so a crash leaves either the old export or the new one.

  Args:
    workdir: a run directory (or what `load_for_inference` accepts).
    out_dir: where to write; created if missing.
    step: the checkpoint step (default the latest).
    dtype: 'float32' (exact), 'bfloat16' (half the bytes; read back as float32),
      or 'auto': float32 unless a file would exceed `max_file_bytes`.
    max_file_bytes: no file is larger than this: the EMA params go to their own
      file (`ema_params.npz`) when one file would be too big, and a ValueError
      says so when even that does not fit. None: no limit (one file).

  Returns `out_dir`.
  """
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
  trees, config, step = _load_trees(workdir, step, _TREES)
  arrays = {name: np.asarray(a) for name, a in traverse_util.flatten_dict(
      jax.device_get(trees), sep="/").items()}  # "params/net/.../kernel"
  stored, files = _export_layout(arrays, dtype, max_file_bytes)
  arrays = _to_stored(arrays, stored)
  out_dir = fileio.normalize(out_dir)
  fileio.makedirs(out_dir)
  for name in sorted(set(files.values())):
    part = {k: v for k, v in arrays.items() if files[k.split("/")[0]] == name}
    data = _npz_bytes(part)
    if max_file_bytes is not None and len(data) > max_file_bytes:
      raise ValueError(f"{name} is {len(data)} bytes, over max_file_bytes={max_file_bytes}")
    fileio.atomic_write(fileio.join(out_dir, name), data)
  meta = {"step": int(step), "dtype": stored, "files": files,
          "config": config_to_json(config)}
  fileio.atomic_write_json(fileio.join(out_dir, EXPORT_META), meta, indent=1)
  for name in (EXPORT_ARRAYS, EXPORT_EMA_ARRAYS):  # a previous export's layout
    if name not in files.values():
      fileio.remove(fileio.join(out_dir, name))
  return out_dir


def saved_step(path: str) -> int:
  """The step `load_for_inference(path)` restores by default (export or latest)."""
  if is_export(path):
    return int(fileio.read_json(fileio.join(fileio.expand(path), EXPORT_META))["step"])
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


def _load_export(path: str) -> tuple[Any, Any, int, ml_collections.ConfigDict]:
  path = fileio.expand(path)
  meta = fileio.read_json(fileio.join(path, EXPORT_META))
  files = meta.get("files") or {tree: EXPORT_ARRAYS for tree in _TREES}
  flat: dict[str, np.ndarray] = {}
  for name in sorted(set(files.values())):
    with np.load(io.BytesIO(fileio.read_bytes(fileio.join(path, name)))) as data:
      flat.update({k: data[k] for k in data.files})
  trees = traverse_util.unflatten_dict(_from_stored(flat, meta.get("dtype", "float32")),
                                       sep="/")
  return (trees.get("params", {}), trees.get("ema_params", {}), int(meta["step"]),
          config_from_json(meta["config"]))


def load_init(path: str) -> tuple[Any, Any, int]:
  """(params, EMA params, step) as numpy trees from an export or a run's workdir."""
  if is_export(path):
    params, ema, step, _ = _load_export(path)
    return params, ema, step
  trees, _, step = _load_trees(path, None, _TREES)
  return jax.device_get(trees["params"]), jax.device_get(trees["ema_params"]), step


def load_for_inference(workdir_or_ckpt_dir: str, *, step: int | None = None,
                       ema: bool = True) -> tuple[Any, ml_collections.ConfigDict]:
  """Restores EMA (or raw) parameters onto the local devices, plus the config.

  `workdir_or_ckpt_dir` is a workdir, its `checkpoints/` directory, one step
  directory, or an `export_params` directory. `step=None` takes the latest step.
  Parameters come back replicated on the local devices, whatever mesh wrote them.
  """
  item = "ema_params" if ema else "params"
  trees, config, _ = _load_trees(workdir_or_ckpt_dir, step, (item,))
  return trees[item], config


def _load_trees(path: str, step: int | None, items: Sequence[str]
                ) -> tuple[dict[str, Any], ml_collections.ConfigDict, int]:
  """({item: tree}, config, step) for items of ('params', 'ema_params'), in one read,
  replicated on the local devices."""
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("local",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if is_export(path):
    params, ema_params, export_step, config = _load_export(path)
    if step is not None and step != export_step:
      raise ValueError(f"{path} holds step {export_step}, not {step}")
    trees = {"params": params, "ema_params": ema_params}
    return {i: jax.device_put(trees[i], replicated) for i in items}, config, export_step
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
