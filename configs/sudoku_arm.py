r"""Sudoku autoregressive baseline (Shah et al.; the ARM rows of Kim et al. 2025, Table 2).

`--config=configs/sudoku_arm.py:<preset>[,<ordering>][,shared|by_role|cell|joint]
[,rope|learned][,bf16]`, orderings 'solver' (the "with ordering" row of Table 2,
default), 'forced' (next cell drawn among those a single forces; REPRODUCTION.md,
"ARM baseline, 6x6": it learns less), 'row_major', 'random'; `shared` is the paper's (row, col, value) triples
with one id space, `by_role` gives rows, columns and digits their own token ids, `cell`
writes (cell, value) pairs, `joint` one token per filled cell (cell and value in one
id) (`SudokuTask(arm_vocab=...)`); `rope` / `learned`: rotary or learned positions.
Evaluation decodes legal moves only (`config.eval.arm_legal`).
Presets:
  demo   6x6 Sudoku (2x3 boxes), tiny causal model, minutes on a CPU: exercises the
         pipeline only (it does not learn to solve in that time).
  cpu    6x6 Sudoku (2x3 boxes), a 0.34M causal model with (cell, value) tokens and
         rotary positions (the layout that learned fastest here), 12,000 steps:
         about 30 minutes of training alone on 2 CPU cores (~7 steps/s; the limit
         is 60 minutes for a machine shared with another run). Measured
         (REPRODUCTION.md, "ARM baseline, 6x6"): row_major solves 16.6% of 500 test
         puzzles, solver and random orders none (with the paper's triples and
         3,600 steps no order solved any); with `structure`, the solver order 5.6%
         greedy, 12.6 / 16.8 / 19.0% with beam width 4 / 16 / 64
         (`config.eval.arm_beam`, `benchmarks/arm_beam.py`); a retrained
         checkpoint (9.2% greedy) solves 71.4% with confident-cell decoding
         (`config.eval.arm_pick=margin`, not the paper's ARM decoding), the random
         order 0%.
  paper  arm-42m (8 x 576, 8 heads, MLP 3456, qk-norm, dropout 0.2), AdamW lr 2e-4,
         betas (0.9, 0.95), wd 0.005, 10k warm-up, cosine to 0.2x, batch 64, clip 1.
  gpu    the paper's model trained briefly on one GPU (bfloat16 compute).
"""
from mdm_jax import config_schema as common

PRESETS = ("demo", "cpu", "paper", "gpu")
ORDERINGS = ("solver", "forced", "row_major", "random")


def get_config(arg: str | None = None):
  preset, options = common.parse_arg(arg, PRESETS, "demo")
  c = common.base_config()
  c.task.name = "sudoku"
  c.task.params = {"box_rows": 3, "box_cols": 3}
  common.set_arm(c, "solver")
  c.eval.splits = ("test", "hard")
  if preset == "demo":
    c.task.params = {"box_rows": 2, "box_cols": 3}  # 6x6, as sudoku_mdm.py:demo
    common.tiny_model(c)
    c.data.num_train, c.data.num_val, c.data.num_test, c.data.num_hard = 20_000, 256, 200, 200
    c.train.steps, c.train.batch_size = 1_500, 64
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 100, 0.2
    c.train.b2 = 0.95
    c.train.ema_decay = 0.99
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 50, 500, 500
    c.train.val_batches, c.train.val_puzzles = 2, 32
    c.eval.num_puzzles, c.eval.batch_size = 200, 200
  elif preset == "cpu":
    c.task.params = {"box_rows": 2, "box_cols": 3, "arm_vocab": "cell"}
    common.tiny_model(c, num_layers=3, d_model=96, mlp_dim=384, positional="rope")
    c.data.num_train, c.data.num_val, c.data.num_test, c.data.num_hard = 50_000, 512, 500, 200
    c.data.augment = True  # relabelled digits and symmetries (solver order kept)
    c.train.steps, c.train.batch_size = 12_000, 64
    c.train.grad_accum = 4
    c.train.max_seconds = 60 * 60.0
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 300, 0.05
    c.train.b2 = 0.95
    c.train.ema_decay = 0.0
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 100, 1_500, 1_500
    c.train.val_batches, c.train.val_puzzles = 4, 64
    c.eval.num_puzzles, c.eval.batch_size = 500, 250
  else:
    c.model.preset = "arm-42m"
    common.set_arm_paper_optimizer(c)
    c.train.ema_decay = 0.9999
    if preset == "paper":
      c.data.num_train, c.data.num_val, c.data.num_test, c.data.num_hard = (
          1_800_000, 2_048, 100_000, 100_000)
      # Not stated in the paper; ~110 epochs of 1.8M puzzles at batch 64.
      c.train.steps = 3_000_000
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 20_000, 10_000
      c.train.val_batches, c.train.val_puzzles = 8, 256
      c.eval.num_puzzles, c.eval.batch_size = 100_000, 1_000
    else:
      c.model.dtype = "bfloat16"
      c.data.num_train, c.data.num_val, c.data.num_test, c.data.num_hard = (
          500_000, 2_048, 10_000, 10_000)
      c.data.worker_count = 4
      c.train.steps = 100_000
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 200, 10_000, 5_000
      c.train.val_batches, c.train.val_puzzles = 8, 256
      c.eval.num_puzzles, c.eval.batch_size = 10_000, 500
  extra = {o: (lambda c, o=o: setattr(c.data, "ordering", o)) for o in ORDERINGS}
  for vocab in ("shared", "by_role", "cell", "joint"):
    extra[vocab] = lambda c, v=vocab: c.task.params.update({"arm_vocab": v})
  for positional in ("rope", "learned"):
    extra[positional] = lambda c, p=positional: setattr(c.model.overrides, "positional", p)
  common.apply_options(c, options, extra)
  return c
