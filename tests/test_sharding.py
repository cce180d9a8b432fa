"""Mesh, partition rules, batch assembly; 1 vs 8 devices; two processes."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mdm_jax import sharding
from mdm_jax import experiment
from mdm_jax import train
from tiny import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config(data_dir="/nonexistent", **train_overrides):
  c = tiny_config(data_dir, **{"steps": 4, "warmup_steps": 1, "eval_every": 4,
                               "keep": 3, **train_overrides})
  c.model.overrides.mlp_dim = 128
  c.mesh.min_shard_size = 1024
  return c


def test_fsdp_spec_picks_largest_divisible_dim():
  assert sharding.fsdp_spec((64, 256), 2, min_size=16) == P(None, "fsdp")
  assert sharding.fsdp_spec((256, 64), 2, min_size=16) == P("fsdp", None)
  assert sharding.fsdp_spec((6, 9), 4, min_size=16) == P()  # nothing divisible
  assert sharding.fsdp_spec((6, 8), 4, min_size=16) == P(None, "fsdp")
  assert sharding.fsdp_spec((64,), 2, min_size=1000) == P()  # small: replicated
  assert sharding.fsdp_spec((), 2, min_size=0) == P()
  assert sharding.fsdp_spec((64, 256), 1, min_size=0) == P()  # no fsdp axis


def test_mesh_shape_resolution_and_errors():
  assert sharding.mesh_shape(-1, 2, 8) == (4, 2)
  assert sharding.mesh_shape(8, 1, 8) == (8, 1)
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.mesh_shape(3, 2, 8)
  with pytest.raises(ValueError, match="does not divide"):
    sharding.mesh_shape(-1, 3, 8)
  mesh = sharding.make_mesh(4, 2)
  assert mesh.axis_names == ("data", "fsdp") and mesh.devices.shape == (4, 2)


def test_global_batch_splits_rows_over_all_devices():
  mesh = sharding.make_mesh(4, 2)
  tokens = np.arange(16 * 3).reshape(16, 3)
  lengths = np.arange(16)
  batch = sharding.global_batch({"tokens": tokens, "len": lengths}, mesh)
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), tokens)
  np.testing.assert_array_equal(np.asarray(batch["len"]), lengths)
  shard_rows = {s.data.shape[0] for s in batch["tokens"].addressable_shards}
  assert shard_rows == {2}  # 16 rows over 8 devices
  assert sharding.check_batch_size(16, mesh) == 16
  with pytest.raises(ValueError, match="divisible"):
    sharding.check_batch_size(12, mesh)


@pytest.fixture(scope="module")
def batches():
  config = _tiny_config()
  task = experiment.build_task(config)
  enc = task.mdm_encode(task.generate("train", 48, seed=0))
  return [{k: np.asarray(v[16 * i:16 * (i + 1)]) for k, v in enc.items()} for i in range(3)]


def _three_steps(config, mesh, batches):
  run = train.setup(config, mesh=mesh)
  state = run.init_state()
  step = run.jit_train_step()
  losses = []
  for b in batches:
    state, m = step(state, sharding.global_batch(b, mesh))
    losses.append(float(m["train/loss"]))
  return losses, state


@pytest.mark.slow  # end-to-end, > 45 s: CI runs it (-m slow), the default run does not
def test_one_device_and_eight_devices_agree(batches):
  config = _tiny_config()
  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  ref_losses, ref_state = _three_steps(config, one, batches)
  for data, fsdp in ((8, 1), (4, 2)):
    mesh = sharding.make_mesh(data, fsdp)
    losses, state = _three_steps(config, mesh, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(ref_state["params"]), jax.tree.leaves(state["params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)
    if fsdp > 1:  # large params and their Adam moments really are split over 'fsdp'
      specs = [x.sharding.spec for x in jax.tree.leaves(state["params"])]
      assert any("fsdp" in tuple(s) for s in specs)
      mu = [x.sharding.spec for x in jax.tree.leaves(state["opt_state"]) if x.ndim == 2]
      assert any("fsdp" in tuple(s) for s in mu)


_WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    from mdm_jax import sharding, train
    import ml_collections
    address, pid, cfg, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sharding.initialize_distributed(address, 2, pid)
    config = ml_collections.ConfigDict(json.load(open(cfg)))
    summary = train.train(config, workdir)
    print("SUMMARY " + json.dumps({k: v for k, v in summary.items()
                                   if isinstance(v, (int, float, bool))}))
    """)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # end-to-end, > 45 s: CI runs it (-m slow), the default run does not
def test_two_processes_train_together_agree_and_stop_together(tmp_path):
  """jax.distributed on 127.0.0.1: FSDP over both processes; SIGTERM to one of them
  stops both at the same step (JAX's preemption sync point), with a checkpoint."""
  from mdm_jax import checkpoint
  from mdm_jax.data import store
  config = _tiny_config(tmp_path / "data", steps=300, log_every=2, eval_every=4,
                        ckpt_every=1000)
  config.mesh.data, config.mesh.fsdp = 4, 2  # FSDP across the two processes
  task = experiment.build_task(config)
  for split, num, seed in (("train", 256, 0), ("test", 32, 1)):
    store.ensure_dataset(task, split, num, seed, str(tmp_path / "data"), shard_size=256,
                         progress=False)
  cfg = tmp_path / "config.json"
  cfg.write_text(config.to_json())
  address = f"127.0.0.1:{_free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  logs = [open(tmp_path / f"p{i}.log", "w+") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, address, str(i), str(cfg),
                             str(tmp_path / "w")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=logs[i], text=True)
           for i in range(2)]
  try:
    deadline = time.time() + 240
    while "step 4/300" not in (tmp_path / "p0.log").read_text():
      assert time.time() < deadline and procs[0].poll() is None, (
          (tmp_path / "p0.log").read_text()[-3000:])
      time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    outs = []
    for i, p in enumerate(procs):
      out, _ = p.communicate(timeout=240)
      assert p.returncode == 0, (tmp_path / f"p{i}.log").read_text()[-3000:]
      outs.append(json.loads(out.split("SUMMARY ")[-1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for log in logs:
      log.close()
  assert outs[0]["preempted"] and outs[1]["preempted"]
  assert 4 <= outs[0]["step"] == outs[1]["step"] < 300
  for key in ("train/loss", "val/loss"):
    assert np.isfinite(outs[0][key]) and outs[0][key] == outs[1][key]
  assert checkpoint.Checkpointer(str(tmp_path / "w")).latest_step() == outs[0]["step"]
  params, saved = checkpoint.load_for_inference(str(tmp_path / "w"))
  assert saved.mesh.fsdp == 2
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
