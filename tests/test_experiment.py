"""Tests of mdm_jax.experiment and of the module structure around it."""
import ast
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mdm_jax import config_schema
from mdm_jax import experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mdm_jax"
# Modules that training pulls in and that inference must not need.
HEAVY = ("mdm_jax.train", "optax", "orbax.checkpoint.checkpoint_manager")


def _imported_modules(path: pathlib.Path) -> set[str]:
  """Every module an `import` / `from ... import` names, at any depth of the file."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


def test_nothing_but_main_imports_train():
  offenders = []
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(ROOT).as_posix()
    if rel in ("mdm_jax/main.py", "mdm_jax/train.py"):
      continue
    if "mdm_jax.train" in _imported_modules(path):
      offenders.append(rel)
  assert not offenders, f"modules importing mdm_jax.train: {offenders}"
  assert "mdm_jax.train" in _imported_modules(PACKAGE / "main.py")


def _module_name(path: pathlib.Path) -> str:
  name = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _top_level_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The package modules that `path` imports when it is loaded (module-level
  statements); `from pkg import sub` counts as an import of pkg.sub."""
  out = set()
  for node in ast.parse(path.read_text(), str(path)).body:
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      subs = {f"{node.module}.{a.name}" for a in node.names} & modules
      out.update(subs or ({node.module} & modules))
  return out


def test_module_import_graph_has_no_cycle():
  """Loading any module never re-enters one that is still loading: the module-level
  import graph of the package is a DAG (function-level imports are for optional or
  heavy dependencies and the task registry)."""
  paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {m: _top_level_imports(p, set(paths)) - {m} for m, p in paths.items()}
  state: dict[str, int] = {}

  def visit(m: str, stack: list[str]) -> None:
    state[m] = 1
    for n in sorted(graph[m]):
      assert state.get(n) != 1, f"import cycle: {' -> '.join(stack[stack.index(n):] + [n])}"
      if n not in state:
        visit(n, stack + [n])
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert "mdm_jax.experiment" in graph["mdm_jax.evaluate"]  # the walk sees real edges
  assert graph["mdm_jax.config_schema"] == set()  # configs import it: stays light


def _modules_after(code: str) -> dict[str, bool]:
  script = (f"import sys\n{code}\n"
            f"import json; print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_solve_pulls_in_no_training_code():
  loaded = _modules_after("import mdm_jax.solve")
  assert not any(loaded.values()), loaded


def test_solving_with_the_packaged_model_needs_no_training_code():
  puzzle = ("53..7...." "6..195..." ".98....6." "8...6...3" "4..8.3..1" "7...2...6"
            ".6....28." "...419..5" "....8..79")
  code = ("import contextlib, io\nfrom mdm_jax import solve\n"
          "with contextlib.redirect_stdout(io.StringIO()):\n"
          f"  code = solve.main([{puzzle!r}, '--tries=1', '--steps=4'])\n"
          "assert code in (0, 4), code")
  loaded = _modules_after(code)
  assert not any(loaded.values()), loaded


def test_build_task_layout_and_model():
  c = config_schema.base_config()
  c.task.params = {"box_rows": 2, "box_cols": 2}
  task = experiment.build_task(c)
  assert experiment.layout(c, task) == task.mdm_layout()
  model, mc = experiment.build_model(c, task)
  assert (mc.seq_len, mc.vocab_size, mc.causal) == (task.mdm_layout().seq_len,
                                                    task.mdm_layout().vocab_size, False)
  assert experiment.loader_objective(c) == "mdm"
  c.objective, c.data.ordering = "arm", "nope"
  with pytest.raises(ValueError, match="config.data.ordering='nope'"):
    experiment.build_task(c)


def test_sampler_options_and_config_get():
  c = config_schema.base_config()
  opts = experiment.sampler_options(c, num_steps=7)
  assert opts["num_steps"] == 7 and opts["gumbel"] == c.sampler.gumbel
  assert experiment.sampler_options(None)["num_steps"] == c.sampler.num_steps
  assert experiment.config_get(c, "eval.params", "x") == "ema"
  assert experiment.config_get(c, "eval.missing", 3) == 3
  assert experiment.config_get(None, "a.b", 4) == 4


def test_restore_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    experiment.restore(str(tmp_path / "missing"))
  assert experiment.saved_step(str(tmp_path / "missing")) is None


def test_restore_packaged_export():
  path = str(PACKAGE / "pretrained" / "sudoku9")
  r = experiment.restore(path)
  assert r.task.name == "sudoku" and r.config.objective == "mdm"
  assert experiment.saved_step(path) is not None and r.num_params > 0
  tokens = np.zeros((1, r.task.mdm_layout().seq_len), np.int32)
  logits = r.apply_fn(r.params, tokens)
  assert logits.shape == (1, tokens.shape[1], r.task.mdm_layout().vocab_size)


def test_saved_config_missing_newer_fields_still_loads(tmp_path):
  """A run saved by an older version (fields missing) restores with today's defaults."""
  import shutil
  src = PACKAGE / "pretrained" / "sudoku9"
  dst = tmp_path / "old_export"
  shutil.copytree(src, dst)
  meta = json.loads((dst / "export.json").read_text())
  saved = meta["config"]
  for section, field in (("sampler", "gumbel"), ("sampler", "block_length"),
                         ("eval", "params"), ("data", "shard_size"),
                         ("diffusion", "weighting")):
    saved[section].pop(field, None)
  saved["model"]["overrides"].pop("kernels", None)
  del saved["mesh"]
  (dst / "export.json").write_text(json.dumps(meta))
  merged = config_schema.merge_saved(saved)
  base = config_schema.base_config()
  assert merged.sampler.gumbel == base.sampler.gumbel == 0.0
  assert merged.eval.params == "ema" and merged.mesh.fsdp == base.mesh.fsdp
  assert merged.model.preset == saved["model"]["preset"]  # saved values win
  assert dict(merged.task.params) == saved["task"]["params"]
  r = experiment.restore(str(dst))
  assert r.config.sampler.block_length == 0 and r.config.data.shard_size == 0
  want = experiment.restore(str(src))
  tokens = np.zeros((1, r.task.mdm_layout().seq_len), np.int32)
  np.testing.assert_array_equal(np.asarray(r.apply_fn(r.params, tokens)),
                                np.asarray(want.apply_fn(want.params, tokens)))


def test_structure_embed_builds_the_tasks_groups_or_says_why_not():
  c = config_schema.base_config()
  c.task.params = {"box_rows": 2, "box_cols": 2}
  c.model.structure_embed = True
  task = experiment.build_task(c)
  _, mc = experiment.build_model(c, task)
  assert np.asarray(mc.position_groups).shape == (16, 3) and mc.num_groups == 12
  assert mc.token_groups == ()
  c.objective, c.data.ordering = "arm", "solver"
  with pytest.raises(ValueError, match="has no structure groups"):
    experiment.build_model(c, experiment.build_task(c))  # the paper's (row, col, value)
  c.task.params = {"box_rows": 2, "box_cols": 2, "arm_vocab": "cell"}
  _, mc = experiment.build_model(c, experiment.build_task(c))
  assert len(mc.token_groups) == mc.vocab_size == 20 and mc.position_groups == ()
