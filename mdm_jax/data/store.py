"""Sharded on-disk datasets and grain loaders over them.

Layout of one dataset (see `dataset_dir`):

  <data_dir>/<task>-<params hash>/<split>-s<seed>-n<num>/
    manifest.json               identity, shard table, per-file sha256
    shard-00000.<key>.npy       one file per example key per shard
    ...

Shard i holds examples [i * shard_size, min(num, (i + 1) * shard_size)) and is
`task.generate(split, count_i, seed=shard_seed(seed, split, i))`, a pure function
of its index. Files are written to a temporary name, fsynced and renamed; the
manifest is rewritten the same way after every shard, so a process killed at any
moment leaves a consistent, resumable dataset. A lock file serialises writers
(e.g. several hosts sharing one file system).

`data_dir` may be a gs:// path (`mdm_jax.fileio`): every file is then one object
upload (atomic), shards are read into memory instead of memory-mapped, and
writers are not locked: concurrent writers store identical shards (each is a pure
function of its index), and each finishes with a complete manifest.

Reading: `load_examples` (whole dataset as numpy), `ExamplesSource` (lazy,
memory-mapped random access) and `loaders.make_loader` (a grain pipeline of
encoded, augmented batches with a saveable position; also `store.make_loader`).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import re
import sys
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mdm_jax import config_schema
from mdm_jax import fileio
from mdm_jax.data import base

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OBJECTIVES = config_schema.OBJECTIVES

_LOCK = ".lock"
_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")
_SHARD_FILE_RE = re.compile(r"^shard-\d{5,}\.[A-Za-z0-9_]+\.npy$")
_MAX_SEED = 2**31 - 1


class DatasetError(ValueError):
  """A stored dataset is missing, inconsistent or corrupt (one-line message)."""


# ----------------------------------------------------------------------------
# Names and seeds.


def _canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """`params` round-tripped through JSON (so stored and live params compare)."""
  try:
    return json.loads(json.dumps(dict(params), sort_keys=True))
  except (TypeError, ValueError) as e:
    raise ValueError(f"task params are not JSON-serialisable: {e}") from None


def params_hash(params: Mapping[str, Any]) -> str:
  """Short stable hash of task parameters (8 hex digits)."""
  text = json.dumps(_canonical_params(params), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:8]


def dataset_dir(task: base.Task, split: str, num: int, seed: int,
                data_dir: str) -> str:
  """`<data_dir>/<task>-<params hash>/<split>-s<seed>-n<num>` (not created)."""
  return os.path.join(fileio.expand(os.fspath(data_dir)),
                      f"{task.name}-{params_hash(task.data_params())}",
                      f"{split}-s{seed}-n{num}")


def shard_seed(seed: int, split: str, index: int) -> int:
  """Seed of shard `index`: distinct for every shard of one (seed, split)."""
  digest = hashlib.sha256(f"mdm_jax/{split}/{seed}".encode()).digest()
  base_seed = int.from_bytes(digest[:8], "little") % (_MAX_SEED + 1)
  return (base_seed + index) % (_MAX_SEED + 1)


def _shard_counts(num: int, shard_size: int) -> list[int]:
  return [min(shard_size, num - start) for start in range(0, num, shard_size)]


def _shard_file(index: int, key: str) -> str:
  return f"shard-{index:05d}.{key}.npy"


# ----------------------------------------------------------------------------
# Files.


def _atomic_write(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically and durably (fileio.atomic_write)."""
  fileio.atomic_write(path, data, fsync=True)


def _npy_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  return buf.getvalue()


def _sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with fileio.open_file(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


# ----------------------------------------------------------------------------
# Manifest.


def read_manifest(path: str) -> dict[str, Any] | None:
  """The manifest of the dataset at `path`, or None if there is none."""
  file = os.path.join(os.fspath(path), MANIFEST)
  try:
    manifest = fileio.read_json(file)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DatasetError(f"unreadable manifest {file}: {e}") from None
  if not isinstance(manifest, dict) or "format_version" not in manifest:
    raise DatasetError(f"{file} is not an mdm_jax dataset manifest")
  return manifest


def _write_manifest(path: str, manifest: dict[str, Any]) -> None:
  _atomic_write(os.path.join(path, MANIFEST),
                json.dumps(manifest, indent=1, sort_keys=True).encode())


def _identity(task: base.Task, split: str, num: int, seed: int,
              shard_size: int) -> dict[str, Any]:
  identity = {"format_version": FORMAT_VERSION, "task": task.name,
              "params": _canonical_params(task.data_params()), "split": split,
              "seed": seed, "num": num, "shard_size": shard_size,
              "num_shards": len(_shard_counts(num, shard_size))}
  extra = _canonical_params(task.data_identity(split))
  clash = sorted(set(extra) & (set(identity) | {"shards", "spec", "complete"}))
  if clash:
    raise ValueError(f"{task.name}.data_identity uses reserved manifest keys {clash}")
  return {**identity, **extra}


def _identity_mismatch(manifest: Mapping[str, Any], want: Mapping[str, Any]) -> str | None:
  diffs = [f"{k}={manifest.get(k)!r} (asked {v!r})" for k, v in want.items()
           if manifest.get(k) != v]
  return ", ".join(diffs) if diffs else None


def _check_shard_files(path: str, manifest: Mapping[str, Any], verify: bool) -> None:
  """Raises DatasetError if a listed shard file is missing, resized or corrupt."""
  for index, shard in sorted(manifest["shards"].items(), key=lambda kv: int(kv[0])):
    for key, info in shard["files"].items():
      file = os.path.join(path, info["name"])
      hint = "; rebuild it with overwrite=True (CLI: --overwrite)"
      try:
        size = fileio.getsize(file)
      except OSError:
        raise DatasetError(f"shard {index} file {file} is missing{hint}") from None
      if size != info["bytes"]:
        raise DatasetError(f"shard {index} file {file} has {size} bytes, "
                           f"manifest says {info['bytes']}{hint}")
      if verify and _sha256_file(file) != info["sha256"]:
        raise DatasetError(f"shard {index} file {file} fails its sha256 checksum{hint}")


def is_complete(manifest: Mapping[str, Any] | None) -> bool:
  return bool(manifest) and len(manifest["shards"]) == manifest["num_shards"]


# ----------------------------------------------------------------------------
# Generation.


def _generate_shard(task: base.Task, split: str, path: str, index: int,
                    count: int, seed: int) -> dict[str, Any]:
  """Generates and writes shard `index`; returns its manifest entry."""
  examples = task.generate(split, count, seed=seed)
  if not isinstance(examples, Mapping) or not examples:
    raise ValueError(f"{task.name}.generate returned {type(examples).__name__}, "
                     "expected a non-empty dict of arrays")
  files, spec = {}, {}
  for key, value in sorted(examples.items()):
    array = np.ascontiguousarray(value)
    if not isinstance(key, str) or not _KEY_RE.match(key):
      raise ValueError(f"{task.name}.generate returned key {key!r}; keys must match "
                       "[A-Za-z0-9_]+")
    if array.ndim < 1 or array.shape[0] != count:
      raise ValueError(f"{task.name}.generate({count}) returned {key!r} with shape "
                       f"{array.shape}; the leading dimension must be {count}")
    if array.dtype.hasobject:
      raise ValueError(f"{task.name}.generate returned {key!r} with object dtype")
    data = _npy_bytes(array)
    name = _shard_file(index, key)
    _atomic_write(os.path.join(path, name), data)
    files[key] = {"name": name, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()}
    spec[key] = {"dtype": array.dtype.str, "shape": list(array.shape[1:])}
  return {"index": index, "count": count, "seed": seed, "files": files, "spec": spec}


@contextlib.contextmanager
def _locked(path: str, progress: bool) -> Iterator[None]:
  """An exclusive lock on the dataset (local only: see the module docstring)."""
  def waiting():
    if progress:
      print(f"waiting for another process writing {path}", file=sys.stderr)
  with fileio.lock(os.path.join(path, _LOCK), on_wait=waiting):
    yield


def _remove_ours(path: str, *, shards: bool) -> None:
  """Deletes leftover temp files (and, if `shards`, shard files and manifest)."""
  try:
    names = fileio.listdir(path)
  except FileNotFoundError:  # gs://: no object under the prefix yet
    return
  for name in names:
    ours = fileio.is_temporary(name)
    if shards:
      ours = ours or name == MANIFEST or bool(_SHARD_FILE_RE.match(name))
    if ours:
      fileio.remove(os.path.join(path, name))


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def default_workers(gen_workers: int) -> int:
  """config.data.gen_workers as a process count: 0 means one per CPU core, at most 8."""
  return int(gen_workers) or min(os.cpu_count() or 1, 8)


def ensure_dataset(task: base.Task, split: str, num: int, seed: int, data_dir: str, *,
                   shard_size: int | None = None, keep_stored_shard_size: bool = False,
                   progress: bool = True, workers: int = 1, verify: bool = False,
                   overwrite: bool = False) -> str:
  """Makes sure `num` examples of `split` are stored; returns the dataset dir.

  Generates what is missing (resuming a partial dataset shard by shard) and
  returns at once if a complete matching dataset exists (a cheap manifest and
  file-size check; `verify=True` also checks every sha256).

  Args:
    task: the task whose `generate` makes the examples.
    split: one of `task.splits`.
    num: number of examples (>= 1).
    seed: non-negative base seed; shard i uses `shard_seed(seed, split, i)`.
    data_dir: root directory; the dataset goes to `dataset_dir(...)`.
    shard_size: examples per shard; None means the stored one for an existing
      dataset, else `task.preferred_shard_size(split)`. Part of the dataset's
      identity, as are `task.data_identity(split)`'s fields.
    keep_stored_shard_size: `shard_size` is only for a dataset not stored yet; an
      existing one keeps its own (what configs want: a changed default does not
      invalidate datasets already made).
    progress: show a tqdm progress bar (stderr).
    workers: processes generating shards in parallel (spawned; 1 = in-process).
    verify: check the sha256 of every stored file.
    overwrite: delete this dataset's stored files (only ours) and rebuild.

  Raises:
    ValueError (DatasetError for stored-data problems) with a one-line message.
  """
  if not isinstance(task, base.Task):
    raise ValueError(f"task must be a mdm_jax.data.base.Task, got {type(task).__name__}")
  task.validate_split(split)
  num = _check_int("num", num, 1)
  seed = _check_int("seed", seed, 0)
  workers = _check_int("workers", workers, 1)
  if shard_size is not None:
    shard_size = _check_int("shard_size", shard_size, 1)
  path = dataset_dir(task, split, num, seed, data_dir)
  if keep_stored_shard_size and read_manifest(path):
    shard_size = None

  def identity(manifest):
    size = shard_size
    if size is None:
      size = manifest["shard_size"] if manifest else _check_int(
          "preferred_shard_size", task.preferred_shard_size(split), 1)
    return _identity(task, split, num, seed, size)

  def validated(manifest):
    if manifest is None:
      return None
    problem = _identity_mismatch(manifest, identity(manifest))
    if problem:
      raise DatasetError(f"dataset at {path} does not match the request: {problem}; "
                         "use another data_dir or overwrite=True (CLI: --overwrite)")
    _check_shard_files(path, manifest, verify)
    return manifest

  if not overwrite:  # fast path, no lock: the manifest is replaced atomically
    manifest = validated(read_manifest(path))
    if is_complete(manifest):
      return path

  fileio.makedirs(path)
  with _locked(path, progress):
    if overwrite:
      _remove_ours(path, shards=True)
      manifest = None
    else:
      _remove_ours(path, shards=False)
      manifest = validated(read_manifest(path))
      if is_complete(manifest):
        return path
    if manifest is None:
      manifest = {**identity(None), "shards": {}, "spec": None, "complete": False}
      _write_manifest(path, manifest)
    _generate_missing(task, split, path, manifest, progress, workers)
  return path


def _generate_missing(task: base.Task, split: str, path: str, manifest: dict[str, Any],
                      progress: bool, workers: int) -> None:
  counts = _shard_counts(manifest["num"], manifest["shard_size"])
  todo = [i for i in range(len(counts)) if str(i) not in manifest["shards"]]
  done = sum(counts[i] for i in range(len(counts)) if str(i) in manifest["shards"])
  jobs = [(task, split, path, i, counts[i], shard_seed(manifest["seed"], split, i))
          for i in todo]

  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=manifest["num"], initial=done, unit="ex", unit_scale=True,
             desc=f"{task.name}/{split}", disable=not progress, file=sys.stderr)

  def record(entry: dict[str, Any]) -> None:
    spec = entry.pop("spec")
    if manifest["spec"] is None:
      manifest["spec"] = spec
    elif manifest["spec"] != spec:
      raise ValueError(f"{task.name}.generate returned arrays {spec} for shard "
                       f"{entry['index']} but {manifest['spec']} before; keys, dtypes "
                       "and trailing shapes must not depend on the seed")
    manifest["shards"][str(entry.pop("index"))] = entry
    manifest["complete"] = len(manifest["shards"]) == manifest["num_shards"]
    _write_manifest(path, manifest)
    bar.update(entry["count"])

  try:
    if workers == 1 or len(jobs) <= 1:
      for job in jobs:
        record(_generate_shard(*job))
      return
    try:
      pickle.dumps(task)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"task {task.name!r} cannot be sent to worker processes ({e}); "
                       "use workers=1") from None
    # Spawned (not forked) workers: safe in processes that run JAX threads.
    ctx = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx)
    try:
      futures = [pool.submit(_generate_shard, *job) for job in jobs]
      for future in concurrent.futures.as_completed(futures):
        record(future.result())
    except BaseException:
      pool.shutdown(wait=False, cancel_futures=True)
      raise
    pool.shutdown(wait=True)
  finally:
    bar.close()


# ----------------------------------------------------------------------------
# Reading.


def _open_complete(path: str) -> dict[str, Any]:
  manifest = read_manifest(path)
  if manifest is None:
    raise DatasetError(f"no dataset at {path} (no {MANIFEST}); make it with "
                       "ensure_dataset or `python -m mdm_jax.data`")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise DatasetError(f"dataset at {path} has format version "
                       f"{manifest.get('format_version')}, this code reads {FORMAT_VERSION}")
  if not is_complete(manifest):
    raise DatasetError(f"dataset at {path} is incomplete ({len(manifest['shards'])} of "
                       f"{manifest['num_shards']} shards); rerun ensure_dataset to finish it")
  return manifest


class ExamplesSource:
  """Lazy random access to a stored dataset (memory-mapped, picklable).

  `source[i]` is example i as a dict of arrays without the leading dimension;
  `source.get_batch(indices)` gathers several at once. Usable as a grain
  RandomAccessDataSource.
  """

  def __init__(self, path: str, *, verify: bool = False):
    self.path = os.fspath(path)
    self.manifest = _open_complete(self.path)
    _check_shard_files(self.path, self.manifest, verify)
    n = self.manifest["num_shards"]
    self._counts = np.array([self.manifest["shards"][str(i)]["count"] for i in range(n)])
    self._starts = np.concatenate([[0], np.cumsum(self._counts)])
    self.keys = tuple(sorted(self.manifest["spec"]))
    self._arrays: list[dict[str, np.ndarray]] | None = None

  def _load(self, name: str) -> np.ndarray:
    file = os.path.join(self.path, name)
    if fileio.is_remote(file):  # no memory map over Cloud Storage: read it whole
      return np.load(io.BytesIO(fileio.read_bytes(file)), allow_pickle=False)
    return np.load(file, mmap_mode="r", allow_pickle=False)

  def _shards(self) -> list[dict[str, np.ndarray]]:
    if self._arrays is None:
      self._arrays = [
          {k: self._load(f["name"])
           for k, f in self.manifest["shards"][str(i)]["files"].items()}
          for i in range(len(self._counts))]
    return self._arrays

  def __getstate__(self):
    return {**self.__dict__, "_arrays": None}

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} out of range [0, {len(self)})")
    shard = int(np.searchsorted(self._starts, index, side="right")) - 1
    arrays = self._shards()[shard]
    return {k: np.array(arrays[k][index - self._starts[shard]]) for k in self.keys}

  def get_batch(self, indices: Sequence[int] | np.ndarray) -> base.Examples:
    """Examples at `indices` (any order) as a dict of stacked arrays."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"indices out of range [0, {len(self)})")
    shard_of = np.searchsorted(self._starts, indices, side="right") - 1
    out = {}
    for k in self.keys:
      spec = self.manifest["spec"][k]
      out[k] = np.empty((indices.size, *spec["shape"]), dtype=np.dtype(spec["dtype"]))
    for shard in np.unique(shard_of):
      sel = np.nonzero(shard_of == shard)[0]
      local = indices[sel] - self._starts[shard]
      for k in self.keys:
        out[k][sel] = self._shards()[shard][k][local]
    return out

  def __repr__(self) -> str:
    # Location-free, so an iterator state restores after moving the data.
    m = self.manifest
    return (f"ExamplesSource(task={m['task']}-{params_hash(m['params'])}, "
            f"split={m['split']}, seed={m['seed']}, num={m['num']}, "
            f"shard_size={m['shard_size']})")


def load_examples(path: str, *, verify: bool = False) -> base.Examples:
  """All examples of a complete dataset as a dict of numpy arrays.

  A single-shard dataset comes back memory-mapped (read-only, no copy); several
  shards are concatenated in memory. For large training sets use
  `ExamplesSource` (lazy) or `make_loader`.
  """
  source = ExamplesSource(path, verify=verify)
  shards = source._shards()  # pylint: disable=protected-access
  if len(shards) == 1:
    return dict(shards[0])
  return {k: np.concatenate([s[k] for s in shards]) for k in source.keys}


# ----------------------------------------------------------------------------
# grain loaders: mdm_jax/data/loaders.py (these names stay importable from here).

_LOADER_NAMES = ("make_loader", "process_slice", "get_loader_state", "set_loader_state")


def __getattr__(name: str) -> Any:
  if name in _LOADER_NAMES:
    from mdm_jax.data import loaders  # pylint: disable=g-import-not-at-top
    return getattr(loaders, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
