"""Device mesh, partition rules and multi-host set-up.

The mesh has two axes, ('data', 'fsdp'). The batch is split over both axes (every
device sees a different slice of the batch); large parameter and optimizer-state
arrays are split over 'fsdp' along their largest divisible dimension (ZeRO-3 /
FSDP style: XLA all-gathers them for the forward pass and reduce-scatters the
gradients). With fsdp=1 everything is replicated and the mesh is plain data
parallelism.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# Arrays with fewer elements than this stay replicated (biases, norms, scalars).
MIN_SHARD_SIZE = 2**12

_CLUSTER_ENV_VARS = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                     "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID")


def cluster_detected() -> bool:
  """Whether this process looks like one task of a multi-host job.

  True when MDM_JAX_DISTRIBUTED=1, or under SLURM with more than one task, or on a
  multi-host TPU pod / Open MPI job (the environments jax.distributed can read).
  """
  flag = os.environ.get("MDM_JAX_DISTRIBUTED", "").strip().lower()
  if flag in ("1", "true", "yes"):
    return True
  if flag in ("0", "false", "no"):
    return False
  if "SLURM_JOB_ID" in os.environ:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Calls jax.distributed.initialize when asked to, or when a cluster is detected.

  Explicit arguments (all three, from the command line) win; otherwise JAX reads
  the cluster environment. Returns True when running multi-process.
  """
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise ValueError("--coordinator_address, --num_processes and --process_id "
                       "must be given together")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif cluster_detected():
    jax.distributed.initialize()
  else:
    return False
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return jax.process_count() > 1


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """Resolves data=-1 ('all remaining devices') and validates the product."""
  if fsdp < 1:
    raise ValueError(f"config.mesh.fsdp must be >= 1, got {fsdp}")
  if data == -1:
    if num_devices % fsdp:
      raise ValueError(f"config.mesh.fsdp={fsdp} does not divide the {num_devices} "
                       "available devices")
    data = num_devices // fsdp
  if data < 1:
    raise ValueError(f"config.mesh.data must be >= 1 or -1, got {data}")
  if data * fsdp != num_devices:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, "
                     f"but {num_devices} are available (set config.mesh.data=-1)")
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices: list[Any] | None = None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: every global device)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(data, fsdp, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices,
                                         allow_split_physical_axes=True)
  except (ValueError, AssertionError, NotImplementedError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, AXES)


def mesh_from_config(config: Any) -> Mesh:
  return make_mesh(int(config.mesh.data), int(config.mesh.fsdp))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int,
              min_size: int = MIN_SHARD_SIZE) -> P:
  """Shards the largest dimension divisible by `fsdp_size` over 'fsdp'.

  Small arrays (fewer than `min_size` elements) and arrays with no divisible
  dimension stay replicated. Ties go to the last such dimension.
  """
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % fsdp_size == 0 and (best is None or d >= shape[best]):
      best = i
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = "fsdp"
  return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = MIN_SHARD_SIZE) -> Any:
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs (FSDP rule)."""
  fsdp_size = mesh.shape["fsdp"]

  def one(x):
    shape = tuple(getattr(x, "shape", ()))
    return NamedSharding(mesh, fsdp_spec(shape, fsdp_size, min_size))

  return jax.tree.map(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim split over every mesh axis, other dims whole (any rank >= 1)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(global_batch: int, mesh: Mesh, *, what: str = "batch size") -> int:
  """Validates `global_batch` for this mesh; returns the per-process batch."""
  shards = num_batch_shards(mesh)
  if global_batch % shards:
    raise ValueError(f"{what} {global_batch} must be divisible by the number of "
                     f"devices the batch is split over ({shards})")
  if global_batch % jax.process_count():
    raise ValueError(f"{what} {global_batch} must be divisible by the number of "
                     f"processes ({jax.process_count()})")
  return global_batch // jax.process_count()


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from each process's local slice.

  Process p holds rows [p*b, (p+1)*b) of the global batch (b = per-process batch).
  """
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh), v)
  return out


def to_host(x: Any) -> Any:
  """Fetches a (possibly multi-host, sharded) pytree into full numpy arrays."""
  if jax.process_count() == 1:
    return jax.device_get(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(jax.device_get(a))

  return jax.tree.map(one, x)
