"""The command line: one-line errors, every config preset, train then sample."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from mdm_jax import config_schema
from mdm_jax import experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {
    "sudoku_mdm": ("demo", "cpu", "paper", "gpu", "paper,bf16", "cpu9,structure"),
    "sudoku_arm": ("demo", "paper", "gpu", "paper,row_major", "demo,random",
                   "cpu,solver,structure"),
    "zebra_mdm": ("demo", "cpu", "paper", "gpu", "cpu,structure", "cpu,structure,entity",
                  "cpu,structure,entity,long"),
    "zebra_arm": ("demo", "paper,solver", "gpu,random", "cpu,solver,structure",
                  "cpu,random,entity"),
    "lo_nae_sat": ("demo", "cpu,16", "paper", "paper,25", "paper,30", "paper,40", "paper,50",
                   "paper,100", "gpu,50"),
    "pi_learner": ("demo", "paper", "paper,identity", "paper,much_closer",
                   "paper,closer", "paper,uniform"),
}


def _load(name):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _keys(config, prefix=""):
  out = set()
  for k, v in config.items():
    out.add(prefix + k)
    if hasattr(v, "items") and k not in ("params",):
      out |= _keys(v, prefix + k + ".")
  return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_preset_has_the_schema_and_validates(name):
  schema = _keys(_load("common").base_config())
  module = _load(name)
  for arg in (*module.PRESETS, *CONFIGS[name]):  # every preset, then options
    config = module.get_config(arg)
    assert _keys(config) == schema, (name, arg)
    config_schema.validate(config)
    task = experiment.build_task(config)
    _, model_config = experiment.build_model(config, task)
    assert model_config.causal == (config.objective in ("arm", "pi"))
    assert (model_config.num_groups > 0) == ("structure" in arg.split(","))
    assert getattr(task, "entity_tokens", False) == ("entity" in arg.split(","))
    if arg.startswith("paper"):
      assert config.model.preset in ("gpt2-6m", "llama-19m", "arm-42m")
  with pytest.raises(ValueError, match="unknown preset"):
    module.get_config("nope")


@pytest.mark.parametrize("name, base, other, schedule", [
    ("zebra_mdm", "cpu,structure,entity", "demo", (18_000, 7_500.0)),
    ("sudoku_mdm", "cpu9", "cpu", (15_000, 6_600.0)),
])
def test_long_option_sets_the_two_hour_schedule(name, base, other, schedule):
  m = _load(name)
  c = m.get_config(base + ",long")
  assert (c.train.steps, c.train.max_seconds) == schedule
  assert m.get_config(base).train.steps == 8_000
  with pytest.raises(ValueError, match=f"for the {base.split(',')[0]} preset"):
    m.get_config(other + ",long")


def test_paper_hyper_parameters():
  c = _load("sudoku_mdm").get_config("paper")
  assert (c.model.preset, c.train.lr, c.train.batch_size) == ("gpt2-6m", 1e-3, 128)
  assert c.train.steps == 300 * c.data.num_train // 128
  a = _load("sudoku_arm").get_config("paper,solver")
  assert (a.model.preset, a.train.lr, a.train.b1, a.train.b2) == ("arm-42m", 2e-4, 0.9, 0.95)
  assert (a.train.weight_decay, a.train.warmup_steps, a.train.end_lr_factor) == (0.005, 10_000, 0.2)
  assert (a.train.batch_size, a.train.grad_clip, a.data.ordering) == (64, 1.0, "solver")
  assert _load("sudoku_arm").get_config("paper,row_major").data.ordering == "row_major"
  lo = _load("lo_nae_sat").get_config("paper,40")
  assert (lo.task.params.num_latents, lo.task.params.num_obs) == (40, 260)


def _main(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "mdm_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(out, pattern):
  assert out.returncode != 0
  assert "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  assert pattern in lines[0], lines[0]


@pytest.mark.parametrize("args,pattern", [
    (["--config.train.nonexistent=1"], "nonexistent"),
    (["--config.train.steps=many"], "steps"),
    (["--config.model.overrides.d_model=wide"], "d_model"),
], ids=["unknown_key", "wrong_type", "wrong_type_placeholder"])
def test_config_errors_are_one_line(tmp_path, args, pattern):
  out = _main("--config=configs/zebra_mdm.py:demo", f"--workdir={tmp_path}", *args)
  _assert_one_line_error(out, pattern)


def test_other_command_line_errors_are_one_line(tmp_path):
  _assert_one_line_error(_main("--config=configs/zebra_mdm.py:demo"), "--workdir")
  _assert_one_line_error(_main("--config=configs/zebra_mdm.py:nope", f"--workdir={tmp_path}"),
                         "unknown preset")
  _assert_one_line_error(_main("--config=configs/zebra_mdm.py:demo", "--mode=eval",
                               f"--workdir={tmp_path / 'missing'}"), "does not exist")
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  _assert_one_line_error(_main("--config=configs/zebra_mdm.py:demo",
                               f"--workdir={blocker / 'run'}",
                               f"--config.data.dir={tmp_path / 'data'}"), "not writable")


def test_train_then_sample_through_main(tmp_path):
  common = ["--config=configs/zebra_mdm.py:demo", f"--workdir={tmp_path / 'w'}",
            f"--config.data.dir={tmp_path / 'data'}",
            "--config.task.params.max_houses=3", "--config.task.params.max_attrs=3",
            "--config.data.num_train=64", "--config.data.num_val=16",
            "--config.data.num_test=4", "--config.model.overrides.num_layers=1",
            "--config.sampler.strategies=('margin',)", "--config.sampler.num_steps=4"]
  out = _main(*common, "--config.train.steps=2", "--config.train.batch_size=8",
              "--config.train.val_batches=0", "--config.train.val_puzzles=0",
              "--config.eval.after_train=False", timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 2/2" in out.stderr
  assert (tmp_path / "w" / "checkpoints" / "2").is_dir()
  out = _main(*common, "--mode=sample", "--num_samples=2", timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "== margin: solved" in out.stdout
  assert out.stdout.count("puzzle ") == 2


def test_data_mode_makes_what_training_and_evaluation_read(tmp_path):
  common = ["--config=configs/sudoku_mdm.py:demo", f"--config.data.dir={tmp_path}",
            "--config.data.num_train=40", "--config.data.num_val=12",
            "--config.data.num_test=8", "--config.data.num_hard=6",
            "--config.data.shard_size=20", "--config.data.gen_workers=1"]
  out = _main(*common, "--mode=data", "--data_splits=val,eval")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
  assert list(lines) == ["val", "test", "hard"]
  for name, suffix in (("val", "test-s1-n12"), ("test", "test-s0-n8"), ("hard", "hard-s0-n6")):
    assert lines[name].endswith(suffix) and os.path.isdir(lines[name])
  out = _main(*common, "--mode=data")  # no workdir needed; existing sets are kept
  assert out.returncode == 0, out.stderr[-3000:]
  assert [l.split(":")[0] for l in out.stdout.splitlines()] == ["train", "val", "test", "hard"]
  _assert_one_line_error(_main(*common, "--mode=data", "--data_splits=nope"),
                         "unknown split 'nope'")
