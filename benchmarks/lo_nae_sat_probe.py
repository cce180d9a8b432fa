r"""Does an L&O-NAE-SAT MDM read the latents? A teacher-forced probe (a diagnostic).

  python benchmarks/lo_nae_sat_probe.py WORKDIR [--num 1000] [--step S]

For held-out sequences it masks a share of the observations and measures the
denoiser's argmax error on them twice: with every latent visible, and with every
latent masked. A model that has learned obs = NAE(three latents) is near 0 with the
latents visible and much worse without them; a model that predicts observations
only from other observations scores the same both ways. It also measures the error
on latents with every observation visible and a share of the latents masked.
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import load_run, probe_parser  # noqa: E402
from mdm_jax import evaluate  # noqa: E402


def main(argv=None) -> int:
  p = probe_parser(__doc__.splitlines()[0])
  p.add_argument("--strategies", default="vanilla,margin",
                 help="orders to generate with (comma-separated)")
  args = p.parse_args(argv)
  try:
    params, task, apply_fn = load_run(args.workdir, "lo_nae_sat", step=args.step)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  x0_NxL = np.asarray(task.mdm_encode(task.generate("test", args.num, args.seed))["tokens"],
                      np.int32)
  n, k, data_len = x0_NxL.shape[0], task.num_latents, task.data_len
  mask_id = int(task.mdm_layout().mask_id)
  probs = jax.jit(lambda x: jax.nn.softmax(
      apply_fn(params, x).astype(jnp.float32).at[..., mask_id].set(-jnp.inf), -1))
  pos_L = np.arange(x0_NxL.shape[1])
  is_lat_NxL = np.broadcast_to(pos_L < k, x0_NxL.shape)
  is_obs_NxL = np.broadcast_to((pos_L >= k) & (pos_L < data_len), x0_NxL.shape)
  rng = np.random.default_rng(args.seed)

  def error(masked_NxL, scored_NxL):
    x_NxL = np.where(masked_NxL, mask_id, x0_NxL)
    p_NxLxV = np.concatenate([np.asarray(probs(jnp.asarray(x_NxL[i:i + 250])))
                              for i in range(0, n, 250)])
    return float((p_NxLxV.argmax(-1) != x0_NxL)[scored_NxL].mean())

  print(f"{args.workdir} (step {args.step or 'latest'}): {task.name} N={k} P={task.num_obs}, {n} held-out sequences")
  print("| masked | obs error, latents visible | obs error, latents masked |")
  print("|---|---:|---:|")
  for frac in (0.1, 0.5):
    obs_m = is_obs_NxL & (rng.random(x0_NxL.shape) < frac)
    print(f"| {frac:.0%} of observations | {error(obs_m, obs_m):.4f} | "
          f"{error(obs_m | is_lat_NxL, obs_m):.4f} |")
  for frac in (0.1, 0.5, 1.0):
    lat_m = is_lat_NxL & (rng.random(x0_NxL.shape) < frac)
    print(f"latent error, every observation visible, {frac:.0%} of latents masked: "
          f"{error(lat_m, lat_m):.4f}")
  examples = task.generate("test", args.num, args.seed)
  print("| generated (temperature 1) | fully consistent | consistent obs. | distinct latent "
        "vectors | distinct among consistent | 'true' obs. | all latents equal |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for strategy in args.strategies.split(","):
    gen = evaluate.Generator(task, strategy, apply_fn=apply_fn,
                             options=dict(temperature=1.0, num_steps=50))
    key = jax.random.key(args.seed)
    out = gen(params, gen.inputs(examples, key), key)
    tokens_NxL = np.asarray(gen.answers(examples, out))
    scores = task.check(examples, tokens_NxL)
    lat_NxK, ok_N = tokens_NxL[:, :k], scores["solved"]
    print(f"| {strategy} | {ok_N.mean():.1%} | {scores['consistent_frac'].mean():.1%} | "
          f"{len({r.tobytes() for r in lat_NxK})} of {n} | "
          f"{len({r.tobytes() for r in lat_NxK[ok_N]})} | "
          f"{tokens_NxL[:, k:data_len].mean():.3f} | "
          f"{(lat_NxK.min(1) == lat_NxK.max(1)).mean():.1%} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
