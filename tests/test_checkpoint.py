"""Checkpointer: round trip, retention, crash safety, cross-mesh restore, inference."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import grain
import jax
import ml_collections
import numpy as np
import pytest

from mdm_jax import checkpoint
from mdm_jax import sharding
from mdm_jax import train
from tiny import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _state(mesh):
  rng = np.random.default_rng(0)
  state = {
      "params": {"w": rng.standard_normal((64, 32)).astype(np.float32),
                 "b": rng.standard_normal((32,)).astype(np.float32)},
      "opt_state": ({"w": rng.standard_normal((64, 32)).astype(np.float32)},),
      "step": np.int32(7), "rng": np.asarray(jax.random.PRNGKey(3)),
  }
  state["ema_params"] = jax.tree.map(lambda x: 0.5 * x, state["params"])
  return jax.device_put(state, sharding.tree_shardings(state, mesh, min_size=16))


def _abstract(state, mesh):
  shardings = sharding.tree_shardings(state, mesh, min_size=16)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def _iterator(skip):
  it = iter(grain.MapDataset.range(1000).shuffle(seed=1).to_iter_dataset())
  for _ in range(skip):
    next(it)
  return it


CONFIG = ml_collections.ConfigDict({"seed": 1, "train": {"steps": 10}, "tags": ["a", "b"]})


def test_round_trip_onto_another_mesh_with_iterator_and_config(tmp_path):
  state = _state(sharding.make_mesh(4, 2))
  assert "fsdp" in tuple(state["params"]["w"].sharding.spec)
  it = _iterator(5)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(7, state, iterator=it, config=CONFIG, val_loss=1.5)
  expected_next = next(it)  # the saved position is before this element
  ckpt.close()

  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  restored_it = _iterator(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 7 and ckpt.best_step() == 7
  restored, data_ok = ckpt.restore(7, _abstract(state, one), iterator=restored_it)
  assert data_ok and next(restored_it) == expected_next
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert restored["params"]["w"].sharding.mesh.devices.size == 1
  assert ckpt.restore_config(7).to_dict() == CONFIG.to_dict()
  ckpt.close()


def test_retention_keeps_latest_and_best(tmp_path):
  state = _state(sharding.make_mesh(8, 1))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, keep_best=1)
  for step, val in ((1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 5.0), (6, None)):
    ckpt.save(step, state, iterator=None, config=CONFIG, val_loss=val)
    ckpt.wait()
  assert ckpt.all_steps() == [2, 5, 6]  # best (val 1.0) + the two latest
  assert ckpt.best_step() == 2
  ckpt.close()


def test_unfinished_save_is_ignored_and_redone(tmp_path):
  state = _state(sharding.make_mesh(8, 1))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(3, state, iterator=None, config=CONFIG)
  ckpt.close()
  # A crash during the save of step 5 leaves orbax's temporary directory behind.
  tmp = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp"
  (tmp / "params").mkdir(parents=True)
  (tmp / "params" / "junk").write_text("partial")
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 3
  assert not tmp.exists()
  params, config = checkpoint.load_for_inference(str(tmp_path))
  np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(state["ema_params"]["w"]))
  assert config.train.steps == 10
  # The rerun saves step 5 again over the debris.
  ckpt.save(5, state, iterator=None, config=CONFIG)
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [3, 5]
  params, _ = checkpoint.load_for_inference(str(tmp_path), ema=False)
  np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(state["params"]["w"]))


def test_load_for_inference_paths_and_errors(tmp_path):
  state = _state(sharding.make_mesh(4, 2))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, state, iterator=None, config=CONFIG)
  state2 = jax.tree.map(lambda x: x + 1 if x.dtype == np.float32 else x, state)
  ckpt.save(4, state2, iterator=None, config=CONFIG)
  ckpt.close()
  want = {2: state, 4: state2}
  for path, step, expect in ((tmp_path, None, 4), (tmp_path / "checkpoints", 2, 2),
                             (tmp_path / "checkpoints" / "2", None, 2)):
    for ema in (True, False):
      params, _ = checkpoint.load_for_inference(str(path), step=step, ema=ema)
      ref = want[expect]["ema_params" if ema else "params"]
      np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(ref["w"]))
      assert params["w"].sharding.is_fully_replicated
  with pytest.raises(ValueError, match="no checkpoints found"):
    checkpoint.load_for_inference(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="no checkpoint for step 3"):
    checkpoint.load_for_inference(str(tmp_path), step=3)


def test_preemption_watcher_turns_sigterm_into_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  with checkpoint.PreemptionWatcher() as watcher:
    assert not watcher.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.reached(2)
  assert signal.getsignal(signal.SIGTERM) == before


_RESTORE_ON_ONE_DEVICE = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    import jax, ml_collections, numpy as np
    from mdm_jax import checkpoint, train
    assert jax.device_count() == 1
    config = ml_collections.ConfigDict(json.load(open(sys.argv[1])))
    run = train.setup(config)
    target = {k: v for k, v in run.abstract_state.items() if k != "bad_step"}
    ckpt = checkpoint.Checkpointer(sys.argv[2])
    state, _ = ckpt.restore(ckpt.latest_step(), target)
    sums = [float(np.asarray(x, np.float64).sum()) for x in jax.tree.leaves(state)]
    params, _ = checkpoint.load_for_inference(sys.argv[2])
    sums.append(float(sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(params))))
    print("SUMS " + json.dumps(sums))
    """)


def test_train_state_written_on_8_devices_restores_on_1(tmp_path):
  config = tiny_config()
  config.model.overrides.update(mlp_dim=128, dropout=0.0)
  config.mesh.data, config.mesh.fsdp, config.mesh.min_shard_size = 4, 2, 1024
  config.train.batch_size = 16
  run = train.setup(config)
  state = run.init_state()
  assert any("fsdp" in tuple(x.sharding.spec) for x in jax.tree.leaves(state["params"]))
  state = {k: v for k, v in state.items() if k != "bad_step"}
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, state, iterator=None, config=config)
  ckpt.close()
  config.mesh.data, config.mesh.fsdp = -1, 1
  cfg = tmp_path / "config.json"
  cfg.write_text(config.to_json())
  out = subprocess.run([sys.executable, "-c", _RESTORE_ON_ONE_DEVICE, str(cfg), str(tmp_path)],
                       cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  sums = np.asarray(json.loads(out.stdout.split("SUMS ")[-1]))
  want = [float(np.asarray(x, np.float64).sum()) for x in jax.tree.leaves(state)]
  want.append(float(sum(np.asarray(x, np.float64).sum()
                        for x in jax.tree.leaves(state["ema_params"]))))
  np.testing.assert_allclose(sums, want, rtol=1e-12)


def test_export_layouts_bfloat16_and_command_line(tmp_path, capsys):
  state = _state(sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "w"))
  ckpt.save(7, state, iterator=None, config=CONFIG)
  ckpt.close()
  raw = jax.tree.map(np.asarray, state["params"])
  ema = jax.tree.map(np.asarray, state["ema_params"])
  out = str(tmp_path / "export")

  def files():
    return sorted(f for f in os.listdir(out) if not f.startswith("."))

  def meta():
    with open(os.path.join(out, checkpoint.EXPORT_META)) as f:
      return json.load(f)

  # One tree is 2080 float32 values (8.3 kB): split in two files, still float32.
  checkpoint.export_params(str(tmp_path / "w"), out, dtype="auto", max_file_bytes=10_000)
  assert files() == ["ema_params.npz", "export.json", "params.npz"]
  assert meta()["dtype"] == "float32" and meta()["step"] == 7
  params, ema_params, step = checkpoint.load_init(out)
  assert step == 7
  for a, b in zip(jax.tree.leaves((raw, ema)), jax.tree.leaves((params, ema_params))):
    np.testing.assert_array_equal(a, b)

  # Smaller files: bfloat16 (read back as float32, within bfloat16 rounding).
  checkpoint.export_params(str(tmp_path / "w"), out, dtype="auto", max_file_bytes=6_000)
  assert meta()["dtype"] == "bfloat16"
  assert all(os.path.getsize(os.path.join(out, f)) <= 6_000 for f in files())
  params, ema_params, _ = checkpoint.load_init(out)
  for a, b in zip(jax.tree.leaves((raw, ema)), jax.tree.leaves((params, ema_params))):
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=2**-8, atol=0)
  inference, config = checkpoint.load_for_inference(out)
  np.testing.assert_allclose(np.asarray(inference["w"]), ema["w"], rtol=2**-8)
  assert config.to_dict() == CONFIG.to_dict()

  with pytest.raises(ValueError, match="do not fit"):
    checkpoint.export_params(str(tmp_path / "w"), out, max_file_bytes=3_000)

  # The command line; a one-file layout removes the split file of before.
  assert checkpoint.main(["export", str(tmp_path / "w"), out, "--dtype", "bfloat16"]) == 0
  assert "exported step 7 (bfloat16: params.npz" in capsys.readouterr().out
  assert files() == ["export.json", "params.npz"]
  assert checkpoint.main(["export", str(tmp_path / "nothing"), out]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
