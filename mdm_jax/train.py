"""Training: model and optimizer set-up, the jitted train step, the training loop.

One `jax.jit` train step with explicit in/out shardings (FSDP + data parallel, see
`sharding.py`) and a donated state. The state is a dict pytree:
  step        int32[]      number of optimizer steps taken
  params      model parameters (float32)
  opt_state   optax AdamW state (+ clipping)
  ema_params  exponential moving average of params (used for eval and sampling)
  rng         uint32[2]    base key; step s uses fold_in(rng, s)
  bad_step    int32[]      -1, or the first step whose loss/gradients were not finite;
                           once set, the step is a no-op (the state stays the last
                           good one) and the loop stops without saving
Objectives: 'mdm' (negative ELBO), 'arm' (next-token loss on the answer part),
'pi' (pi-learner: a causal model on a fixed permutation of the MDM layout).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mdm_jax import checkpoint as ckpt_lib
from mdm_jax import config_schema
from mdm_jax import evaluate
from mdm_jax import experiment
from mdm_jax import fileio
from mdm_jax import losses
from mdm_jax import masking
from mdm_jax import metrics as metrics_lib
from mdm_jax import sampling
from mdm_jax import schedules
from mdm_jax import sharding
from mdm_jax.data import base as data_base
from mdm_jax.data import store
from mdm_jax.models import transformer

# Metrics printed on the log line (all of them go to metrics.jsonl / TensorBoard).
_SHOWN = ("train/loss", "train/grad_norm", "train/lr", "val/loss", "val/solve_rate")
State = dict[str, Any]
Batch = dict[str, Any]


class NonFiniteError(FloatingPointError):
  """Training produced a NaN/Inf loss or gradient (the message says what to do)."""


# ----------------------------------------------------------------------------
# Config validation and set-up.


def lr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to lr, then cosine decay to lr * end_lr_factor."""
  t = config.train
  warmup = min(int(t.warmup_steps), max(int(t.steps) - 1, 0))  # short runs
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(t.lr), warmup_steps=warmup,
      decay_steps=max(int(t.steps), warmup + 1), end_value=float(t.lr) * float(t.end_lr_factor))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW (decay on matrices only: not on biases / norm scales) + global-norm clip."""
  t = config.train
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
  adamw = optax.adamw(lr_schedule(config), b1=float(t.b1), b2=float(t.b2), eps=1e-8,
                      weight_decay=float(t.weight_decay), mask=decay_mask)
  if t.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(float(t.grad_clip)), adamw)
  return adamw


# ----------------------------------------------------------------------------
# Loss functions.

LossFn = Callable[[Any, Batch, jax.Array, bool], tuple[jax.Array, dict[str, jax.Array]]]


def make_loss_fn(config: ml_collections.ConfigDict, model: transformer.Transformer,
                 task: data_base.Task) -> LossFn:
  """-> loss_fn(params, batch, key, train) -> (loss, metrics) for the objective."""
  objective = config.objective

  def apply(params, tokens_BxL, key, train):
    rngs = {"dropout": key} if train else None
    return model.apply({"params": params}, tokens_BxL, train=train, rngs=rngs)

  if objective == "mdm":
    schedule = schedules.get_schedule(config.diffusion.schedule)
    mask_id = int(task.mdm_layout().mask_id)
    discrete = config.diffusion.loss == "discrete"
    num_steps = int(config.diffusion.discrete_steps)
    antithetic = bool(config.diffusion.antithetic)
    weighting = str(config.diffusion.get("weighting", "elbo"))

    def mdm(params, batch, key, train):
      x0_BxL, maskable_BxL = batch["tokens"], batch["maskable"]
      t_key, m_key, d_key = jax.random.split(key, 3)
      b = x0_BxL.shape[0]
      if discrete:
        t_B = masking.sample_discrete_times(t_key, b, num_steps, antithetic=antithetic)
      else:
        t_B = masking.sample_times(t_key, b, antithetic=antithetic)
      xt_BxL, masked_BxL = masking.mask_tokens(m_key, x0_BxL, maskable_BxL,
                                               schedule.alpha(t_B), mask_id)
      logits_BxLxV = apply(params, xt_BxL, d_key, train)
      if discrete:
        return losses.mdm_discrete_loss(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL,
                                        t_B, schedule, num_steps, mask_id=mask_id,
                                        weighting=weighting)
      return losses.mdm_loss(logits_BxLxV, x0_BxL, masked_BxL, maskable_BxL, t_B,
                             schedule, mask_id=mask_id, weighting=weighting)
    return mdm

  if objective == "arm":
    def arm(params, batch, key, train):
      logits_BxLxV = apply(params, batch["tokens"], key, train)
      return losses.ar_loss(logits_BxLxV, batch["tokens"], batch["loss_mask"])
    return arm

  perm_L = jnp.asarray(pi_perm(config, task))
  start_id = int(task.mdm_layout().mask_id)  # never in the data: the start token

  def pi(params, batch, key, train):
    # The batch is in the MDM layout; the causal model reads it in pi's order after
    # a start token, and the loss counts the maskable (answer) positions.
    tokens_BxL = batch["tokens"]
    inputs_BxL = losses.pi_learner_inputs(tokens_BxL, perm_L, start_id)
    logits_BxLxV = apply(params, inputs_BxL, key, train)
    return losses.pi_learner_loss(logits_BxLxV, tokens_BxL, batch["maskable"], perm_L)
  return pi


def pi_perm(config: ml_collections.ConfigDict, task: data_base.Task) -> np.ndarray:
  return losses.pi_permutation(config.data.pi_order, task.mdm_layout().seq_len,
                               int(config.data.seed))


# ----------------------------------------------------------------------------
# State, train step, eval step.


def init_state(config: ml_collections.ConfigDict, model: transformer.Transformer,
               tx: optax.GradientTransformation, seq_len: int, key: jax.Array) -> State:
  init_key, rng = jax.random.split(key)
  params = model.init(init_key, jnp.zeros((1, seq_len), jnp.int32), train=False)["params"]
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": tx.init(params), "ema_params": params, "rng": rng,
          "bad_step": jnp.full((), -1, jnp.int32)}


def _split_micro(batch: Batch, num_micro: int) -> Batch:
  """[B, ...] -> [A, B/A, ...] such that micro-batch a holds rows a::A.

  Reshaping to [B/A, A] keeps each device's rows on that device when the batch
  dim is sharded in contiguous blocks; the transpose is then local.
  """
  def one(x):
    b = x.shape[0]
    x = x.reshape(b // num_micro, num_micro, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(one, batch)


def make_train_step(config: ml_collections.ConfigDict, loss_fn: LossFn,
                    tx: optax.GradientTransformation) -> Callable[[State, Batch], tuple[State, dict]]:
  """The (unjitted) step: accumulate gradients, AdamW update, EMA, NaN guard."""
  num_micro = int(config.train.grad_accum)
  ema_decay = float(config.train.ema_decay)
  schedule = lr_schedule(config)

  def grads_of(params, batch, key):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
      (loss, metrics), grads = grad_fn(params, batch, key, True)
      return loss, metrics, grads

    def body(acc, xs):
      i, micro = xs
      (loss, metrics), grads = grad_fn(params, micro, jax.random.fold_in(key, i), True)
      acc = jax.tree.map(jnp.add, acc, (loss, metrics, grads))
      return acc, None

    micro_batches = _split_micro(batch, num_micro)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    shapes = jax.eval_shape(lambda: grad_fn(params, first, key, True))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         (shapes[0][0], shapes[0][1], shapes[1]))
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(num_micro), micro_batches))
    return jax.tree.map(lambda x: x / num_micro, total)

  def step_fn(state: State, batch: Batch) -> tuple[State, dict]:
    step = state["step"]
    key = jax.random.fold_in(state["rng"], step)
    loss, metrics, grads = grads_of(state["params"], batch, key)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    # EMA with a warm-up (decay <= (1 + step) / (10 + step)) so short runs work.
    stepf = step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + stepf) / (10.0 + stepf))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                       state["ema_params"], params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    ok = finite & (state["bad_step"] < 0)
    new = {"step": step + 1, "params": params, "opt_state": opt_state,
           "ema_params": ema, "rng": state["rng"],
           "bad_step": state["bad_step"]}
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    new["bad_step"] = jnp.where((state["bad_step"] < 0) & ~finite, step,
                                state["bad_step"])
    out = {f"train/{k}": v for k, v in metrics.items()}
    out.update({"train/loss": loss, "train/grad_norm": grad_norm,
                "train/lr": schedule(step)})
    return new, out

  return step_fn


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Batch, jax.Array], dict]:
  def eval_fn(params, batch, key):
    _, metrics = loss_fn(params, batch, key, False)
    return metrics
  return eval_fn


# ----------------------------------------------------------------------------
# The training loop.


@dataclasses.dataclass
class Run:
  """Everything a training run needs, built once by `setup`."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  task: data_base.Task
  model: transformer.Transformer
  model_config: transformer.TransformerConfig
  tx: optax.GradientTransformation
  loss_fn: LossFn
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs carrying the target shardings
  local_batch: int  # per-process batch

  def init_state(self) -> State:
    init = jax.jit(functools.partial(init_state, self.config, self.model, self.tx,
                                     self.model_config.seq_len),
                   out_shardings=self.state_shardings)
    return init(jax.random.PRNGKey(int(self.config.seed)))

  def jit_train_step(self) -> Callable[[State, Batch], tuple[State, dict]]:
    """The one jitted step: sharded in/out, the state donated."""
    step_fn = make_train_step(self.config, self.loss_fn, self.tx)
    return jax.jit(step_fn,
                   in_shardings=(self.state_shardings, sharding.batch_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                   donate_argnums=(0,))

  def jit_eval_step(self) -> Callable[[Any, Batch, jax.Array], dict]:
    return jax.jit(make_eval_step(self.loss_fn),
                   in_shardings=(self.state_shardings["params"],
                                 sharding.batch_sharding(self.mesh),
                                 sharding.replicated(self.mesh)),
                   out_shardings=sharding.replicated(self.mesh))


def _prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
  workdir = fileio.normalize(workdir)
  try:
    fileio.makedirs(workdir)
    probe = fileio.join(workdir, f".write-test-{jax.process_index()}")
    fileio.atomic_write(probe, "ok")
    fileio.remove(probe)
  except OSError as e:
    raise ValueError(f"workdir {workdir} is not writable: {e.strerror or e}") from None
  if jax.process_index() == 0:
    fileio.atomic_write_json(fileio.join(workdir, "config.json"),
                             ckpt_lib.config_to_json(config), indent=1, sort_keys=True)
  return workdir


def setup(config: ml_collections.ConfigDict, *, mesh: jax.sharding.Mesh | None = None) -> Run:
  """Validates the config and builds mesh, task, model, optimizer, shardings.

  `mesh` defaults to the one config.mesh describes over all devices.
  """
  config_schema.validate(config)
  if int(config.train.warmup_steps) >= int(config.train.steps):
    logging.warning("config.train.warmup_steps=%d >= steps=%d; warming up over %d steps",
                    config.train.warmup_steps, config.train.steps,
                    max(int(config.train.steps) - 1, 0))
  mesh = sharding.mesh_from_config(config) if mesh is None else mesh
  local_batch = sharding.check_batch_size(int(config.train.batch_size), mesh,
                                          what="config.train.batch_size")
  micro = int(config.train.batch_size) // int(config.train.grad_accum)
  if micro % sharding.num_batch_shards(mesh):
    raise ValueError(f"micro-batch {micro} (batch_size / grad_accum) must be divisible "
                     f"by the {sharding.num_batch_shards(mesh)} devices the batch is "
                     "split over")
  task = experiment.build_task(config)
  model, model_config = experiment.build_model(config, task)
  tx = make_optimizer(config)
  loss_fn = make_loss_fn(config, model, task)
  key = jax.random.PRNGKey(int(config.seed))
  abstract = jax.eval_shape(
      functools.partial(init_state, config, model, tx, model_config.seq_len), key)
  shardings = sharding.tree_shardings(abstract, mesh, int(config.mesh.min_shard_size))
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          abstract, shardings)
  return Run(config=config, mesh=mesh, task=task, model=model,
             model_config=model_config, tx=tx, loss_fn=loss_fn,
             state_shardings=shardings, abstract_state=abstract,
             local_batch=local_batch)


def _datasets(run: Run) -> tuple[str, str]:
  progress = jax.process_index() == 0
  return (experiment.dataset(run.config, run.task, "train", progress=progress),
          experiment.dataset(run.config, run.task, "val", progress=progress))


def _train_loader(run: Run, path: str, seed: int):
  return experiment.make_loader(run.config, run.task, path, batch_size=run.local_batch,
                                seed=seed, train=True)


def _val_batches(run: Run, path: str) -> list[dict[str, np.ndarray]]:
  """The fixed validation-loss batches (this process's slices), as numpy."""
  c = run.config
  n = int(c.train.val_batches)
  if n == 0:
    return []
  per_process = run.local_batch
  num_val = int(c.data.num_val)
  n = min(n, num_val // int(c.train.batch_size))
  if n == 0:
    logging.warning("config.data.num_val=%d < batch_size=%d: no validation loss",
                    num_val, c.train.batch_size)
    return []
  loader = experiment.make_loader(c, run.task, path, batch_size=per_process, seed=0,
                                  train=False)
  out = []
  for batch in loader:
    out.append({k: np.asarray(v) for k, v in batch.items()})
    if len(out) == n:
      break
  return out


class _SolveRate:
  """Solve rate of a few validation puzzles under the configured sampler."""

  def __init__(self, run: Run, path: str):
    c = run.config
    self.run = run
    shards = sharding.num_batch_shards(run.mesh)
    n = min(int(c.train.val_puzzles), int(c.data.num_val))
    n = (n // shards) * shards
    self.enabled = n > 0 and c.objective in ("mdm", "arm")
    if not self.enabled:
      return
    examples = store.load_examples(path)
    self.examples = {k: np.asarray(v[:n]) for k, v in examples.items()}
    lo = n // jax.process_count() * jax.process_index()
    hi = lo + n // jax.process_count()
    arm = c.objective == "arm"
    # The generate step of evaluation (evaluate.Generator), on the training mesh.
    self.gen = evaluate.Generator(
        run.task, evaluate.ARM_STRATEGY if arm else c.train.val_strategy,
        apply_fn=experiment.inference_fn(run.model),
        options=None if arm else sampling.config_options(c.sampler),
        arm_ordering=c.data.ordering if arm else None, arm_model=run.model if arm else None,
        arm_legal=bool(c.eval.get("arm_legal", True)))
    inputs = self.gen.inputs(self.examples, jax.random.PRNGKey(int(c.data.seed)))
    self.inputs = {k: v[lo:hi] for k, v in inputs.items()}

  def answers(self, params: Any, key: jax.Array) -> np.ndarray:
    """int32[n, L]: the generated answers (MDM layout) of the validation puzzles."""
    out = self.gen(params, sharding.global_batch(self.inputs, self.run.mesh), key)
    return self.gen.answers(self.examples, sharding.to_host(out[:1]))

  def __call__(self, params: Any, key: jax.Array) -> float:
    solved = self.run.task.check(self.examples, self.answers(params, key))["solved"]
    return float(np.mean(solved))


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  host = jax.device_get(history)
  keys = host[0].keys()
  return {k: float(np.mean([h[k] for h in host])) for k in keys}


def _restore(run: Run, ckpt: ckpt_lib.Checkpointer, iterator: Any
             ) -> tuple[State | None, int, bool]:
  step = ckpt.latest_step()
  if step is None:
    return None, 0, False
  try:
    saved = ckpt_lib.config_to_json(ckpt.restore_config(step))
    now = ckpt_lib.config_to_json(run.config)
    for field in ("objective", "task", "model"):
      if saved.get(field) != now.get(field):
        logging.warning("config.%s differs from the checkpoint's: %s vs %s", field,
                        now.get(field), saved.get(field))
    state, data_ok = ckpt.restore(step, {k: v for k, v in run.abstract_state.items()
                                         if k != "bad_step"}, iterator=iterator)
  except (ValueError, KeyError, TypeError) as e:
    msg = " ".join(str(e).split())[:300]
    raise ValueError(f"cannot resume from the checkpoint at step {step} in "
                     f"{ckpt.directory} (was it written by another config?): {msg}") from None
  state["bad_step"] = jax.device_put(jnp.full((), -1, jnp.int32),
                                     run.state_shardings["bad_step"])
  return state, step, data_ok


def _deadline(max_seconds: float) -> float | None:
  """The monotonic time at which training stops (None: no limit)."""
  return time.monotonic() + max_seconds if max_seconds > 0 else None


def _agreed(flag: bool) -> bool:
  """True on every process if it is True on process 0 (clocks differ per host)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _init_from(run: Run, state: State, path: str) -> tuple[State, int]:
  """Starts from exported parameters (`checkpoint.export_params`) instead of init.

  Takes params, EMA params and the step (so the learning-rate schedule goes on);
  the optimizer moments start at zero.
  """
  try:
    params, ema, step = ckpt_lib.load_init(path)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"config.train.init_from={path!r}: {' '.join(str(e).split())[:300]}"
                     ) from None
  want = jax.tree.structure(state["params"])
  for name, tree in (("params", params), ("ema_params", ema)):
    if jax.tree.structure(tree) != want or any(
        np.shape(a) != b.shape for a, b in zip(jax.tree.leaves(tree),
                                              jax.tree.leaves(state["params"]))):
      raise ValueError(f"config.train.init_from={path!r}: its {name} do not match the "
                       f"model of this config ({run.config.model.preset})")
  shardings = run.state_shardings
  state = dict(state)
  state["params"] = jax.device_put(
      jax.tree.map(lambda a, b: np.asarray(a, b.dtype), params, state["params"]),
      shardings["params"])
  state["ema_params"] = jax.device_put(
      jax.tree.map(lambda a, b: np.asarray(a, b.dtype), ema, state["params"]),
      shardings["ema_params"])
  state["step"] = jax.device_put(jnp.asarray(step, jnp.int32), shardings["step"])
  metrics_lib.log_line("initialised from %s (step %d; optimizer moments reset)", path, step)
  return state, int(step)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming from its latest checkpoint).

  Writes checkpoints, metrics.jsonl and TensorBoard events; on SIGTERM saves and
  returns early ('preempted': True). The evaluation after training
  (config.eval.after_train) is `main.train_and_evaluate`'s.

  Returns a summary dict: step, preempted, timed_out, train/loss, val/loss,
  val/solve_rate.

  Raises:
    ValueError: bad config / workdir (one-line message).
    NonFiniteError: a NaN/Inf loss or gradient (the last good checkpoint stays).
  """
  c = config
  run = setup(c)
  workdir = _prepare_workdir(workdir, c)
  train_path, val_path = _datasets(run)

  ckpt = ckpt_lib.Checkpointer(workdir, keep=int(c.train.keep),
                               keep_best=int(c.train.keep_best),
                               async_save=bool(c.train.async_checkpoints))
  loader = _train_loader(run, train_path, int(c.data.seed))
  train_iter = iter(loader)
  state, start_step, data_ok = _restore(run, ckpt, train_iter)
  if state is None:
    state = run.init_state()
    if c.train.init_from:
      state, start_step = _init_from(run, state, str(c.train.init_from))
      train_iter = iter(_train_loader(run, train_path,
                                      (int(c.data.seed) + start_step) % (2**31 - 1)))
  else:
    metrics_lib.log_line("resumed from step %d (%s)", start_step, ckpt.directory)
    if not data_ok:
      train_iter = iter(_train_loader(run, train_path,
                                      (int(c.data.seed) + start_step) % (2**31 - 1)))

  metrics_lib.log_line(
      "%s %s on %s: %s params, mesh %s, batch %d (%d per process), %d steps",
      c.objective, c.model.preset, c.task.name,
      f"{transformer.count_params(state['params']):,}", dict(run.mesh.shape),
      c.train.batch_size, run.local_batch, int(c.train.steps))

  train_step = run.jit_train_step()
  eval_step = run.jit_eval_step()
  val_batches = _val_batches(run, val_path)
  solve_rate = _SolveRate(run, val_path)
  val_key = jax.random.PRNGKey(int(c.seed) + 1)

  def validate(state: State) -> dict[str, float]:
    out = {}
    for name, params in (("val", state["ema_params"]), ("val_raw", state["params"])):
      hist = [eval_step(params, sharding.global_batch(b, run.mesh),
                        jax.random.fold_in(val_key, i)) for i, b in enumerate(val_batches)]
      if hist:
        out.update({f"{name}/{k}": v for k, v in _mean_metrics(hist).items()})
    if solve_rate.enabled:
      out["val/solve_rate"] = solve_rate(state["ema_params"], val_key)
      if float(c.train.ema_decay) > 0.0:  # EMA lag: the raw params' rate too
        out["val_raw/solve_rate"] = solve_rate(state["params"], val_key)
    return out

  def check_finite(state: State) -> None:
    bad = int(jax.device_get(state["bad_step"]))
    if bad >= 0:
      ckpt.close()
      last = ckpt.latest_step()
      where = (f"the last good checkpoint is step {last} in {ckpt.directory}"
               if last is not None else "no checkpoint was saved")
      raise NonFiniteError(
          f"non-finite loss or gradient at step {bad}; training stopped without saving "
          f"({where}); lower config.train.lr or raise config.train.warmup_steps")

  steps = int(c.train.steps)
  seq_len = run.model_config.seq_len
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step)
  progress = metrics_lib.Progress(steps, start_step, int(c.train.batch_size) * seq_len)
  summary: dict[str, Any] = {"step": start_step, "preempted": False}
  history: list[dict[str, Any]] = []
  preempted = timed_out = False
  step = start_step
  deadline = _deadline(float(c.train.max_seconds))
  try:
    with ckpt_lib.PreemptionWatcher() as watcher:
      while step < steps:
        batch = sharding.global_batch(next(train_iter), run.mesh)
        state, m = train_step(state, batch)
        history.append(m)
        step += 1
        preempted = watcher.reached(step)
        if not preempted and deadline is not None and step < steps:
          timed_out = _agreed(time.monotonic() >= deadline)
        if timed_out:
          metrics_lib.log_line("config.train.max_seconds=%g reached at step %d",
                               float(c.train.max_seconds), step)
        last = step == steps or timed_out
        scalars, shown = {}, {}
        if step % int(c.train.log_every) == 0 or last or preempted:
          check_finite(state)
          scalars = _mean_metrics(history)
          history = []
          rates = progress.update(step, {"loss": scalars["train/loss"]})
          scalars.update({f"perf/{k}": v for k, v in rates.items()})
          summary["train/loss"] = scalars["train/loss"]
          shown = {k: scalars[k] for k in _SHOWN if k in scalars}
        val_loss = None
        if step % int(c.train.eval_every) == 0 or last:
          check_finite(state)
          t0 = time.perf_counter()
          val = validate(state)
          val["perf/val_seconds"] = time.perf_counter() - t0
          scalars.update(val)
          val_loss = val.get("val/loss")
          summary.update({k: v for k, v in val.items() if k.startswith("val/")})
          shown.update({k: val[k] for k in _SHOWN if k in val})
          progress.reset_clock(step)  # validation time is not training time
        if scalars:
          writer.write_scalars(step, scalars, log=False)
          progress.write(f"step {step}/{steps}: {metrics_lib.format_scalars(shown)}"
                         f" | {progress.status(step)}")
        if step % int(c.train.ckpt_every) == 0 or last or preempted:
          check_finite(state)
          writer.flush()  # metrics up to this step are stored before the checkpoint
          ckpt.save(step, state, iterator=train_iter, config=c, val_loss=val_loss)
        if preempted:
          metrics_lib.log_line("stop requested (SIGTERM / preemption): saved step %d; "
                               "rerun the same command to resume", step)
          break
        if timed_out:
          break
  finally:
    progress.close()
    writer.close()
    ckpt.close()
  summary.update(step=step, preempted=preempted, timed_out=timed_out)
  return summary
