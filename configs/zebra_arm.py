r"""Zebra puzzle autoregressive baseline (Kim et al. 2025, arXiv 2502.06768, Table 3).

`--config=configs/zebra_arm.py:<preset>[,<ordering>][,structure][,entity][,bf16]`, orderings 'solver'
(default, "with ordering"), 'row_major', 'random'. Presets demo / paper / gpu as in
sudoku_arm.py (paper: arm-42m with Shah et al.'s optimizer settings); the demo
exercises the pipeline only (it does not learn Zebra in that time).
  cpu    3 houses x 3 attributes, the data and model size of `zebra_mdm.py:cpu`
         (0.6M, 3 x 128) as a causal model with rotary positions, 8,000 steps at
         batch 64, at most 45 minutes on 2 CPU cores. Measured with a 30-minute
         limit, two runs sharing the cores (~2,765 steps): solver order 9.2% of 500
         test puzzles solved, random 0.0%; resumed to 44 minutes (~4,380 steps):
         13.2% vs 0.0% (REPRODUCTION.md, "Zebra"). With `structure,entity`, two
         runs sharing the cores for 45 minutes (~3,846 steps): 11.6% vs 0.0%
         greedy; solver order with beam width 4 / 16: 14.6 / 15.0%.
"""
from mdm_jax import config_schema as common

PRESETS = ("demo", "cpu", "paper", "gpu")
ORDERINGS = ("solver", "row_major", "random")


def get_config(arg: str | None = None):
  preset, options = common.parse_arg(arg, PRESETS, "demo")
  c = common.base_config()
  c.task.name = "zebra"
  c.task.params = {"min_houses": 3, "max_houses": 6, "min_attrs": 3, "max_attrs": 6}
  common.set_arm(c, "solver")
  c.eval.splits = ("test",)
  if preset == "demo":
    c.task.params = {"min_houses": 3, "max_houses": 4, "min_attrs": 3, "max_attrs": 4}
    common.tiny_model(c)
    c.data.num_train, c.data.num_val, c.data.num_test = 20_000, 256, 200
    c.train.steps, c.train.batch_size = 1_500, 64
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 100, 0.2
    c.train.b2 = 0.95
    c.train.ema_decay = 0.99
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 50, 500, 500
    c.train.val_batches, c.train.val_puzzles = 2, 32
    c.eval.num_puzzles, c.eval.batch_size = 200, 200
  elif preset == "cpu":
    c.task.params = {"min_houses": 3, "max_houses": 3, "min_attrs": 3, "max_attrs": 3}
    common.tiny_model(c, num_layers=3, d_model=128, num_heads=8, mlp_dim=512,
                      positional="rope")
    c.data.num_train, c.data.num_val, c.data.num_test = 50_000, 512, 500
    c.data.augment = True  # relabelled attributes / values, mirrored houses
    c.train.steps, c.train.batch_size = 8_000, 64
    c.train.max_seconds = 45 * 60.0
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 200, 0.05
    c.train.b2 = 0.95
    c.train.ema_decay = 0.0
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 100, 1_000, 1_000
    c.train.val_batches, c.train.val_puzzles = 8, 64
    c.eval.num_puzzles, c.eval.batch_size = 500, 250
  else:
    c.model.preset = "arm-42m"
    common.set_arm_paper_optimizer(c)
    c.train.ema_decay = 0.9999
    c.train.val_batches, c.train.val_puzzles = 8, 256
    if preset == "paper":
      c.data.num_train, c.data.num_val, c.data.num_test = 1_500_000, 2_048, 100_000
      c.train.steps = 3_000_000  # not stated in the paper
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 20_000, 10_000
      c.eval.num_puzzles, c.eval.batch_size = 100_000, 1_000
    else:
      common.gpu_run(c, steps=100_000, eval_batch_size=500)
  extra = {o: (lambda c, o=o: setattr(c.data, "ordering", o)) for o in ORDERINGS}
  extra["entity"] = lambda c: c.task.params.update({"entity_tokens": True})
  common.apply_options(c, options, extra)
  return c
