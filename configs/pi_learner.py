r"""pi-learners on L&O-NAE-SAT (Kim et al. 2025, arXiv 2502.06768, training side).

A causal model trained with the next-token loss on the sequence read in a fixed
order pi: 'identity' (latents first, then observations), 'much_closer' (identity
+ round(sqrt(L)) random swaps), 'closer' (identity + L // 10 swaps) or 'uniform'
(a uniformly random order). Farther from the identity, observations come before
the latents that determine them, and the loss gets worse. L&O-NAE-SAT is used
because every position is generated (no prompt), as in the paper's text runs.

`--config=configs/pi_learner.py:<preset>[,<order>][,bf16]`; presets:
  demo   N=8, P=40, tiny causal model, 1,500 steps, minutes on a CPU: exercises
         the pipeline only (`cpu` is the measured comparison).
  cpu    N=8, P=40, the tiny causal model, 3,000 steps at batch 64 (about 5 minutes
         per order on 2 CPU cores): the four orders and the MDM
         (`lo_nae_sat.py:demo` with the same steps) compared in REPRODUCTION.md.
  paper  (N, P) = (25, 275), the llama-19m model made causal, lr 1e-3, batch 128.
Compare runs by val/loss (nats per counted token) in metrics.jsonl.
"""
from mdm_jax import config_schema as common

PRESETS = ("demo", "cpu", "paper")
ORDERS = ("identity", "much_closer", "closer", "uniform")


def get_config(arg: str | None = None):
  preset, options = common.parse_arg(arg, PRESETS, "demo")
  c = common.base_config()
  c.task.name = "lo_nae_sat"
  c.objective = "pi"
  c.data.pi_order = "identity"
  c.sampler.strategies = ()
  c.train.val_puzzles = 0
  c.eval.after_train = False  # a pi-learner is compared by its loss
  if preset in ("demo", "cpu"):
    c.task.params = {"num_latents": 8, "num_obs": 40, "triples_seed": 0}
    common.tiny_model(c)
    c.data.num_train, c.data.num_val = 20_000, 512
    c.train.steps, c.train.batch_size = 1_500, 64
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 2e-3, 100, 0.1
    c.train.ema_decay = 0.99
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 50, 500, 500
    c.train.val_batches = 8
    if preset == "cpu":
      c.train.steps = 3_000
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 250, 250, 1_000
  else:
    c.task.params = {"num_latents": 25, "num_obs": 275, "triples_seed": 0}
    c.model.preset = "llama-19m"  # made causal by the 'pi' objective
    c.data.num_train, c.data.num_val = 1_000_000, 4_096
    c.train.batch_size = 128
    c.train.steps = 100_000
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 2_000, 0.0
    c.train.ema_decay = 0.9999
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 5_000, 5_000
    c.train.val_batches = 32
  extra = {o: (lambda c, o=o: setattr(c.data, "pi_order", o)) for o in ORDERS}
  common.apply_options(c, options, extra)
  return c
