r"""L&O-NAE-SAT masked diffusion model (Kim et al. 2025, arXiv 2502.06768, Table 1).

`--config=configs/lo_nae_sat.py:<preset>[,<N>][,bf16]` with N the number of latent
tokens, one of the paper's five (N, P) pairs: 25 (P=275), 30 (270), 40 (260),
50 (250), 100 (200); default 25. Presets:
  demo   N=8 latents, P=40 observations (or the given N with P=300-N), tiny
         model, 1,500 steps, minutes on a CPU: exercises the pipeline only (the
         model has not yet learned to read the latents; `cpu` has).
  cpu    N=8 latents, P=40 observations (`cpu,16`: N=16, P=48), the tiny model
         (0.10M), flat loss weight, 20,000 steps at batch 64, values sampled at
         temperature 1 (generation is unconditional). Measured on 2 shared CPU
         cores: N=8 in 29 minutes, consistent obs. vanilla 87.2% -> margin 97.1%;
         N=16 in 44 minutes, 71.6% -> 77.5% (REPRODUCTION.md, "L&O-NAE-SAT").
  paper  llama-19m (8 x 384, 6 heads, SwiGLU, RMSNorm, RoPE), lr 1e-3, batch 128.
  gpu    the paper's model trained briefly on one GPU (bfloat16 compute).
"""
from mdm_jax import config_schema as common

PRESETS = ("demo", "cpu", "paper", "gpu")
PAIRS = {25: 275, 30: 270, 40: 260, 50: 250, 100: 200}  # N -> P (Kim et al. 2025, Table 1)
CPU_PAIRS = {8: 40, 16: 48}  # N -> P of the `cpu` preset


def lo_params(n: int, p: int):
  """Task parameters; pad_to (None = N + P) is a typed placeholder for the CLI."""
  return common.ml_collections.ConfigDict({
      "num_latents": n, "num_obs": p, "triples_seed": 0,
      "pad_to": common.ml_collections.config_dict.placeholder(int)})


def get_config(arg: str | None = None):
  preset, options = common.parse_arg(arg, PRESETS, "demo")
  pair = None
  rest = []
  for opt in options:
    if opt.isdigit():
      n, pairs = int(opt), CPU_PAIRS if preset == "cpu" else PAIRS
      if n not in pairs:
        raise ValueError(f"N={n} is not one of the {preset} preset's latent counts "
                         f"{', '.join(map(str, pairs))}")
      pair = (n, pairs[n])
    else:
      rest.append(opt)
  c = common.base_config()
  c.task.name = "lo_nae_sat"
  c.objective = "mdm"
  c.eval.splits = ("test",)
  if preset == "demo":
    n, p = pair or (8, 40)
    c.task.params = lo_params(n, p)
    common.tiny_model(c)
    c.data.num_train, c.data.num_val, c.data.num_test = 20_000, 256, 500
    common.demo_training(c)
    c.eval.num_puzzles, c.eval.batch_size = 500, 250
  elif preset == "cpu":
    n, p = pair or (8, 40)
    c.task.params = lo_params(n, p)
    common.tiny_model(c)
    c.data.num_train, c.data.num_val, c.data.num_test = 20_000, 512, 500
    common.demo_training(c, steps=20_000)
    c.diffusion.weighting = "flat"
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 1_000, 2_000
    c.train.val_batches = 8
    c.sampler.temperature = 1.0
    c.eval.num_puzzles, c.eval.batch_size = 500, 250
  else:
    n, p = pair or (25, 275)
    c.task.params = lo_params(n, p)
    common.llama_mdm(c)
    if preset == "paper":
      c.data.num_train, c.data.num_val, c.data.num_test = 1_000_000, 2_048, 10_000
      c.train.steps = 200_000  # not stated in the paper
      c.train.log_every, c.train.eval_every, c.train.ckpt_every = 500, 10_000, 10_000
      c.eval.num_puzzles, c.eval.batch_size = 10_000, 1_000
    else:
      common.gpu_run(c, steps=50_000)
  common.apply_options(c, rest)
  return c
