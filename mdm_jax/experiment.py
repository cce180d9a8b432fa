"""From a config to the objects of an experiment (as nanodo's model factory).

Training, evaluation, plots and the solve command build here what a config
describes: the task, its token layout, the network, the datasets and loaders,
the sampler options, and a trained model restored from a checkpoint or a params
export (`restore`). Light to import: no optax, orbax or grain; an orbax
checkpoint imports `checkpoint.py` only when one is restored.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from mdm_jax import config_schema
from mdm_jax import export
from mdm_jax import fileio
from mdm_jax import sampling
from mdm_jax.data import base
from mdm_jax.data import store
from mdm_jax.models import transformer

OBJECTIVES = config_schema.OBJECTIVES
ApplyFn = Callable[[Any, jax.Array], jax.Array]  # (params, tokens_BxL) -> logits_BxLxV


def config_get(config: Any, path: str, default: Any) -> Any:
  """config['a']['b'] for path 'a.b'; `default` when a part is missing or None."""
  node: Any = config
  for part in path.split("."):
    if node is None:
      return default
    try:
      node = node[part]
    except (KeyError, AttributeError, TypeError):
      return default
  return default if node is None else node


def build_task(config: ml_collections.ConfigDict) -> base.Task:
  """The task of config.task (checking config.data.ordering for ARMs)."""
  task = base.get_task(config.task.name, **dict(config.task.params))
  if config.objective == "arm" and config.data.ordering not in task.arm_orderings:
    raise ValueError(f"config.data.ordering={config.data.ordering!r}; task {task.name!r} "
                     f"offers {', '.join(task.arm_orderings) or 'no ARM orderings'}")
  return task


def layout(config: ml_collections.ConfigDict, task: base.Task) -> base.Layout:
  """The token layout the model reads: the ARM ordering's, else the MDM layout."""
  if config.objective == "arm":
    return task.arm_layout(config.data.ordering)
  return task.mdm_layout()


def _groups(groups: np.ndarray) -> tuple[tuple[int, ...], ...]:
  return tuple(tuple(int(i) for i in row) for row in np.asarray(groups))


def build_model(config: ml_collections.ConfigDict, task: base.Task
                ) -> tuple[transformer.Transformer, transformer.TransformerConfig]:
  """The network for `config` on `task` (what training and evaluation both build)."""
  lay = layout(config, task)
  overrides = {k: v for k, v in dict(config.model.overrides).items() if v is not None}
  overrides["dtype"] = config.model.dtype
  causal = config.objective in ("arm", "pi")
  if config.model.structure_embed:
    if config.objective not in ("mdm", "arm"):
      raise ValueError(f"config.model.structure_embed is for objectives 'mdm' and 'arm', "
                       f"not {config.objective!r}")
    groups = {"token_groups": task.token_groups(config.objective)}
    if config.objective == "mdm":
      groups["position_groups"] = task.position_groups()
    if all(g is None for g in groups.values()):
      raise ValueError(f"config.model.structure_embed: task {task.name!r} {task.params()} "
                       f"has no structure groups for objective {config.objective!r}; "
                       f"set it to False")
    overrides.update({k: _groups(g) for k, g in groups.items() if g is not None})
  model_config = transformer.preset(config.model.preset, vocab_size=lay.vocab_size,
                                    seq_len=lay.seq_len, causal=causal, **overrides)
  return transformer.Transformer(model_config), model_config


def inference_fn(model: transformer.Transformer) -> ApplyFn:
  """apply_fn(params, tokens_BxL) -> logits_BxLxV, deterministic (train=False)."""
  def apply_fn(params: Any, tokens_BxL: jax.Array) -> jax.Array:
    return model.apply({"params": params}, tokens_BxL, train=False)
  return apply_fn


def sampler_options(config: Any, **overrides: Any) -> dict[str, Any]:
  """`sampling.sample` keyword arguments from config.sampler (missing fields, e.g.
  in an older run's config: the defaults); `overrides` that are not None win."""
  return sampling.config_options(config_get(config, "sampler", None), **overrides)


# ----------------------------------------------------------------------------------
# Datasets and loaders.


def loader_objective(config: ml_collections.ConfigDict) -> str:
  return "arm" if config.objective == "arm" else "mdm"  # 'pi' permutes in the step


def dataset(config: ml_collections.ConfigDict, task: base.Task, name: str, *,
            progress: bool = True) -> str:
  """The stored dataset `name` ('train', 'val' or an evaluation split) of config.data.

  'val' is the held-out validation set: the 'test' split under seed + 1 (neither
  the training set nor the evaluation's test set). A stored dataset keeps its own
  shard size (config.data.shard_size 0: the task's preferred one).
  """
  c = config
  seed = int(c.data.seed)
  sizes = {"train": ("train", int(c.data.num_train), seed),
           "val": ("test", int(c.data.num_val), seed + 1)}
  if name in sizes:
    split, num, split_seed = sizes[name]
  else:
    task.validate_split(name)
    field = {"hard": "num_hard"}.get(name, "num_test")
    split, num, split_seed = name, int(c.data[field]), seed
  return store.ensure_dataset(
      task, split, num, split_seed, fileio.expand(c.data.dir),
      shard_size=int(c.data.shard_size) or None, keep_stored_shard_size=True,
      progress=progress, workers=store.default_workers(c.data.gen_workers))


def make_loader(config: ml_collections.ConfigDict, task: base.Task, path: str, *,
                batch_size: int, seed: int, train: bool):
  """This process's grain loader over `path`: train=True shuffles, augments
  (config.data.augment) and never ends; else one pass in order (validation)."""
  c = config
  common = dict(batch_size=batch_size, seed=seed, objective=loader_objective(c),
                ordering=c.data.ordering or None, shard_index=jax.process_index(),
                shard_count=jax.process_count())
  if train:
    return store.make_loader(task, path, augment=bool(c.data.augment), shuffle=True,
                             num_epochs=None, worker_count=int(c.data.worker_count),
                             **common)
  return store.make_loader(task, path, augment=False, shuffle=False, num_epochs=1,
                           **common)


# ----------------------------------------------------------------------------------
# Trained models.


@dataclasses.dataclass
class Restored:
  """A trained model: its parameters, the run's saved config, task and network."""
  params: Any
  config: ml_collections.ConfigDict
  task: base.Task
  model: transformer.Transformer

  @property
  def apply_fn(self) -> ApplyFn:
    return inference_fn(self.model)

  @property
  def num_params(self) -> int:
    return transformer.count_params(self.params)


def load_params(path: str, *, step: int | None = None, ema: bool = True
                ) -> tuple[Any, ml_collections.ConfigDict]:
  """(EMA or raw params replicated on the local devices, saved config as written) of a params
  export (no orbax needed) or an orbax checkpoint (`checkpoint.load_for_inference`)."""
  if export.is_export(path):
    trees, config, _ = export.load_export_trees(path, step, ("ema_params" if ema
                                                             else "params",))
    return next(iter(trees.values())), config
  from mdm_jax import checkpoint  # pylint: disable=g-import-not-at-top  (orbax, grain)
  return checkpoint.load_for_inference(path, step=step, ema=ema)


def saved_step(path: str) -> int | None:
  """The step `restore(path)` takes by default (the latest), if visible."""
  path = fileio.normalize(path)
  try:
    if export.is_export(path):
      return export.export_step(path)
    from mdm_jax import checkpoint  # pylint: disable=g-import-not-at-top
    return checkpoint.saved_step(path)
  except (ValueError, OSError):
    return None


def restore(path: str, *, step: int | None = None, ema: bool | None = None) -> Restored:
  """Restores a trained model for inference from a workdir, checkpoint or export.

  ema=None takes the parameters the run's config.eval.params names ('ema' unless
  it says 'raw'). Raises ValueError (one line) when the checkpoint is missing or
  unreadable.
  """
  path = fileio.normalize(path)
  if not fileio.exists(path):
    raise ValueError(f"checkpoint path {path} does not exist")
  try:
    params, saved = load_params(path, step=step, ema=ema is not False)
    if ema is None and config_get(saved, "eval.params", "ema") == "raw":
      params, saved = load_params(path, step=step, ema=False)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    msg = " ".join(str(e).split())[:300]
    raise ValueError(f"cannot read the checkpoint in {path}: {type(e).__name__}: {msg}"
                     ) from None
  saved = config_schema.merge_saved(saved)  # fields newer than the run: defaults
  task = build_task(saved)
  model, _ = build_model(saved, task)
  return Restored(params=params, config=saved, task=task, model=model)
