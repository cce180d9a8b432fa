"""Training loop: checkpoints, metrics, resume (SIGTERM / kill -9), NaN guard, causality.

Runs use a tiny model on 3x3 Zebra puzzles (fast to generate) and the 8 virtual CPU
devices of conftest.py; subprocesses inherit them, so runs are bitwise comparable.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import checkpoint
from mdm_jax import metrics as metrics_lib
from mdm_jax import experiment
from mdm_jax import train
from tiny import STEPS, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_config_file(config, path):
  """A config file for `main` that reproduces `config` exactly."""
  json_path = pathlib.Path(path).with_suffix(".json")
  json_path.write_text(config.to_json())
  pathlib.Path(path).write_text(textwrap.dedent(f"""
      import json
      import ml_collections
      def get_config(arg=None):
        return ml_collections.ConfigDict(json.load(open({str(json_path)!r})))
      """))
  return str(path)


# A driver that runs `mdm_jax.main` after arranging for a signal to be delivered to
# itself when the training loop fetches its N-th batch; with WAIT_FOR set, the signal
# waits (up to 120 s) until that path exists, e.g. a finalised checkpoint directory,
# so that the test does not depend on how fast an asynchronous save is.
_DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    from mdm_jax import main, sharding
    at, sig = int(os.environ["SIGNAL_AT"]), getattr(signal, os.environ["SIGNAL"])
    wait_for = os.environ.get("WAIT_FOR")
    original, calls = sharding.global_batch, [0]
    def global_batch(batch, mesh):
      calls[0] += 1
      if calls[0] == at:
        deadline = time.time() + 120
        while wait_for and not os.path.exists(wait_for) and time.time() < deadline:
          time.sleep(0.05)
        os.kill(os.getpid(), sig)
      return original(batch, mesh)
    sharding.global_batch = global_batch
    sys.argv = ["main"] + sys.argv[1:]
    main.run()
    """)


def _run_main(args, *, env_extra=None, driver=None, timeout=240):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **_CACHE_ENV, **(env_extra or {}))
  cmd = [sys.executable] + (["-c", driver] if driver else ["-m", "mdm_jax.main"]) + args
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _params(workdir, ema=True):
  params, _ = checkpoint.load_for_inference(str(workdir), ema=ema)
  return jax.tree.map(np.asarray, params)


def _assert_same(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


_CACHE_ENV = {}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Subprocesses share a persistent compilation cache (same programs, less time)."""
  _CACHE_ENV.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  yield
  _CACHE_ENV.clear()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """An uninterrupted run: (workdir, raw params, EMA params, summary)."""
  workdir = tmp_path_factory.mktemp("reference")
  summary = train.train(tiny_config(data_dir), str(workdir))
  return workdir, _params(workdir, ema=False), _params(workdir), summary


def test_tiny_run_writes_checkpoints_and_metrics(reference):
  workdir, raw, ema, summary = reference
  assert summary["step"] == STEPS and not summary["preempted"]
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 4, 6]
  records = metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))
  assert [r["step"] for r in records] == [2, 3, 4, 6]  # log every 2, eval every 3
  for r in records:
    if "train/loss" in r:
      assert np.isfinite(r["train/loss"]) and r["perf/tokens_per_sec"] > 0
  assert np.isfinite(records[1]["val/loss"]) and np.isfinite(records[-1]["val/loss"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tb"))
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["steps"] == STEPS
  # EMA differs from the raw parameters but has the same structure.
  assert jax.tree.structure(raw) == jax.tree.structure(ema)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(raw),
                                                       jax.tree.leaves(ema)))


def test_sigterm_saves_exits_zero_and_resume_matches(data_dir, reference, tmp_path):
  _, raw, ema, _ = reference
  cfg = write_config_file(tiny_config(data_dir), tmp_path / "cfg.py")
  args = [f"--config={cfg}", f"--workdir={tmp_path / 'w'}"]
  out = _run_main(args, driver=_DRIVER, env_extra={"SIGNAL_AT": "3", "SIGNAL": "SIGTERM"})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "stop requested" in out.stderr
  stopped = checkpoint.Checkpointer(str(tmp_path / "w")).latest_step()
  assert stopped is not None and 2 <= stopped < STEPS
  out = _run_main(args)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"resumed from step {stopped}" in out.stderr
  _assert_same(_params(tmp_path / "w", ema=False), raw)
  _assert_same(_params(tmp_path / "w"), ema)
  # metrics.jsonl holds one history: no step twice after the resume.
  steps = [r["step"] for r in metrics_lib.read_jsonl(str(tmp_path / "w" / "metrics.jsonl"))]
  assert steps == [2, 3, 4, 6]


def test_kill_9_resumes_from_last_checkpoint_bitwise(data_dir, reference, tmp_path):
  _, raw, ema, _ = reference
  cfg = write_config_file(tiny_config(data_dir), tmp_path / "cfg.py")
  args = [f"--config={cfg}", f"--workdir={tmp_path / 'w'}"]
  # Batch fetches: steps 1-3, the validation batch at step 3, step 4 (saved
  # asynchronously), then SIGKILL while fetching step 5's batch, once step 2's
  # asynchronous save is final (step 4's may still be in flight).
  out = _run_main(args, driver=_DRIVER, env_extra={
      "SIGNAL_AT": "6", "SIGNAL": "SIGKILL", "WAIT_FOR": str(tmp_path / "w" / "checkpoints" / "2")})
  assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
  left = sorted(os.listdir(tmp_path / "w" / "checkpoints"))
  assert "2" in left, (left, out.stderr[-2000:])
  out = _run_main(args)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "resumed from step" in out.stderr, (left, out.stderr[-2000:])
  _assert_same(_params(tmp_path / "w", ema=False), raw)
  _assert_same(_params(tmp_path / "w"), ema)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  # An absurd learning rate blows the parameters up; the loss becomes NaN/Inf.
  config = tiny_config(data_dir, lr=1e30, warmup_steps=0, ckpt_every=1, steps=20,
                       eval_every=100, grad_clip=0.0)
  with pytest.raises(train.NonFiniteError, match="non-finite loss or gradient at step"):
    train.train(config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  steps = ckpt.all_steps()
  assert steps and max(steps) < 20
  for leaf in jax.tree.leaves(_params(tmp_path, ema=False)):
    assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize("objective,causal", [("arm", True), ("pi", True), ("mdm", False)])
def test_causal_models_do_not_see_later_tokens(objective, causal):
  config = tiny_config("/nonexistent")
  config.objective = objective
  if objective == "arm":
    config.data.ordering = "solver"
  if objective == "pi":
    config.data.pi_order = "uniform"
  task = experiment.build_task(config)
  model, model_config = experiment.build_model(config, task)
  length = model_config.seq_len
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))["params"]
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, model_config.vocab_size, (2, length)).astype(np.int32)
  cut = length // 2
  changed = tokens.copy()
  changed[:, cut + 1:] = (changed[:, cut + 1:] + 1) % model_config.vocab_size
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t, train=False))
  a, b = np.asarray(apply(params, tokens)), np.asarray(apply(params, changed))
  if causal:
    np.testing.assert_array_equal(a[:, :cut + 1], b[:, :cut + 1])
  else:
    assert not np.allclose(a[:, :cut + 1], b[:, :cut + 1])
  assert not np.allclose(a[:, cut + 1:], b[:, cut + 1:])


def test_grad_accumulation_matches_full_batch(data_dir):
  """ARM loss, no dropout, two identical micro-batches: same update as one batch."""
  config = tiny_config(data_dir, grad_accum=2)
  config.objective, config.data.ordering = "arm", "solver"
  config.model.overrides.dropout = 0.0
  results = []
  for accum in (1, 2):
    config.train.grad_accum = accum
    run = train.setup(config)
    examples = run.task.generate("train", 8, seed=0)
    enc = run.task.arm_encode(examples, "solver", np.random.default_rng(0))
    # Rows a::2 form micro-batch a: repeat each example twice so both are equal.
    batch = {k: np.repeat(np.asarray(v), 2, axis=0) for k, v in enc.items()}
    state, metrics = run.jit_train_step()(run.init_state(), batch)
    results.append((jax.tree.map(np.asarray, state["params"]), float(metrics["train/loss"])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  for x, y in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_bad_config_raises_one_line_value_error(data_dir, tmp_path):
  config = tiny_config(data_dir, batch_size=12)  # not divisible by 8 devices
  with pytest.raises(ValueError, match="divisible"):
    train.train(config, str(tmp_path))
  config = tiny_config(data_dir)
  config.objective = "gan"
  with pytest.raises(ValueError, match="config.objective"):
    train.train(config, str(tmp_path))


def test_bfloat16_compute_keeps_float32_params(data_dir):
  config = tiny_config(data_dir, warmup_steps=0)  # warm-up starts at lr 0
  config.model.dtype = "bfloat16"
  config.model.overrides.dropout = 0.0
  run = train.setup(config)
  assert run.model_config.dtype == "bfloat16"
  examples = run.task.generate("train", 16, seed=0)
  batch = {k: np.asarray(v) for k, v in run.task.mdm_encode(examples).items()}
  state = run.init_state()
  before = jax.tree.map(np.asarray, state["params"])
  state, metrics = run.jit_train_step()(state, batch)
  assert np.isfinite(float(metrics["train/loss"])) and int(state["bad_step"]) == -1
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"])):
    assert y.dtype == jnp.float32 and not np.array_equal(x, np.asarray(y))


def test_export_then_init_from_goes_on_from_the_step(data_dir, reference, tmp_path):
  workdir, raw, ema, _ = reference
  out = checkpoint.export_params(str(workdir), str(tmp_path / "export"))
  assert sorted(os.listdir(out)) == [checkpoint.EXPORT_META, checkpoint.EXPORT_ARRAYS]
  params, ema_params, step = checkpoint.load_init(out)
  assert step == STEPS
  _assert_same(params, raw)
  _assert_same(ema_params, ema)
  _assert_same(jax.tree.map(np.asarray, checkpoint.load_for_inference(out)[0]), ema)
  config = tiny_config(data_dir, steps=STEPS + 2, init_from=out)
  summary = train.train(config, str(tmp_path / "next"))
  assert summary["step"] == STEPS + 2
  assert checkpoint.Checkpointer(str(tmp_path / "next")).latest_step() == STEPS + 2


def test_init_from_a_different_model_is_a_one_line_error(data_dir, reference, tmp_path):
  workdir, _, _, _ = reference
  config = tiny_config(data_dir, init_from=str(workdir))
  config.model.overrides.d_model = 48
  with pytest.raises(ValueError, match="do not match the model"):
    train.train(config, str(tmp_path))


def test_max_seconds_stops_saves_and_reports(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=50, max_seconds=1e-6)
  summary = train.train(config, str(tmp_path))
  assert summary["timed_out"] and summary["step"] < 50
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == summary["step"]


@pytest.mark.parametrize("objective", ["mdm", "arm"])
def test_periodic_solve_rate_decodes_as_evaluation(data_dir, objective):
  """Training's solve rate (its batch sharded over the 8 test devices) generates the
  answers that evaluation's path generates on one device, token for token."""
  from mdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir, val_puzzles=8, val_strategy="margin")
  config.objective = objective
  config.data.ordering = "solver" if objective == "arm" else config.data.ordering
  config.sampler.num_steps = 4
  run = train.setup(config)
  assert run.mesh.devices.size == 8
  rate = train._SolveRate(run, experiment.dataset(config, run.task, "val", progress=False))
  params = run.init_state()["params"]
  key = jax.random.PRNGKey(5)
  got = rate.answers(params, key)
  strategy = "greedy" if objective == "arm" else "margin"
  ref = evaluate.evaluate_strategies(
      run.task, rate.examples, key=key, apply_fn=experiment.inference_fn(run.model),
      params=jax.device_get(params), strategies=(strategy,),
      arm_ordering=config.data.ordering if objective == "arm" else None,
      shard=False, time_it=False, **experiment.sampler_options(config))[strategy]
  assert got.shape == ref.tokens_NxL.shape == (8, run.task.mdm_layout().seq_len)
  np.testing.assert_array_equal(got, ref.tokens_NxL)
  assert rate(params, key) == ref.solved
