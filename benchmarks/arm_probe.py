r"""Which part of the Sudoku ARM's target has it learned? A teacher-forced probe.

  python benchmarks/arm_probe.py WORKDIR DATASET_DIR

DATASET_DIR is a stored split of the run's task (e.g. ~/.cache/mdm_jax/sudoku-*/
test-s1-n512, the validation set). On the answer part of each sequence, in the run's
ordering, prints the next-token cross-entropy (nats; chance ln n) and argmax accuracy
separately for each role of a cell's tokens: row, column and value of a (row, col,
value) triple, or cell and value of a (cell, value) pair (`arm_vocab='cell'`).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax import evaluate
from mdm_jax.data import store


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  p.add_argument("dataset")
  args = p.parse_args(argv)
  try:
    params, saved, task, apply_fn, _ = evaluate.load_model(args.workdir)
    examples = store.load_examples(args.dataset)
  except (ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  if saved.objective != "arm" or task.name != "sudoku":
    print(f"error: {args.workdir} is not a Sudoku ARM run", file=sys.stderr)
    return 2
  enc = task.arm_encode(examples, saved.data.ordering, np.random.default_rng(0))
  tokens_NxL, on_NxL = np.asarray(enc["tokens"], np.int32), np.asarray(enc["loss_mask"])
  logp = jax.jit(lambda x: jax.nn.log_softmax(apply_fn(params, x).astype(jnp.float32), -1))
  logp_NxLxV = np.concatenate([np.asarray(logp(jnp.asarray(tokens_NxL[i:i + 100])))
                               for i in range(0, len(tokens_NxL), 100)])
  # logits at i predict token i + 1.
  target_NxM, on_NxM = tokens_NxL[:, 1:], on_NxL[:, 1:]
  ce_NxM = -np.take_along_axis(logp_NxLxV[:, :-1], target_NxM[..., None], 2)[..., 0]
  hit_NxM = logp_NxLxV[:, :-1].argmax(-1) == target_NxM
  roles = {"cell": ("cell", "value"), "joint": ("cell+value",)}.get(
      task.arm_vocab, ("row", "col", "value"))
  role_M = np.arange(1, tokens_NxL.shape[1]) % len(roles)
  print(f"{args.workdir} ({saved.data.ordering} order), {len(tokens_NxL)} sequences; "
        f"chance CE of a value ln {task.n} = {np.log(task.n):.3f}")
  for r, name in enumerate(roles):
    sel = on_NxM & (role_M == r)[None]
    print(f"{name:5s} CE {ce_NxM[sel].mean():.3f} nats, argmax accuracy {hit_NxM[sel].mean():.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
