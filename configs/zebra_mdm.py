r"""Zebra (Einstein) puzzle masked diffusion model (Kim et al. 2025, arXiv 2502.06768, Table 3).

Presets (`--config=configs/zebra_mdm.py:<preset>[,structure][,entity][,long][,bf16]`;
`entity`: one token per (attribute, value) entity, `ZebraTask(entity_tokens=True)`,
so that a clue's operand and the answer cell holding it are the same token):
  demo   3-4 houses x 3-4 attributes, tiny model, minutes on a CPU: exercises the
         pipeline only; a model this small and short does not learn Zebra.
  cpu    3 houses x 3 attributes only, a 0.61M model (3 x 128, 8 heads, MLP 512),
         relabelling / mirroring augmentation, flat loss weight, lr 1e-3, batch 64,
         8,000 steps, at most 45 minutes of training on 2 CPU cores; evaluated on 500
         held-out puzzles. Measured: stopped at step 3,747 (cores shared), it reads
         the clues in part (46% of cells; 50% at step 6,201 after a resume) but
         solves only 3-4% (REPRODUCTION.md, "Zebra"); with the `structure` option,
         all 8,000 steps (53 minutes), 4.6 / 4.4 / 4.8% (vanilla / top prob / margin).
         With `structure,entity`, 45 minutes alone (step 7,894): 10.6 / 9.2 / 8.8%.
         Retrained (step 6,168, cores shared): 10.6 / 13.2 / 13.0%, but over 2,000
         test puzzles vanilla 10.0% and top prob 10.2%: no adaptive gain yet.
         `cpu,structure,entity,long` (18,000-step schedule, 125-minute limit; the
         measured run stopped at step 16,051): 14.8 / 18.0 / 18.4%; over 2,000 test
         puzzles 15.9 / 18.4 / 18.7%, adaptive orders ahead in every set of 500.
  paper  3-6 x 3-6 puzzles, llama-19m (8 x 384, 6 heads, SwiGLU 1536, RMSNorm, RoPE),
         lr 1e-3, batch 128, AdamW, cosine, 300 epochs of 1.5M puzzles.
  gpu    the paper's model trained briefly on one GPU (bfloat16 compute).
"""
from mdm_jax import config_schema as common

PRESETS = ("demo", "cpu", "paper", "gpu")


def get_config(arg: str | None = None):
  preset, options = common.parse_arg(arg, PRESETS, "demo")
  c = common.base_config()
  c.task.name = "zebra"
  c.task.params = {"min_houses": 3, "max_houses": 6, "min_attrs": 3, "max_attrs": 6}
  c.objective = "mdm"
  c.eval.splits = ("test",)
  if preset == "demo":
    c.task.params = {"min_houses": 3, "max_houses": 4, "min_attrs": 3, "max_attrs": 4}
    common.tiny_model(c)
    c.data.num_train, c.data.num_val, c.data.num_test = 20_000, 256, 200
    common.demo_training(c)
    c.eval.num_puzzles, c.eval.batch_size = 200, 200
  elif preset == "cpu":
    c.task.params = {"min_houses": 3, "max_houses": 3, "min_attrs": 3, "max_attrs": 3}
    common.tiny_model(c, num_layers=3, d_model=128, num_heads=8, mlp_dim=512)
    c.data.num_train, c.data.num_val, c.data.num_test = 50_000, 512, 500
    c.data.augment = True  # relabelled attributes / values, mirrored houses
    c.diffusion.weighting = "flat"
    c.train.steps, c.train.batch_size = 8_000, 64
    c.train.max_seconds = 45 * 60.0
    c.train.lr, c.train.warmup_steps, c.train.end_lr_factor = 1e-3, 200, 0.05
    c.train.ema_decay = 0.999
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 100, 1_000, 1_000
    c.train.val_batches, c.train.val_puzzles = 8, 64
    c.eval.num_puzzles, c.eval.batch_size = 500, 250
  else:
    common.llama_mdm(c)
    if preset == "paper":
      c.data.num_train, c.data.num_val, c.data.num_test = 1_500_000, 2_048, 100_000
      c.train.steps = 300 * 1_500_000 // 128  # 300 epochs
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 20_000, 10_000
      c.eval.num_puzzles, c.eval.batch_size = 100_000, 1_000
    else:
      common.gpu_run(c, steps=100_000)
  # `long`: about 2 hours on 2 CPU cores, the run where adaptive orders pull ahead.
  extra = {"entity": _entity_tokens, **common.long_option(
      preset, options, only="cpu", steps=18_000, max_seconds=7_500)}
  common.apply_options(c, options, extra)
  return c


def _entity_tokens(c) -> None:
  c.task.params.update({"entity_tokens": True})

