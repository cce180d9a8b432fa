"""Params exports: small plain files of a run's raw and EMA parameters.

`<dir>/export.json` (step, config, stored dtype, files) and `<dir>/params.npz`
(+ `ema_params.npz` when split to keep files small), in float32 or bfloat16:
what `config.train.init_from`, `checkpoint.load_for_inference` and the packaged
models (mdm_jax/pretrained/) read back. Reading an export needs neither orbax nor
grain; writing one reads an orbax checkpoint (`checkpoint.py`, imported then).
Command line: `python -m mdm_jax.checkpoint export WORKDIR OUT_DIR [--dtype auto
--max-file-mib 15]`.
"""
from __future__ import annotations

import io
from typing import Any

from flax import traverse_util
import jax
import ml_collections
import numpy as np

from mdm_jax import fileio
from mdm_jax.config_schema import config_from_json, config_to_json

EXPORT_ARRAYS = "params.npz"  # raw params (and the EMA params, when they fit)
EXPORT_EMA_ARRAYS = "ema_params.npz"  # the EMA params, when split off
EXPORT_META = "export.json"
EXPORT_DTYPES = ("float32", "bfloat16", "auto")
TREES = ("params", "ema_params")
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

  one = {tree: EXPORT_ARRAYS for tree in TREES}
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

  A small, plain-file copy of a run (no optimizer state) that `checkpoint.load_init`
  (training goes on from it: config.train.init_from) and
  `checkpoint.load_for_inference` read back. Files are written under temporary
  names and renamed, the metadata (`export.json`) last, so a crash leaves either
  the old export or the new one.

  Args:
    workdir: a run directory (or what `checkpoint.load_for_inference` accepts).
    out_dir: where to write; created if missing.
    step: the checkpoint step (default the latest).
    dtype: 'float32' (exact), 'bfloat16' (half the bytes; read back as float32),
      or 'auto': float32 unless a file would exceed `max_file_bytes`.
    max_file_bytes: no file is larger than this: the EMA params go to their own
      file (`ema_params.npz`) when one file would be too big, and a ValueError
      says so when even that does not fit. None: no limit (one file).

  Returns `out_dir`.
  """
  from mdm_jax import checkpoint  # pylint: disable=g-import-not-at-top  (orbax)
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
  trees, config, step = checkpoint.load_trees(workdir, step, TREES)
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


def export_step(path: str) -> int:
  """The step an export holds."""
  return int(fileio.read_json(fileio.join(fileio.expand(path), EXPORT_META))["step"])


def load_export(path: str) -> tuple[Any, Any, int, ml_collections.ConfigDict]:
  """(params, EMA params, step, config) of an export, as numpy trees (float32)."""
  path = fileio.expand(path)
  meta = fileio.read_json(fileio.join(path, EXPORT_META))
  files = meta.get("files") or {tree: EXPORT_ARRAYS for tree in TREES}
  flat: dict[str, np.ndarray] = {}
  for name in sorted(set(files.values())):
    with np.load(io.BytesIO(fileio.read_bytes(fileio.join(path, name)))) as data:
      flat.update({k: data[k] for k in data.files})
  trees = traverse_util.unflatten_dict(_from_stored(flat, meta.get("dtype", "float32")),
                                       sep="/")
  return (trees.get("params", {}), trees.get("ema_params", {}), int(meta["step"]),
          config_from_json(meta["config"]))


def local_replicated() -> jax.sharding.NamedSharding:
  """Replicated over this process's devices (where inference parameters live)."""
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("local",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def load_export_trees(path: str, step: int | None, items: tuple[str, ...] | list[str]
                      ) -> tuple[dict[str, Any], ml_collections.ConfigDict, int]:
  """({item: tree}, config, step) of an export, replicated on the local devices."""
  params, ema_params, export_step_, config = load_export(path)
  if step is not None and step != export_step_:
    raise ValueError(f"{path} holds step {export_step_}, not {step}")
  trees = {"params": params, "ema_params": ema_params}
  replicated = local_replicated()
  return {i: jax.device_put(trees[i], replicated) for i in items}, config, export_step_
