"""Generates a stored dataset: `python -m mdm_jax.data --task sudoku --num N --out DIR`.

Resumable: rerunning the same command after an interruption generates only the
missing shards. Prints the dataset directory on stdout (progress goes to stderr),
so `DIR=$(python -m mdm_jax.data ...)` works in scripts.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Sequence

_PROG = "mdm-jax-data"


class _Parser(argparse.ArgumentParser):
  """argparse with one-line errors."""

  def error(self, message: str) -> NoReturn:
    print(f"{_PROG}: error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def _parse_param(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key.strip():
    raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
  try:
    parsed = json.loads(value)  # numbers, true/false, lists; else a plain string
  except ValueError:
    parsed = value
  return key.strip(), parsed


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog=_PROG, description=__doc__.splitlines()[0])
  p.add_argument("--task", required=True, help="task name, e.g. sudoku, zebra, lo_nae_sat")
  p.add_argument("--split", default="train",
                 help="split of the task, e.g. train, test (default: train)")
  p.add_argument("--num", type=int, required=True, help="number of examples (>= 1)")
  p.add_argument("--out", required=True,
                 help="data directory; the dataset goes to "
                      "OUT/<task>-<params hash>/<split>-s<seed>-n<num>")
  p.add_argument("--seed", type=int, default=0, help="base seed (>= 0; default: 0)")
  p.add_argument("--shard-size", type=int, default=None,
                 help="examples per shard (default or 0: the stored one, else the "
                      "task's preferred size, e.g. 4096 for 9x9 Sudoku, 1000 for most)")
  p.add_argument("--workers", type=int, default=1,
                 help="parallel generator processes (default: 1)")
  p.add_argument("--param", type=_parse_param, action="append", default=[],
                 metavar="KEY=VALUE", help="task parameter (repeatable), e.g. box_rows=2")
  p.add_argument("--overwrite", action="store_true",
                 help="delete this dataset's stored files and rebuild it")
  p.add_argument("--verify", action="store_true", help="check every file's sha256")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the CLI; returns the exit status."""
  args = _parser().parse_args(argv)
  try:
    from mdm_jax.data import base, store  # pylint: disable=g-import-not-at-top
    params = dict(args.param)
    if len(params) != len(args.param):
      raise ValueError("a --param key is given twice")
    task = base.get_task(args.task, **params)
    path = store.ensure_dataset(task, args.split, args.num, args.seed, args.out,
                                shard_size=args.shard_size or None,
                                progress=not args.no_progress,
                                workers=args.workers, verify=args.verify,
                                overwrite=args.overwrite)
  except KeyboardInterrupt:
    print(f"{_PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  except (ValueError, OSError) as e:
    if args.debug:
      raise
    print(f"{_PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  except Exception as e:  # pylint: disable=broad-except
    if args.debug:
      raise
    print(f"{_PROG}: error: {type(e).__name__}: {' '.join(str(e).split())} "
          "(rerun with --debug for the traceback)", file=sys.stderr)
    return 1
  print(path)
  return 0


def run() -> None:
  """Console-script entry point (`mdm-jax-data`)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
