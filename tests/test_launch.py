"""Launch scripts: --dry-run output, argument errors, shellcheck."""
import os
import pathlib
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"


def _run(script, *args):
  return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True,
                        text=True, timeout=60, cwd=ROOT)


def _commands(stdout):
  return [shlex.split(line.rstrip(" &")) for line in stdout.splitlines()
          if line.strip() and not line.startswith("#") and line.strip() != "wait"]


def test_tpu_pod_dry_run_addresses_all_workers():
  r = _run("tpu_pod.sh", "--name", "mdm", "--zone", "us-central2-b",
           "--accelerator-type", "v4-32", "--config", "configs/sudoku_mdm.py:paper",
           "--workdir", "gs://bucket/run", "--dry-run", "--", "--config.train.steps=7")
  assert r.returncode == 0, r.stderr
  cmds = _commands(r.stdout)
  create = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]]
  assert create and "--accelerator-type=v4-32" in create[0]
  remote = [c for c in cmds if c[:5] in (["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
                                         ["gcloud", "compute", "tpus", "tpu-vm", "scp"])]
  assert len(remote) == 3  # copy, install, run
  assert all("--worker=all" in c and "--zone=us-central2-b" in c for c in remote)
  run_cmd = [a for a in remote[-1] if a.startswith("--command=")][0]
  inner = shlex.split(run_cmd[len("--command="):])
  assert "mdm_jax.main" in inner
  assert "--workdir=gs://bucket/run" in inner
  assert "--config=configs/sudoku_mdm.py:paper" in inner
  assert "--config.train.steps=7" in inner
  install = [a for a in remote[1] if a.startswith("--command=")][0]
  assert "[tpu]" in install


def test_tpu_pod_requires_bucket_workdir():
  r = _run("tpu_pod.sh", "--name", "mdm", "--zone", "z", "--config", "c.py",
           "--workdir", "/local/dir", "--dry-run")
  assert r.returncode == 2
  assert "gs://" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_slurm_dry_run_layouts():
  per_node = _run("slurm.sh", "--config", "configs/sudoku_mdm.py:paper", "--workdir",
                  "/shared/run", "--nodes", "4", "--gpus-per-node", "8", "--dry-run")
  assert per_node.returncode == 0, per_node.stderr
  (cmd,) = _commands(per_node.stdout)
  assert cmd[0] == "sbatch" and "--nodes=4" in cmd and "--ntasks-per-node=1" in cmd
  assert "--gpus-per-node=8" in cmd
  export = [a for a in cmd if a.startswith("--export=")][0]
  assert "MDM_WORKDIR=/shared/run" in export and "MDM_CONFIG=configs/sudoku_mdm.py:paper" in export
  assert cmd[-1].endswith("launch/gpu_slurm.sbatch")
  per_gpu = _run("slurm.sh", "--config", "c.py:x", "--workdir", "/w", "--nodes", "2",
                 "--per-gpu", "--dry-run")
  (cmd,) = _commands(per_gpu.stdout)
  assert "--ntasks-per-node=8" in cmd and "--gpus-per-task=1" in cmd


def test_sbatch_script_requeues_and_resumes():
  text = (LAUNCH / "gpu_slurm.sbatch").read_text()
  assert "#SBATCH --requeue" in text
  assert "#SBATCH --signal=" in text
  assert "scontrol requeue" in text
  assert "MDM_JAX_DISTRIBUTED=1" in text


def test_local_dry_run_multi_process():
  r = _run("local.sh", "--config", "configs/sudoku_mdm.py:demo", "--workdir", "/tmp/w",
           "--processes", "3", "--port", "23456", "--dry-run")
  assert r.returncode == 0, r.stderr
  cmds = _commands(r.stdout)
  assert len(cmds) == 3
  for i, c in enumerate(cmds):
    assert "--coordinator_address=127.0.0.1:23456" in c
    assert "--num_processes=3" in c and f"--process_id={i}" in c
    assert "--workdir=/tmp/w" in c


@pytest.mark.parametrize("script", ["local.sh", "slurm.sh", "tpu_pod.sh"])
def test_help_and_bad_flags(script):
  r = _run(script, "--help")
  assert r.returncode == 0 and "Usage:" in r.stdout
  r = _run(script, "--no-such-flag")
  assert r.returncode == 2 and "unknown option" in r.stderr


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    if os.environ.get("CI"):
      pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    pytest.skip("shellcheck not installed")
  files = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
  r = subprocess.run(["shellcheck", "-x", *files], capture_output=True, text=True,
                     cwd=ROOT)
  assert r.returncode == 0, r.stdout


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_local_two_processes_train_checkpoint_and_resume(tmp_path):
  """Two JAX processes on 127.0.0.1 through launch/local.sh: train, save, resume."""
  import importlib.util
  import sys
  spec = importlib.util.spec_from_file_location("mdm_jax_configs_common",
                                                ROOT / "configs" / "common.py")
  common = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(common)
  c = common.base_config()
  c.task.name = "lo_nae_sat"
  c.task.params = {"num_latents": 6, "num_obs": 10}
  c.data.dir = str(tmp_path / "data")
  c.data.num_train, c.data.num_val, c.data.shard_size = 128, 32, 128
  c.model.preset = "tiny"
  c.model.overrides.num_layers, c.model.overrides.d_model = 1, 32
  c.model.overrides.mlp_dim = 64
  c.mesh.data, c.mesh.fsdp = 2, 2
  c.train.update(steps=2, batch_size=8, warmup_steps=1, log_every=1, eval_every=100,
                 ckpt_every=2, val_batches=1, val_puzzles=0)
  c.eval.after_train = False
  (tmp_path / "config.json").write_text(c.to_json())
  (tmp_path / "config.py").write_text(
      "import json, ml_collections\n"
      "def get_config(arg=None):\n"
      f"  return ml_collections.ConfigDict(json.load(open({str(tmp_path / 'config.json')!r})))\n")
  workdir = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")

  def launch(steps):
    return subprocess.run(
        ["bash", str(LAUNCH / "local.sh"), "--config", str(tmp_path / "config.py"),
         "--workdir", str(workdir), "--processes", "2", "--cpu-devices", "2",
         "--port", str(_free_port()), "--python", sys.executable, "--",
         f"--config.train.steps={steps}"],
        capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)

  first = launch(2)
  assert first.returncode == 0, first.stderr[-3000:]
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [2]
  second = launch(3)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 2" in second.stderr
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 3
