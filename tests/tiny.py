"""The one tiny experiment config the training, sharding and storage tests start from."""
from mdm_jax import config_schema

STEPS = 6


def tiny_config(data_dir="/nonexistent", **train_overrides):
  """3x3 Zebra MDM, a 1-layer d=32 model, STEPS steps at batch 16 (train fields
  overridden by keyword), no evaluation after training."""
  c = config_schema.base_config()
  c.task.name = "zebra"
  c.task.params = {"min_houses": 3, "max_houses": 3, "min_attrs": 3, "max_attrs": 3}
  c.data.dir = str(data_dir)
  c.data.num_train, c.data.num_val, c.data.shard_size = 256, 32, 256
  c.model.preset = "tiny"
  c.model.overrides.update(num_layers=1, d_model=32, mlp_dim=64,
                           dropout=0.1)  # dropout: exercises the rng across resumes
  c.train.update(steps=STEPS, batch_size=16, lr=3e-3, warmup_steps=2, log_every=2,
                 eval_every=3, ckpt_every=2, val_batches=1, val_puzzles=0, keep=10)
  c.train.update(train_overrides)
  c.eval.after_train = False
  return c
