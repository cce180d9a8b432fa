r"""Command line: train, evaluate, sample, or make the datasets.

  python -m mdm_jax.main --config=configs/sudoku_mdm.py:demo --workdir=/tmp/sudoku \
      [--mode=train|eval|sample] [--config.train.steps=100 ...]
  python -m mdm_jax.main --config=configs/sudoku_mdm.py:demo --mode=data \
      [--data_splits=train,val,eval]

--mode=data makes, ahead of time, the datasets that training (train, val) and
evaluation (config.eval.splits) read, with config.data.gen_workers processes (no
workdir, no accelerator needed); it prints one `name: directory` line each.

Multi-host: pass --coordinator_address, --num_processes and --process_id, or let
JAX read the cluster environment (TPU pod, SLURM, MDM_JAX_DISTRIBUTED=1).
Errors in the config, its overrides or the workdir print one line and exit 1
(MDM_JAX_DEBUG=1 shows the traceback instead).
"""
from __future__ import annotations

import ast
import os
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: configs/<exp>.py:<preset>[,option...].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, eval).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "data"],
                          "What to do.")
_DATA_SPLITS = flags.DEFINE_list(
    "data_splits", None, "--mode=data: which datasets, in order: 'train', 'val', "
    "'eval' (= config.eval.splits) or a split name (default: train,val,eval).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 4, "Puzzles to solve in --mode=sample.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _one_line(msg: object) -> str:
  """A message on one line; for wrapped tracebacks, only the final exception line."""
  text = str(msg).strip()
  if "Traceback (most recent call last)" in text:
    lines = [l for l in text.splitlines() if l.strip()]
    head = text.split(":", 1)[0] if text.startswith("flag ") else ""
    text = (f"{head}: " if head else "") + lines[-1].strip()
  return " ".join(text.split())


def _fail(msg: object, code: int = 1) -> None:
  print(f"error: {_one_line(msg)}", file=sys.stderr, flush=True)
  sys.exit(code)


def _unknown_key_message(e: Exception, argv: list[str]) -> str:
  """'stepz' + argv -> 'unknown config key in --config.train.stepz=3 (Did you mean ...)'."""
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  for _ in range(2):  # ml_collections nests KeyError reprs inside the message
    try:
      text = ast.literal_eval(text) if text[:1] in "'\"" else text
    except (ValueError, SyntaxError):
      break
  lines = str(text).strip().splitlines()
  key = lines[0].strip("'\"") if lines else ""
  flag = next((a for a in argv if a.startswith("--config.") and
               key in a.split("=", 1)[0].split(".")[1:]), f"'{key}'")
  hint = f" ({' '.join(lines[1:])})" if len(lines) > 1 else ""
  return f"unknown config key in {flag}{hint}"


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(e)
  except (AttributeError, KeyError) as e:
    _fail(_unknown_key_message(e, argv))
  except (ValueError, TypeError, OSError) as e:
    _fail(f"{type(e).__name__}: {e}")
  return []


def _check_workdir(workdir: str | None, mode: str) -> str:
  if not workdir:
    _fail("--workdir is required")
  from mdm_jax import fileio  # pylint: disable=g-import-not-at-top
  workdir = fileio.normalize(workdir)  # a gs:// workdir stays one
  if mode != "train" and not fileio.isdir(workdir):
    _fail(f"workdir {workdir} does not exist (train first, or check the path)")
  return workdir


def prepare_data(config: ml_collections.ConfigDict,
                 names: list[str] | None = None) -> dict[str, str]:
  """Makes the datasets `names` (default train, val, eval); {name: dir}.

  The same datasets (split, size, seed) that training and evaluation ask for:
  'train' (config.data.num_train), 'val' (the test split under seed + 1,
  config.data.num_val) and each evaluation split ('test': num_test, 'hard':
  num_hard); 'eval' stands for config.eval.splits. Existing complete datasets are
  kept as they are.
  """
  from mdm_jax import experiment  # pylint: disable=g-import-not-at-top
  from mdm_jax.data import base  # pylint: disable=g-import-not-at-top
  c = config
  names = list(names) if names else ["train", "val", "eval"]
  names = [n for name in names for n in (c.eval.splits if name == "eval" else (name,))]
  task = base.get_task(c.task.name, **dict(c.task.params))
  out = {}
  for name in names:
    out[name] = experiment.dataset(c, task, name, progress=True)
    print(f"{name}: {out[name]}", flush=True)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`train.train`, then (config.eval.after_train) `evaluate.evaluate` on the run
  when training finished (all steps, or config.train.max_seconds) unpreempted.

  Returns train's summary, with the evaluation's result under 'eval' if it ran.
  """
  from mdm_jax import train  # pylint: disable=g-import-not-at-top  (JAX-heavy)
  summary = train.train(config, workdir)
  finished = summary["step"] >= int(config.train.steps) or summary.get("timed_out")
  if finished and not summary.get("preempted") and config.eval.after_train:
    from mdm_jax import evaluate  # pylint: disable=g-import-not-at-top
    summary["eval"] = evaluate.evaluate(config, workdir)
  return summary


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/sudoku_mdm.py:demo")
  try:
    config.keys()  # config_flags reports a failed load lazily, on first use
  except OSError as e:
    _fail(f"cannot load --config: {str(e).strip().splitlines()[-1].strip()}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep orbax's INFO chatter out
  if _MODE.value == "data":
    try:
      prepare_data(config, _DATA_SPLITS.value)
    except ValueError as e:
      if os.environ.get("MDM_JAX_DEBUG"):
        raise
      _fail(e)
    return
  workdir = _check_workdir(_WORKDIR.value, _MODE.value)
  # Import JAX-heavy modules only after flag parsing (fast errors).
  from mdm_jax import sharding  # pylint: disable=g-import-not-at-top
  try:
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value)
    if _MODE.value == "train":
      summary = train_and_evaluate(config, workdir)
      if summary.get("preempted"):
        logging.warning("preempted at step %d; rerun the same command to resume",
                        summary["step"])
    else:
      from mdm_jax import evaluate  # pylint: disable=g-import-not-at-top
      if _MODE.value == "eval":
        evaluate.evaluate(config, workdir)
      else:
        evaluate.sample_and_print(config, workdir, num=_NUM_SAMPLES.value)
  except (ValueError, FloatingPointError) as e:
    if os.environ.get("MDM_JAX_DEBUG"):
      raise
    _fail(e)


def run() -> None:
  """Console-script entry point (`mdm-jax`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
