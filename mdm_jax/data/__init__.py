"""Puzzle data made locally: Sudoku, Zebra, L&O-NAE-SAT; storage and loaders."""
from mdm_jax.data.base import Examples, Layout, Task, get_task, task_names

__all__ = ["Examples", "Layout", "Task", "get_task", "task_names"]
