"""Imports every task module so that each registers itself with `base.register`."""
import importlib

for _module in ("sudoku", "zebra", "lo_nae_sat"):
  importlib.import_module(f"mdm_jax.data.{_module}")
