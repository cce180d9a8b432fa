"""Launch scripts: --dry-run output, argument errors, shellcheck, CPU runs."""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile

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


def _sbatch_directives(text):
  """The #SBATCH options sbatch reads: the comment block before the first command."""
  out = []
  for line in text.splitlines():
    if line.startswith("#SBATCH"):
      out.append(line.split(None, 1)[1])
    elif line.strip() and not line.startswith("#"):
      break
  return out


# Stand-ins for SLURM's srun and scontrol: they log what they were called with; srun
# records MDM_JAX_DISTRIBUTED, then exits with $SRUN_EXIT or (unset) runs until
# SIGTERM, which it logs.
_FAKE_SRUN = """#!/usr/bin/env bash
echo "srun $* MDM_JAX_DISTRIBUTED=${MDM_JAX_DISTRIBUTED:-}" >> "$FAKE_LOG"
[[ -n "${SRUN_EXIT:-}" ]] && exit "$SRUN_EXIT"
trap 'echo "srun got TERM" >> "$FAKE_LOG"; exit 0' TERM
touch "$FAKE_LOG.started"
while true; do sleep 0.05; done
"""
_FAKE_SCONTROL = """#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
"""


def _sbatch_env(tmp_path, **extra):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for name, body in (("srun", _FAKE_SRUN), ("scontrol", _FAKE_SCONTROL)):
    (bin_dir / name).write_text(body)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "log"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_LOG=str(log), SLURM_JOB_ID="4242", MDM_CONFIG="configs/x.py:paper",
             MDM_WORKDIR="/shared/run", MDM_REPO=str(ROOT), MDM_PYTHON="python9",
             MDM_EXTRA_FLAGS="--config.train.steps=3 --config.seed=1")
  env.update(extra)
  return env, log


def test_sbatch_script_requeues_and_resumes(tmp_path):
  directives = _sbatch_directives((LAUNCH / "gpu_slurm.sbatch").read_text())
  assert "--requeue" in directives
  assert any(re.fullmatch(r"--signal=B:USR1@\d+", d) for d in directives), directives
  env, log = _sbatch_env(tmp_path)
  job = subprocess.Popen(["bash", str(LAUNCH / "gpu_slurm.sbatch")], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  started = pathlib.Path(f"{log}.started")
  for _ in range(200):
    if started.exists() or job.poll() is not None:
      break
    time.sleep(0.05)
  assert started.exists(), job.communicate(timeout=10)
  job.send_signal(signal.SIGUSR1)  # what SLURM sends before the time limit
  out, err = job.communicate(timeout=30)
  assert job.returncode == 0, err
  calls = log.read_text().splitlines()
  assert calls[0] == ("srun --kill-on-bad-exit=1 python9 -m mdm_jax.main "
                      "--config=configs/x.py:paper --workdir=/shared/run --mode=train "
                      "--config.train.steps=3 --config.seed=1 MDM_JAX_DISTRIBUTED=1")
  assert calls[1:] == ["srun got TERM", "scontrol requeue 4242"], calls
  assert "requeueing" in out


def test_sbatch_script_passes_the_exit_status_without_requeue(tmp_path):
  env, log = _sbatch_env(tmp_path, SRUN_EXIT="3", MDM_MODE="eval", MDM_EXTRA_FLAGS="")
  r = subprocess.run(["bash", str(LAUNCH / "gpu_slurm.sbatch")], env=env, cwd=tmp_path,
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 3, r.stderr
  calls = log.read_text().splitlines()
  assert len(calls) == 1 and "--mode=eval MDM_JAX_DISTRIBUTED=1" in calls[0]
  assert not any(c.startswith("scontrol") for c in calls)


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


@pytest.mark.parametrize("script", ["local.sh", "slurm.sh", "tpu_pod.sh", "gpu_sudoku.sh",
                                    "fetch_wheels.sh"])
def test_help_and_bad_flags(script):
  r = _run(script, "--help")
  assert r.returncode == 0 and "Usage:" in r.stdout
  r = _run(script, "--no-such-flag")
  assert r.returncode == 2 and "unknown option" in r.stderr


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    if os.environ.get("CI") == "true":
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


@pytest.mark.slow  # end-to-end, > 45 s: CI runs it (-m slow), the default run does not
def test_local_two_processes_train_checkpoint_and_resume(tmp_path):
  """Two JAX processes on 127.0.0.1 through launch/local.sh: train, save, resume."""
  import sys
  from tiny import tiny_config  # pylint: disable=g-import-not-at-top
  c = tiny_config(tmp_path / "data", steps=2, batch_size=8, warmup_steps=1, log_every=1,
                  eval_every=100, ckpt_every=2, keep=3)
  c.task.name = "lo_nae_sat"
  c.task.params = {"num_latents": 6, "num_obs": 10}
  c.data.num_train, c.data.num_val, c.data.shard_size = 128, 32, 128
  c.model.overrides.dropout = 0.0
  c.mesh.data, c.mesh.fsdp = 2, 2
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


def test_fetch_wheels_dry_run_pins_cp312_manylinux_wheels():
  r = _run("fetch_wheels.sh", "--python", "python3", "--dry-run")
  assert r.returncode == 0, r.stderr
  (cmd,) = _commands(r.stdout)
  assert cmd[:4] == ["python3", "-m", "pip", "download"]
  for flag in ("--no-deps", "--only-binary=:all:"):
    assert flag in cmd
  assert cmd[cmd.index("--python-version") + 1] == "3.12"
  assert "manylinux2014_x86_64" in cmd and cmd[cmd.index("-d") + 1].endswith(".whl/.download")
  pins = dict(a.split("==") for a in cmd if "==" in a)
  assert sorted(pins) == ["array-record", "grain", "ml-collections", "portpicker",
                          "tensorboardX"]


def test_gpu_sudoku_dry_run(tmp_path):
  out, prev = tmp_path / "out", tmp_path / "prev"
  r = _run("gpu_sudoku.sh", "--out", str(out), "--init", str(prev), "--work", "/w",
           "--dry-run", "--", "--config.train.steps=7")
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
  cmds = _commands(r.stdout)
  install = [c for c in cmds if c[1:4] == ["-m", "pip", "install"]]
  assert len(install) == 1
  for flag in ("--no-index", "--no-deps", "--target"):
    assert flag in install[0]
  assert install[0][-1] == f"{ROOT}/.whl/*.whl"
  assert ["export", f"PYTHONPATH={ROOT}:/tmp/mdm_site"] in cmds
  main = [c for c in cmds if "mdm_jax.main" in c]
  modes = [[a for a in c if a.startswith("--mode=")][0] for c in main]
  assert modes == ["--mode=data", "--mode=data", "--mode=train", "--mode=eval"]
  data_args = {a for a in main[2] if a.startswith(("--config=", "--config.data.",
                                                   "--config.sampler.", "--config.eval.num"))}
  assert f"--config={ROOT}/configs/sudoku_mdm.py:gpu" in data_args
  for c in main:  # every step reads the same data and config
    assert data_args <= set(c), c
    assert c[-1] == "--config.train.steps=7"
  assert main[0][:2] == ["env", "JAX_PLATFORMS=cpu"] and "--data_splits=train,val" in main[0]
  assert "--data_splits=eval" in main[1]
  assert [l for l in lines if "--data_splits=eval" in l][0].endswith(" &")  # background
  train_cmd = main[2]
  for arg in ("--workdir=/w", "--config.train.max_seconds=480",
              f"--config.train.init_from={prev}/params", "--config.eval.after_train=False"):
    assert arg in train_cmd
  assert "--workdir=/w" in main[3]
  (export,) = [c for c in cmds if "mdm_jax.checkpoint" in c]
  assert export[:2] == ["env", "JAX_PLATFORMS=cpu"]
  assert export[-6:] == ["/w", f"{out}/params", "--dtype", "auto", "--max-file-mib", "15"]
  assert any(c[-2:] == ["/w/metrics.jsonl", f"{out}/metrics.jsonl"] for c in cmds)
  r = _run("gpu_sudoku.sh", "--out", str(out), "--no-install", "--dry-run")
  assert r.returncode == 0 and "pip install" not in r.stdout
  assert "--config.train.init_from" not in r.stdout


@pytest.mark.parametrize("args,pattern", [
    (["--out", "o", "--minutes", "x"], "--minutes"),
    (["--out", "o", "--num-hard", "0"], ">= 1"),
    (["--minutes", "1"], "--out is required"),
    (["--out"], "needs a value"),
    (["--out", "o", "--init", "/nonexistent"], "export.json"),
    (["--out", "o", "--wheels", "/nonexistent"], "fetch_wheels.sh"),
])
def test_gpu_sudoku_argument_errors_are_one_line(args, pattern):
  r = _run("gpu_sudoku.sh", *args)
  assert r.returncode == 2 and pattern in r.stderr, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1


# A 10k-parameter model on 6x6 Sudoku, a few steps: the whole script in seconds.
_TINY = ["--config.train.batch_size=16", "--config.train.warmup_steps=1",
         "--config.train.log_every=2", "--config.train.eval_every=4",
         "--config.train.ckpt_every=4", "--config.train.val_batches=1",
         "--config.train.val_puzzles=0", "--config.data.num_val=32",
         "--config.model.overrides.num_layers=1",
         "--config.model.overrides.d_model=32", "--config.model.overrides.mlp_dim=64",
         "--config.model.overrides.num_heads=2"]
_BACK = re.compile(r"^([A-Za-z0-9._-]+/){0,2}[A-Za-z0-9._-]+$")


def _gpu_sudoku_cpu(tmp_path, name, steps, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"))
  r = subprocess.run(
      ["bash", str(LAUNCH / "gpu_sudoku.sh"), "--out", str(tmp_path / name), "--no-install",
       "--python", sys.executable, "--config", "configs/sudoku_mdm.py:demo",
       "--num-train", "256", "--num-test", "16", "--num-hard", "8", "--shard-size", "64",
       "--strategies", "margin", "--data", str(tmp_path / "data"),
       "--work", str(tmp_path / f"{name}_work"), *args, "--",
       f"--config.train.steps={steps}", *_TINY],
      capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
  assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
  out = tmp_path / name
  files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
  assert files == ["figures.zip", "metrics.jsonl", "params/export.json", "params/params.npz",
                   "results.json", "results.md", "train_log.txt"]
  assert all(_BACK.match(f) and (out / f).stat().st_size < 16 * 2**20 for f in files)
  assert "all can be brought back" in r.stdout
  result = json.loads((out / "results.json").read_text())
  assert sorted(result["splits"]) == ["hard", "test"]
  assert list(result["splits"]["hard"]["strategies"]) == ["margin"]
  assert result["splits"]["test"]["num_puzzles"] == 16
  with zipfile.ZipFile(out / "figures.zip") as z:
    assert "loss_curves.png" in z.namelist() and len(z.namelist()) >= 4
  log = (out / "train_log.txt").read_text()
  assert "devices: [CpuDevice" in log and f"step {steps}/{steps}" in log
  meta = json.loads((out / "params" / "export.json").read_text())
  assert meta["step"] == result["step"] == steps and meta["dtype"] == "float32"
  return out, log


@pytest.mark.slow  # end-to-end, > 45 s: CI runs it (-m slow), the default run does not
def test_gpu_sudoku_on_cpu_then_continue_from_its_params(tmp_path):
  first, _ = _gpu_sudoku_cpu(tmp_path, "first", 4)
  second, log = _gpu_sudoku_cpu(tmp_path, "second", 8, "--init", str(first))
  assert f"initialised from {first}/params (step 4" in log
  steps = [json.loads(l)["step"] for l in (second / "metrics.jsonl").read_text().splitlines()]
  assert min(steps) > 4 and max(steps) == 8
