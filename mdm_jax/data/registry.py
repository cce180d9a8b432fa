"""Imports every task module so that each registers itself with `base.register`."""
import importlib

for _module in ("sudoku", "zebra", "lo_nae_sat"):
  try:
    importlib.import_module(f"mdm_jax.data.{_module}")
  except ModuleNotFoundError as e:  # a task module still being written
    if e.name != f"mdm_jax.data.{_module}":
      raise
