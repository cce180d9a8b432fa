"""The config schema shared by every experiment, with defaults.

Experiment files (`configs/<exp>.py`) start from `base_config()` and set what
differs. A preset argument is `<preset>[,<option>...]`, e.g. 'paper,solver'.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections


OBJECTIVES = ("mdm", "arm", "pi")  # config.objective


def default_data_dir() -> str:
  return os.path.expanduser(os.environ.get("MDM_JAX_DATA", "~/.cache/mdm_jax"))


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def config_from_json(d: dict[str, Any]) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)


def _merged(base: Any, saved: Any) -> Any:
  if isinstance(base, dict) and isinstance(saved, dict):
    return {**base, **{k: _merged(base.get(k), v) for k, v in saved.items()}}
  return saved


def merge_saved(saved: ml_collections.ConfigDict | dict[str, Any]
                ) -> ml_collections.ConfigDict:
  """A saved config (a workdir's config.json, a checkpoint's or an export's) over
  `base_config()`: the fields that an older version did not save take today's
  defaults; every saved field keeps its saved value."""
  if isinstance(saved, ml_collections.ConfigDict):
    saved = config_to_json(saved)
  return config_from_json(_merged(config_to_json(base_config()), dict(saved)))


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ValueError(msg)


def validate(config: ml_collections.ConfigDict) -> None:
  """Python-side checks of the fields training uses; one-line ValueErrors."""
  # pylint: disable=g-import-not-at-top  (configs import this module: keep it light)
  from mdm_jax import losses, sampling, schedules
  t = config.train
  _check(config.objective in OBJECTIVES,
         f"config.objective={config.objective!r}; choose one of {', '.join(OBJECTIVES)}")
  for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_every",
               "ckpt_every", "keep"):
    _check(int(t[name]) >= 1, f"config.train.{name} must be >= 1, got {t[name]}")
  for name in ("warmup_steps", "val_batches", "val_puzzles", "keep_best"):
    _check(int(t[name]) >= 0, f"config.train.{name} must be >= 0, got {t[name]}")
  _check(t.lr > 0, f"config.train.lr must be > 0, got {t.lr}")
  _check(0.0 <= t.end_lr_factor, f"config.train.end_lr_factor must be >= 0, got {t.end_lr_factor}")
  _check(0.0 <= t.b1 < 1.0 and 0.0 <= t.b2 < 1.0,
         f"config.train.b1/b2 must be in [0, 1), got {t.b1}, {t.b2}")
  _check(t.weight_decay >= 0, f"config.train.weight_decay must be >= 0, got {t.weight_decay}")
  _check(float(t.max_seconds) >= 0,
         f"config.train.max_seconds must be >= 0 (0 = no limit), got {t.max_seconds}")
  _check(t.grad_clip >= 0, f"config.train.grad_clip must be >= 0 (0 = off), got {t.grad_clip}")
  _check(0.0 <= t.ema_decay < 1.0, f"config.train.ema_decay must be in [0, 1), got {t.ema_decay}")
  _check(t.batch_size % t.grad_accum == 0,
         f"config.train.batch_size={t.batch_size} must be divisible by "
         f"config.train.grad_accum={t.grad_accum}")
  _check(config.eval.get("params", "ema") in ("ema", "raw"),
         f"config.eval.params={config.eval.get('params')!r}; choose 'ema' or 'raw'")
  _check(isinstance(config.model.structure_embed, bool),
         f"config.model.structure_embed must be true or false, got "
         f"{config.model.structure_embed!r}")
  _check(config.model.dtype in ("float32", "bfloat16"),
         f"config.model.dtype={config.model.dtype!r}; choose 'float32' or 'bfloat16'")
  if config.objective == "mdm":
    schedules.get_schedule(config.diffusion.schedule)
    _check(config.diffusion.loss in ("continuous", "discrete"),
           f"config.diffusion.loss={config.diffusion.loss!r}; choose 'continuous' or 'discrete'")
    _check(int(config.diffusion.discrete_steps) >= 1,
           "config.diffusion.discrete_steps must be >= 1")
    _check(config.diffusion.get("weighting", "elbo") in losses.WEIGHTINGS,
           f"config.diffusion.weighting={config.diffusion.get('weighting')!r}; choose one "
           f"of {', '.join(losses.WEIGHTINGS)}")
    _check(t.val_strategy in sampling.STRATEGIES,
           f"config.train.val_strategy={t.val_strategy!r}; choose one of "
           f"{', '.join(sampling.STRATEGIES)}")
  if config.objective == "pi":
    _check(config.data.pi_order in losses.PI_KINDS,
           f"config.data.pi_order={config.data.pi_order!r}; choose one of "
           f"{', '.join(losses.PI_KINDS)}")
  for name in ("num_train", "num_val"):
    _check(int(config.data[name]) >= 1, f"config.data.{name} must be >= 1")
  for name in ("shard_size", "gen_workers", "worker_count"):
    _check(int(config.data[name]) >= 0, f"config.data.{name} must be >= 0")


def parse_arg(arg: str | None, presets: tuple[str, ...], default: str) -> tuple[str, list[str]]:
  """'paper,solver' -> ('paper', ['solver']); validates the preset name."""
  parts = [p.strip() for p in (arg or default).split(",")]
  preset, options = parts[0] or default, [p for p in parts[1:] if p]
  if preset not in presets:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
  return preset, options


def model_overrides(**values: Any) -> ml_collections.ConfigDict:
  """A ConfigDict of every overridable TransformerConfig field (None = preset's)."""
  ph = ml_collections.config_dict.placeholder
  o = ml_collections.ConfigDict({
      "num_layers": ph(int), "d_model": ph(int), "num_heads": ph(int),
      "mlp_dim": ph(int), "positional": ph(str), "norm": ph(str), "mlp": ph(str),
      "qk_norm": ph(bool), "dropout": ph(float), "use_bias": ph(bool),
      "norm_eps": ph(float), "rope_base": ph(float), "init_std": ph(float),
      "batch_chunk": ph(int), "max_positions": ph(int),
      "kernels": ph(str),  # 'auto' | 'cpu' | 'xla' (TransformerConfig.kernels)
  })
  for k, v in values.items():
    setattr(o, k, v)
  return o


def base_config() -> ml_collections.ConfigDict:
  """Every schema field with a neutral default (an MDM on Sudoku, tiny model)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.objective = "mdm"  # 'mdm' | 'arm' | 'pi'

  c.task = ml_collections.ConfigDict()
  c.task.name = "sudoku"
  c.task.params = {}  # keyword arguments of data.get_task

  c.data = ml_collections.ConfigDict()
  c.data.dir = default_data_dir()
  c.data.num_train = 10_000
  c.data.num_val = 512  # held-out set for the validation loss / solve rate
  c.data.num_test = 1_000
  c.data.num_hard = 1_000
  c.data.seed = 0
  c.data.augment = False
  c.data.ordering = ""  # ARM ordering (task.arm_orderings), '' for MDM / pi
  c.data.pi_order = "identity"  # pi objective: identity|much_closer|closer|uniform
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  # Examples per stored shard (the unit of parallel generation); 0: the task's
  # preferred size (Task.preferred_shard_size: 4,096 for 9x9 Sudoku, else 1,000).
  # A dataset already stored keeps its own.
  c.data.shard_size = 0
  c.data.gen_workers = 0  # processes generating shards; 0 = one per CPU core (max 8)

  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny"
  # TransformerConfig fields that replace the preset's values; None keeps the
  # preset's. Typed placeholders, so `--config.model.overrides.d_model=128` works.
  c.model.overrides = model_overrides()
  c.model.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'
  # Learned embeddings of the task's structure groups (Sudoku: a cell's row, column
  # and box) added to positions (MDM) or cell tokens (ARM): an inductive bias for
  # CPU-scale runs; the paper's models have none (False).
  c.model.structure_embed = False

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"
  c.diffusion.loss = "continuous"  # 'continuous' | 'discrete'
  c.diffusion.discrete_steps = 50
  c.diffusion.antithetic = True
  c.diffusion.weighting = "elbo"  # 'elbo' (w(t) = 1/t for linear) | 'flat' (mean masked CE)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1_000
  c.train.batch_size = 64  # global, over all processes and devices
  c.train.lr = 1e-3
  c.train.warmup_steps = 100
  c.train.end_lr_factor = 0.0  # cosine decays to lr * end_lr_factor
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.weight_decay = 0.01
  c.train.grad_clip = 1.0  # global-norm clip; 0 disables
  c.train.ema_decay = 0.999  # 0 keeps EMA == params
  c.train.grad_accum = 1  # micro-batches per step (batch_size must divide)
  c.train.log_every = 50
  c.train.eval_every = 500  # validation loss (+ solve rate) every this many steps
  c.train.ckpt_every = 500
  c.train.keep = 3  # latest checkpoints kept
  c.train.keep_best = 1  # plus the best ones by validation loss
  c.train.val_batches = 4  # validation-loss batches (of batch_size) per evaluation
  c.train.val_puzzles = 64  # solve-rate puzzles per evaluation (0 = off)
  c.train.val_strategy = "margin"  # sampler strategy for the periodic solve rate
  c.train.async_checkpoints = True
  c.train.max_seconds = 0.0  # stop (checkpoint, evaluate) after this much wall time; 0 = off
  c.train.init_from = ""  # exported params (checkpoint.export_params) to start from

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 = all remaining devices
  c.mesh.fsdp = 1
  c.mesh.min_shard_size = 4096  # arrays smaller than this stay replicated

  c.sampler = ml_collections.ConfigDict()
  c.sampler.strategies = ("vanilla", "top_prob", "margin")  # tuples: CLI-overridable
  c.sampler.num_steps = 50
  c.sampler.schedule = "linear"
  # Gumbel noise on the ordering score. 0 by default: measured on the demo's 6x6
  # checkpoint (REPRODUCTION.md, "Gumbel noise"), any noise lowers every adaptive order
  # (margin 93.5% solved without noise, 18.0% with the paper's literal 0.5 x Gumbel on
  # the probability margin, 38.0% with it annealed on log scores). The paper's
  # setting: gumbel=0.5, gumbel_schedule='constant', score_space='prob'.
  c.sampler.gumbel = 0.0
  c.sampler.gumbel_schedule = "constant"  # 'constant' | 'annealed' (x t = 1 - i/T)
  c.sampler.score_space = "prob"  # 'prob' | 'log': where the Gumbel noise is added
  c.sampler.temperature = 0.0
  c.sampler.top_k = 0  # with temperature > 0: sample among the k best tokens (0 = all)
  c.sampler.top_p = 1.0  # with temperature > 0: nucleus sampling (1.0 = off)
  # 'deterministic' | 'binomial' (K from the schedule) | 'threshold' | 'factor' |
  # 'entropy_bounded' (K from the model's confidence; each reads its own option below)
  c.sampler.k_mode = "deterministic"
  c.sampler.threshold = 0.9  # k_mode 'threshold': fix every p(value) >= tau
  c.sampler.factor = 1.0  # k_mode 'factor': largest n with (n + 1)(1 - c_(n)) < f
  c.sampler.entropy_budget = 0.1  # k_mode 'entropy_bounded': gamma (nats)
  # Re-mask written positions (Ye et al.); needs a denoiser trained on visible positions
  # too, which mdm_loss is not (0% on 9x9 Sudoku: REPRODUCTION.md).
  c.sampler.remask = False
  # Semi-autoregressive blocks of this many positions (0 = off); must divide the
  # sequence length, and num_steps must be a multiple of the number of blocks.
  c.sampler.block_length = 0
  # > 0: stream the puzzles through this many slots (continuous batching: a slot
  # whose puzzle is done takes the next one); pays off with adaptive k_modes.
  c.sampler.slots = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.splits = ("test",)
  c.eval.num_puzzles = 1_000
  c.eval.batch_size = 256
  c.eval.after_train = True
  c.eval.seed = 0
  # ARM checkpoints: greedy decoding writes legal moves only (a cell still empty, a
  # value; `Task.arm_legal_fn`), as an MDM only fills masked cells. False: the
  # model's unconstrained argmax (a move into a filled cell is then lost).
  c.eval.arm_legal = True
  # ARM checkpoints: 1 = greedy; W > 1 = beam search keeping the W most probable
  # hypotheses (sampling.ar_beam_cached); the sample mode uses it too.
  c.eval.arm_beam = 1
  # ARM checkpoints of a (cell, value) layout (Sudoku arm_vocab='cell'): '' = the
  # paper's decoding (the model's next token); 'top_prob' | 'margin' | 'entropy' =
  # try every empty cell and write the one whose value the model is surest of
  # (sampling.ar_pick_cached), the MDM's adaptive order brought to the ARM.
  c.eval.arm_pick = ""
  # MDM checkpoints: True lets the model write only tokens that break none of the
  # puzzle's rules given what is written (Task.rule_mask_fn; Sudoku: no digit a
  # filled peer holds). The paper's decoders do not; off by default.
  c.eval.rule_mask = False
  c.eval.params = "ema"  # 'ema' | 'raw': which parameters evaluation decodes with
  c.eval.sweep_steps = (5, 10, 25, 50)  # accuracy-vs-steps sweep on the first split; () = off
  c.eval.sweep_puzzles = 1_000  # puzzles of that sweep (at most the split's size)
  c.eval.error_puzzles = 1_000  # L&O-NAE-SAT puzzles for the per-position errors
  return c


def apply_options(c: ml_collections.ConfigDict, options: list[str],
                  extra: dict[str, Any] | None = None) -> None:
  """Applies generic preset options: 'bf16', 'f32', 'structure' (learned embeddings of
  the task's structure groups, `model.structure_embed`); `extra` maps option -> fn(c)."""
  extra = extra or {}
  for opt in options:
    if opt in extra:
      extra[opt](c)
    elif opt == "bf16":
      c.model.dtype = "bfloat16"
    elif opt == "f32":
      c.model.dtype = "float32"
    elif opt == "structure":
      c.model.structure_embed = True
    else:
      valid = sorted(["bf16", "f32", "structure", *extra])
      raise ValueError(f"unknown preset option {opt!r}; choose from {', '.join(valid)}")


def long_option(preset: str, options: list[str], *, only: str, steps: int,
                max_seconds: float) -> dict[str, Callable[[ml_collections.ConfigDict], None]]:
  """The 'long' preset option (for `apply_options`' `extra`): the `only` preset's recipe
  on a longer schedule, `train.steps` and `train.max_seconds`; other presets refuse it."""
  if "long" in options and preset != only:
    raise ValueError(f"option 'long' is for the {only} preset, not {preset!r}")

  def apply(c: ml_collections.ConfigDict) -> None:
    c.train.steps, c.train.max_seconds = steps, float(max_seconds)
  return {"long": apply}


def set_arm_paper_optimizer(c: ml_collections.ConfigDict) -> None:
  """Shah et al.'s ARM recipe, as Kim et al. 2025 (arXiv 2502.06768) train their ARMs:
  AdamW lr 2e-4, betas (0.9, 0.95), wd 0.005, 10k warm-up then cosine to 0.2x,
  batch 64, clip 1."""
  c.train.lr, c.train.b1, c.train.b2, c.train.weight_decay = 2e-4, 0.9, 0.95, 0.005
  c.train.warmup_steps, c.train.end_lr_factor = 10_000, 0.2
  c.train.batch_size, c.train.grad_clip = 64, 1.0


def set_arm(c: ml_collections.ConfigDict, ordering: str) -> None:
  c.objective = "arm"
  c.data.ordering = ordering
  c.sampler.strategies = ("greedy",)


def tiny_model(c: ml_collections.ConfigDict, **overrides: Any) -> None:
  """The 'tiny' preset without dropout; inference in 16-sequence chunks (CPU cache)."""
  c.model.preset = "tiny"
  c.model.overrides.dropout = 0.0
  c.model.overrides.batch_chunk = 16
  c.model.overrides.update(overrides)


def demo_training(c: ml_collections.ConfigDict, *, steps: int = 1_500) -> None:
  """The short CPU schedule of the tiny `demo` presets (batch 64, lr 2e-3)."""
  c.train.steps, c.train.batch_size = steps, 64
  c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 2e-3, 100, 0.1
  c.train.ema_decay = 0.99
  c.train.log_every, c.train.eval_every, c.train.ckpt_every = 50, 500, 500
  c.train.val_batches, c.train.val_puzzles = 2, 64


def llama_mdm(c: ml_collections.ConfigDict) -> None:
  """The 19M LLaMA-style MDM and its optimizer (Kim et al. 2025's set-up: lr 1e-3, batch 128)."""
  c.model.preset = "llama-19m"
  c.train.batch_size = 128
  c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 2_000, 0.0
  c.train.weight_decay = 0.01  # not stated in the paper
  c.train.ema_decay = 0.9999
  c.train.val_batches, c.train.val_puzzles = 8, 512


def gpu_run(c: ml_collections.ConfigDict, *, steps: int, eval_batch_size: int = 1_000
            ) -> None:
  """A `gpu` preset: shorter than the paper's run, bfloat16, 500k training examples."""
  c.model.dtype = "bfloat16"
  c.data.num_train, c.data.num_val, c.data.num_test = 500_000, 2_048, 10_000
  c.data.worker_count = 4
  c.train.steps = steps
  c.train.log_every, c.train.eval_every, c.train.ckpt_every = 200, 10_000, 5_000
  c.eval.num_puzzles, c.eval.batch_size = 10_000, eval_batch_size
