"""Sudoku data generation speed: mdm_jax vs qqwing, measured in one run.

Times unique-solution, strategy-rated easy 9x9 puzzles ('train' split: each has exactly
one solution and is solved by the seven strategies, with its solver fill order) from
`mdm_jax.data.sudoku.generate_examples`, then `qqwing --generate N --difficulty easy
--csv` on the same machine, and prints puzzles per second and the ratio. Then hard
9x9 puzzles ('hard' split: exactly one solution, not solvable by the seven
strategies) in this process, against `qqwing --generate N --difficulty expert`, both
per CPU-second of one core (qqwing is one thread).

  .venv/bin/python benchmarks/datagen.py                 # 8192 easy, 2 workers; 1000 hard
  .venv/bin/python benchmarks/datagen.py --num 2048 --workers 1 --hard 200
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import time

import numpy as np

from mdm_jax.data import sudoku as sd
from mdm_jax.data import sudoku_solver as ss


def _cpu() -> float:
  """CPU seconds used so far by this process and its finished children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_qqwing(num: int, difficulty: str = "easy") -> tuple[float, float]:
  """(wall, CPU) seconds of `qqwing --generate num --difficulty D --csv`."""
  start, cpu = time.perf_counter(), _cpu()
  out = subprocess.run(["qqwing", "--generate", str(num), "--difficulty", difficulty,
                        "--csv"], capture_output=True, text=True, check=True).stdout
  wall, cpu = time.perf_counter() - start, _cpu() - cpu
  made = sum(1 for line in out.splitlines()[1:] if line.strip())
  if made != num:
    raise RuntimeError(f"qqwing printed {made} puzzles, expected {num}")
  return wall, cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=8192, help="easy puzzles to make")
  parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--qqwing", type=int, default=400, help="qqwing puzzles")
  parser.add_argument("--hard", type=int, default=1000,
                      help="hard 9x9 puzzles to make in this process (0: skip)")
  parser.add_argument("--qqwing-expert", type=int, default=200,
                      help="qqwing expert puzzles")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if shutil.which("qqwing") is None:
    raise SystemExit("qqwing is not installed (apt-get install qqwing)")

  start, cpu = time.perf_counter(), _cpu()
  ex = sd.generate_examples(3, 3, "train", args.num, args.seed, workers=args.workers)
  seconds, cpu = time.perf_counter() - start, _cpu() - cpu
  ours = args.num / seconds
  q_wall, q_cpu = time_qqwing(args.qqwing)
  theirs = args.qqwing / q_wall

  seen = np.bincount(ex["order"][..., 3].ravel() + 1, minlength=10)[1:]
  rated = np.bincount(ex["max_strategy"], minlength=10)
  print(f"mdm_jax: {args.num} easy 9x9 puzzles in {seconds:.1f}s with "
        f"{args.workers} worker(s): {ours:.0f} puzzles/s "
        f"(givens: mean {ex['num_givens'].mean():.1f}, min {ex['num_givens'].min()})")
  print(f"qqwing : {args.qqwing} easy puzzles in {q_wall:.1f}s: {theirs:.0f} puzzles/s "
        "(one thread)")
  print(f"ratio  : {ours / theirs:.1f}x qqwing (wall clock)")
  ours_cpu, theirs_cpu = args.num / cpu, args.qqwing / q_cpu
  print(f"per CPU-second: mdm_jax {ours_cpu:.0f}, qqwing {theirs_cpu:.0f} puzzles: "
        f"{ours_cpu / theirs_cpu:.1f}x; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (other processes slow both sides)")
  print("cells placed per strategy id: " + ", ".join(
      f"{ss.STRATEGY_NAMES[s]} {seen[s]}" for s in (0, 2, 3, 4, 5, 6, 7, 8)))
  print("puzzles by hardest strategy : " + ", ".join(
      f"{ss.STRATEGY_NAMES[s]} {rated[s]}" for s in range(2, 9)))
  if args.hard:
    start, cpu = time.perf_counter(), _cpu()
    hard = sd.generate_examples(3, 3, "hard", args.hard, args.seed, workers=1)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    assert (hard["max_strategy"] == ss.BEYOND).all()
    e_wall, e_cpu = time_qqwing(args.qqwing_expert, "expert")
    ours, theirs = args.hard / cpu, args.qqwing_expert / e_cpu
    print(f"hard 9x9: {ours:.0f} puzzles/s per core ({args.hard} puzzles in "
          f"{cpu:.1f} CPU-s, {seconds:.1f}s wall, one process; givens: mean "
          f"{hard['num_givens'].mean():.1f}, min {hard['num_givens'].min()})")
    print(f"qqwing expert: {theirs:.0f} puzzles/s per core ({args.qqwing_expert} "
          f"puzzles in {e_cpu:.1f} CPU-s, {e_wall:.1f}s wall)")
    print(f"ratio  : easy {ours_cpu / theirs_cpu:.1f}x qqwing easy, hard "
          f"{ours / theirs:.1f}x qqwing expert (per CPU-second)")


if __name__ == "__main__":
  main()
