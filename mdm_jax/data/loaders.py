"""grain loaders over stored datasets: encoded, augmented batches with a saveable position.

`make_loader` builds a grain pipeline over a dataset that `mdm_jax.data.store`
wrote (read through `store.ExamplesSource`); `get_loader_state` and
`set_loader_state` save and restore an iterator's position as JSON.
(`store.make_loader` etc. still work: store re-exports these names.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from mdm_jax import config_schema
from mdm_jax.data import base
from mdm_jax.data.store import ExamplesSource
from mdm_jax.data.store import _canonical_params
from mdm_jax.data.store import _check_int



class _BatchSource:
  """Random access to the batches of one process: batch k -> stacked examples.

  The process reads examples [start, stop); epoch e visits them in the order
  `np.random.default_rng([seed, e]).permutation` (or in order without shuffle);
  batch k holds stream positions [k * batch_size, (k + 1) * batch_size), so
  batches run across epoch boundaries. Indices are computed vectorised and read
  with one `ExamplesSource.get_batch` call per batch.
  """

  def __init__(self, source: ExamplesSource, start: int, stop: int, batch_size: int,
               num_epochs: int | None, shuffle: bool, seed: int, drop_remainder: bool):
    self.source, self.start, self.stop = source, start, stop
    self.batch_size, self.num_epochs = batch_size, num_epochs
    self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder
    self._orders: dict[int, np.ndarray] = {}

  def __getstate__(self):
    return {**self.__dict__, "_orders": {}}

  def _total(self) -> int | None:
    n = self.stop - self.start
    return None if self.num_epochs is None else n * self.num_epochs

  def __len__(self) -> int:
    total = self._total()
    if total is None:
      return sys.maxsize
    return total // self.batch_size if self.drop_remainder else -(-total // self.batch_size)

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      n = self.stop - self.start
      if len(self._orders) >= 2:  # keep the current and the next epoch
        self._orders.pop(min(self._orders))
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(n)
    return self._orders[epoch]

  def indices(self, k: int) -> np.ndarray:
    """Example indices of batch k."""
    if not 0 <= k < len(self):
      raise IndexError(f"batch {k} out of range [0, {len(self)})")
    n = self.stop - self.start
    pos = k * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
    total = self._total()
    if total is not None:
      pos = pos[pos < total]
    epoch, within = np.divmod(pos, n)
    if self.shuffle:
      for e in np.unique(epoch):
        sel = epoch == e
        within[sel] = self._order(int(e))[within[sel]]
    return within + self.start

  def __getitem__(self, k: int) -> base.Examples:
    return self.source.get_batch(self.indices(int(k)))

  def __repr__(self) -> str:
    return (f"_BatchSource({self.source!r}, slice=[{self.start}, {self.stop}), "
            f"batch_size={self.batch_size}, num_epochs={self.num_epochs}, "
            f"shuffle={self.shuffle}, seed={self.seed})")


@dataclasses.dataclass(frozen=True, eq=False)
class _EncodeBatch:
  """Batch transform: optional augmentation, then the objective's encoding."""
  task: base.Task
  objective: str
  ordering: str | None
  augment: bool
  perm: np.ndarray | None

  def __call__(self, batch: base.Examples,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    if self.augment:
      batch = self.task.augment(batch, rng)
    if self.objective == "mdm":
      enc = self.task.mdm_encode(batch)
      return {"tokens": np.asarray(enc["tokens"], np.int32),
              "maskable": np.asarray(enc["maskable"], bool)}
    if self.objective == "arm":
      enc = self.task.arm_encode(batch, self.ordering, rng)
      return {"tokens": np.asarray(enc["tokens"], np.int32),
              "loss_mask": np.asarray(enc["loss_mask"], bool),
              "prompt_len": np.asarray(enc["prompt_len"], np.int32)}
    tokens = np.asarray(self.task.mdm_encode(batch)["tokens"], np.int32)
    if self.perm is not None:
      tokens = tokens[:, self.perm]
    loss_mask = np.ones(tokens.shape, bool)
    loss_mask[:, 0] = False
    return {"tokens": tokens, "loss_mask": loss_mask}


def _check_matches_task(source: ExamplesSource, task: base.Task) -> None:
  m = source.manifest
  if m["task"] != task.name or m["params"] != _canonical_params(task.data_params()):
    raise ValueError(f"dataset at {source.path} holds {m['task']} {m['params']}, "
                     f"not {task.name} {_canonical_params(task.data_params())}")


def process_slice(num: int, shard_index: int, shard_count: int) -> tuple[int, int]:
  """[start, stop) of the examples that process `shard_index` reads (equal sizes)."""
  per = num // shard_count
  return shard_index * per, (shard_index + 1) * per


def make_loader(task: base.Task, path: str, *, batch_size: int, seed: int,
                objective: str = "mdm", ordering: str | None = None,
                perm: Sequence[int] | np.ndarray | None = None, augment: bool = False,
                shuffle: bool = True, num_epochs: int | None = None,
                shard_index: int = 0, shard_count: int = 1, worker_count: int = 0,
                drop_remainder: bool = True, worker_buffer_size: int = 1,
                prefetch: int = 2):
  """A grain dataset of encoded numpy batches over a stored dataset.

  Batches: 'mdm' -> {'tokens' int32[B, L], 'maskable' bool[B, L]};
  'arm' -> {'tokens', 'loss_mask', 'prompt_len'} via `task.arm_encode(ordering)`;
  'pi' -> {'tokens': mdm tokens[:, perm], 'loss_mask': True except column 0}
  (perm=None leaves the tokens unpermuted).

  Pipeline: a grain MapDataset whose element k is batch k of this process
  (`_BatchSource`: its slice, shuffled anew every epoch, num_epochs None =
  forever, one vectorised read per batch) -> random_map(augment + encode).
  `batch_size` is per process; process `shard_index` of `shard_count` reads its
  own disjoint contiguous slice (`process_slice`; up to shard_count - 1 examples
  are left out). Batches are a pure function of the arguments except
  worker_count and worker_buffer_size: same seed, same batches, with or
  without worker processes. The augmentation / ARM-ordering rng of batch k is
  grain's random_map rng for (seed, shard_index) and k.

  `prefetch` batches are read ahead by one background thread (0: none);
  `worker_count` > 0 moves reading and encoding to grain worker processes.

  Returns a grain IterDataset; `iter(loader)` is a grain DatasetIterator whose
  position `get_loader_state` / `set_loader_state` save and restore as a
  JSON-able dict (orbax's grain checkpoint handler also works on it).
  """
  import grain.python as pygrain  # pylint: disable=g-import-not-at-top

  if not isinstance(task, base.Task):
    raise ValueError(f"task must be a mdm_jax.data.base.Task, got {type(task).__name__}")
  batch_size = _check_int("batch_size", batch_size, 1)
  seed = _check_int("seed", seed, 0)
  if seed >= 2**31:
    raise ValueError(f"seed must be < 2**31, got {seed}")
  if objective not in config_schema.OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; choose one of "
                     f"{', '.join(config_schema.OBJECTIVES)}")
  if objective == "arm":
    if ordering not in task.arm_orderings:
      raise ValueError(f"objective 'arm' needs ordering in {task.arm_orderings} for task "
                       f"{task.name!r}, got {ordering!r}")
  elif ordering is not None:
    raise ValueError(f"ordering is only used with objective 'arm', got {ordering!r}")
  if perm is not None:
    if objective != "pi":
      raise ValueError("perm is only used with objective 'pi'")
    seq_len = task.mdm_layout().seq_len
    perm = np.asarray(perm)
    if perm.shape != (seq_len,) or not np.array_equal(np.sort(perm), np.arange(seq_len)):
      raise ValueError(f"perm must be a permutation of range({seq_len})")
    perm = perm.astype(np.int64)
  if num_epochs is not None:
    num_epochs = _check_int("num_epochs", num_epochs, 1)
  shard_count = _check_int("shard_count", shard_count, 1)
  shard_index = _check_int("shard_index", shard_index, 0)
  if shard_index >= shard_count:
    raise ValueError(f"shard_index must be < shard_count={shard_count}, got {shard_index}")
  worker_count = _check_int("worker_count", worker_count, 0)
  worker_buffer_size = _check_int("worker_buffer_size", worker_buffer_size, 1)
  prefetch = _check_int("prefetch", prefetch, 0)

  source = ExamplesSource(path)
  _check_matches_task(source, task)
  start, stop = process_slice(len(source), shard_index, shard_count)
  if stop == start:
    raise ValueError(f"{len(source)} examples cannot be split over {shard_count} processes")
  if drop_remainder and num_epochs is not None and (stop - start) * num_epochs < batch_size:
    raise ValueError(f"batch_size={batch_size} exceeds the {(stop - start) * num_epochs} "
                     "examples this process reads; no batch would come out")

  batches = _BatchSource(source, start, stop, batch_size, num_epochs, shuffle, seed,
                         drop_remainder)
  encode = _EncodeBatch(task, objective, ordering, augment, perm)
  rng_seed = int.from_bytes(hashlib.sha256(f"{seed}/{shard_index}".encode()).digest()[:4],
                            "little")
  ds = pygrain.MapDataset.source(batches).random_map(encode, seed=rng_seed)
  # One background thread reads `prefetch` batches ahead (in order).
  it_ds = ds.to_iter_dataset(pygrain.ReadOptions(num_threads=min(prefetch, 1),
                                                 prefetch_buffer_size=prefetch))
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags (defaults here)
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(pygrain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return it_ds


def get_loader_state(iterator) -> dict[str, Any]:
  """The JSON-able position of a `make_loader` iterator."""
  state = iterator.get_state()
  if isinstance(state, bytes):  # a grain DataLoaderIterator
    state = json.loads(state.decode())
  return json.loads(json.dumps(state))


def set_loader_state(iterator, state: Mapping[str, Any]) -> None:
  """Restores a position saved by `get_loader_state` (same loader arguments)."""
  if type(iterator).__name__ == "DataLoaderIterator":
    iterator.set_state(json.dumps(dict(state)).encode())
  else:
    iterator.set_state(dict(state))
