"""Tests for mdm_jax.data.store and the `python -m mdm_jax.data` CLI."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mdm_jax.data import __main__ as cli
from mdm_jax.data import base, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
VOCAB, LENGTH, PROMPT = 10, 12, 3


class DummyTask(base.Task):
  """Random integer sequences; the first PROMPT positions are the prompt."""

  name = "_test_dummy"
  splits = ("train", "test")
  arm_orderings = ("row_major", "reverse")
  fail_on_seed: int | None = None  # generate raises once for this shard seed
  sleep_s = 0.0

  def __init__(self, length: int = LENGTH):
    self.length = length

  def params(self):
    return {"length": self.length}

  def generate(self, split, num, seed):
    if seed == DummyTask.fail_on_seed:
      DummyTask.fail_on_seed = None
      raise RuntimeError("simulated crash")
    time.sleep(self.sleep_s)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    x = rng.integers(0, VOCAB, (num, self.length)).astype(np.int8)
    return {"x": x, "label": x.sum(axis=1).astype(np.int32)}

  def mdm_layout(self):
    return base.Layout(seq_len=self.length, vocab_size=VOCAB + 1, mask_id=VOCAB)

  def mdm_encode(self, examples):
    x = examples["x"]
    maskable = np.ones(x.shape, bool)
    maskable[:, :PROMPT] = False
    return {"tokens": x.astype(np.int32), "maskable": maskable}

  def check(self, examples, tokens_NxL):
    correct = tokens_NxL == examples["x"]
    return {"solved": correct.all(axis=1), "correct": correct}

  def arm_encode(self, examples, ordering, rng=None):
    x = examples["x"].astype(np.int32)
    if ordering == "reverse":
      x = np.concatenate([x[:, :PROMPT], x[:, PROMPT:][:, ::-1]], axis=1)
    n = x.shape[0]
    loss_mask = np.zeros(x.shape, bool)
    loss_mask[:, PROMPT:] = True
    return {"tokens": x, "loss_mask": loss_mask,
            "prompt_len": np.full((n,), PROMPT, np.int32)}

  def augment(self, examples, rng):
    """Relabels symbols with one random permutation per example."""
    x = examples["x"]
    perms = np.argsort(rng.random((x.shape[0], VOCAB)), axis=1)
    out = dict(examples)
    out["x"] = np.take_along_axis(perms, x.astype(np.int64), axis=1).astype(x.dtype)
    return out


class SlowTask(DummyTask):
  name = "_test_slow"
  sleep_s = 0.1


class PreferTask(DummyTask):
  """A task with its own preferred shard size and a versioned 'test' generator."""
  name = "_test_prefer"
  version = 2

  def preferred_shard_size(self, split):
    return 7

  def data_identity(self, split):
    return {"test_generator_version": PreferTask.version} if split == "test" else {}


@pytest.fixture
def registered(monkeypatch):
  """Registers the dummy tasks for `get_task` / the CLI, for one test only."""
  monkeypatch.setitem(base._REGISTRY, DummyTask.name, DummyTask)
  monkeypatch.setitem(base._REGISTRY, SlowTask.name, SlowTask)
  monkeypatch.setitem(base._REGISTRY, PreferTask.name, PreferTask)
  monkeypatch.setattr(DummyTask, "fail_on_seed", None)


def _file_bytes(path):
  return {n: open(os.path.join(path, n), "rb").read()
          for n in sorted(os.listdir(path)) if n.startswith("shard-")}


def _rows(tokens):
  return [tuple(r) for r in np.asarray(tokens)]


# ---------------------------------------------------------------------------
# Generation.


def test_generate_writes_manifest_and_shards(tmp_path):
  task = DummyTask()
  path = store.ensure_dataset(task, "train", 23, 5, str(tmp_path), shard_size=10,
                              progress=False)
  assert path == os.path.join(str(tmp_path), f"_test_dummy-{store.params_hash({'length': 12})}",
                              "train-s5-n23")
  m = store.read_manifest(path)
  assert (m["task"], m["params"], m["split"], m["seed"], m["num"]) == (
      "_test_dummy", {"length": 12}, "train", 5, 23)
  assert m["complete"] and m["num_shards"] == 3
  assert [m["shards"][str(i)]["count"] for i in range(3)] == [10, 10, 3]
  for i in range(3):
    for key, info in m["shards"][str(i)]["files"].items():
      data = open(os.path.join(path, info["name"]), "rb").read()
      assert len(data) == info["bytes"]
      assert hashlib.sha256(data).hexdigest() == info["sha256"]
  ex = store.load_examples(path)
  assert ex["x"].shape == (23, 12) and ex["x"].dtype == np.int8
  np.testing.assert_array_equal(ex["label"], ex["x"].sum(axis=1))
  # Shard i is generate(count_i, seed=shard_seed(seed, split, i)).
  want = np.concatenate([task.generate("train", c, store.shard_seed(5, "train", i))["x"]
                         for i, c in enumerate([10, 10, 3])])
  np.testing.assert_array_equal(ex["x"], want)
  # Shards differ from each other; splits differ.
  assert len(set(_rows(ex["x"]))) == 23
  seeds = {store.shard_seed(5, "train", i) for i in range(100)}
  assert len(seeds) == 100 and store.shard_seed(5, "test", 0) not in seeds


def test_complete_dataset_returns_without_generating(tmp_path, monkeypatch):
  task = DummyTask()
  path = store.ensure_dataset(task, "train", 20, 0, str(tmp_path), shard_size=10,
                              progress=False)
  before = _file_bytes(path)
  monkeypatch.setattr(DummyTask, "generate", lambda *a, **k: pytest.fail("regenerated"))
  assert store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False,
                              verify=True) == path
  assert _file_bytes(path) == before


def test_resume_after_crash_matches_uninterrupted(tmp_path):
  task = DummyTask()
  ref = store.ensure_dataset(task, "train", 45, 3, str(tmp_path / "ref"), shard_size=10,
                             progress=False)
  DummyTask.fail_on_seed = store.shard_seed(3, "train", 2)
  with pytest.raises(RuntimeError, match="simulated crash"):
    store.ensure_dataset(task, "train", 45, 3, str(tmp_path / "b"), shard_size=10,
                         progress=False)
  path = os.path.join(str(tmp_path / "b"), os.path.relpath(ref, str(tmp_path / "ref")))
  m = store.read_manifest(path)
  assert sorted(m["shards"]) == ["0", "1"] and not m["complete"]
  with pytest.raises(store.DatasetError, match="incomplete"):
    store.load_examples(path)
  # Resuming regenerates only the missing shards.
  shard0 = os.path.join(path, "shard-00000.x.npy")
  mtime = os.stat(shard0).st_mtime_ns
  assert store.ensure_dataset(task, "train", 45, 3, str(tmp_path / "b"),
                              progress=False) == path
  assert os.stat(shard0).st_mtime_ns == mtime
  assert _file_bytes(path) == _file_bytes(ref)
  assert store.read_manifest(path)["shards"] == store.read_manifest(ref)["shards"]


def test_resume_after_losing_a_shard_and_its_entry(tmp_path):
  task = DummyTask()
  path = store.ensure_dataset(task, "test", 30, 1, str(tmp_path), shard_size=10,
                              progress=False)
  ref = _file_bytes(path)
  m = store.read_manifest(path)
  for info in m["shards"]["1"]["files"].values():
    os.unlink(os.path.join(path, info["name"]))
  del m["shards"]["1"]
  m["complete"] = False
  store._write_manifest(path, m)
  store.ensure_dataset(task, "test", 30, 1, str(tmp_path), progress=False)
  assert _file_bytes(path) == ref and store.is_complete(store.read_manifest(path))


def test_kill_minus_9_mid_generation_then_resume(tmp_path):
  """A generator killed at an arbitrary moment leaves a resumable dataset."""
  out = str(tmp_path / "killed")
  script = (f"import sys; sys.path[:0] = [{TESTS!r}, {ROOT!r}]\n"
            "import test_store\nfrom mdm_jax.data import store\n"
            f"store.ensure_dataset(test_store.SlowTask(), 'train', 60, 7, {out!r}, "
            "shard_size=2, progress=False)\n")
  proc = subprocess.Popen([sys.executable, "-c", script])
  path = store.dataset_dir(SlowTask(), "train", 60, 7, out)
  deadline = time.time() + 60
  try:
    while time.time() < deadline:
      m = store.read_manifest(path) if os.path.isdir(path) else None
      if m and len(m["shards"]) >= 3:
        break
      assert proc.poll() is None, "generator exited early"
      time.sleep(0.02)
    else:
      pytest.fail("generator made no progress")
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  m = store.read_manifest(path)
  assert 3 <= len(m["shards"]) < 30, "the kill should land mid-way"
  fast = DummyTask()  # same examples as SlowTask (same params), no sleep
  assert fast.params() == SlowTask().params()
  fast.name = SlowTask.name  # the manifest identity includes the task name
  store.ensure_dataset(fast, "train", 60, 7, out, progress=False, verify=True)
  ref = store.ensure_dataset(fast, "train", 60, 7, str(tmp_path / "ref"), shard_size=2,
                             progress=False)
  assert _file_bytes(path) == _file_bytes(ref)
  assert not [n for n in os.listdir(path) if ".tmp-" in n]


def test_concurrent_writers_share_one_dataset(tmp_path):
  """Two processes (e.g. hosts on one file system) asking at once get one dataset."""
  out = str(tmp_path / "shared")
  script = (f"import sys; sys.path[:0] = [{TESTS!r}, {ROOT!r}]\n"
            "import test_store\nfrom mdm_jax.data import store\n"
            f"print(store.ensure_dataset(test_store.SlowTask(), 'train', 12, 1, {out!r}, "
            "shard_size=2, progress=False))\n")
  procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True) for _ in range(2)]
  outs = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1]
  fast = DummyTask()
  fast.name = SlowTask.name
  ref = store.ensure_dataset(fast, "train", 12, 1, str(tmp_path / "ref"), shard_size=2,
                             progress=False)
  assert _file_bytes(outs[0]) == _file_bytes(ref)


def test_parallel_workers_match_serial(tmp_path):
  task = DummyTask()
  a = store.ensure_dataset(task, "train", 40, 2, str(tmp_path / "a"), shard_size=10,
                           progress=False, workers=1)
  b = store.ensure_dataset(task, "train", 40, 2, str(tmp_path / "b"), shard_size=10,
                           progress=False, workers=2)
  assert _file_bytes(a) == _file_bytes(b)


def test_mismatched_dataset_refused_and_kept(tmp_path):
  task = DummyTask()
  path = store.ensure_dataset(task, "train", 20, 0, str(tmp_path), shard_size=10,
                              progress=False)
  before = _file_bytes(path)
  with pytest.raises(store.DatasetError, match=r"shard_size=10 \(asked 5\)"):
    store.ensure_dataset(task, "train", 20, 0, str(tmp_path), shard_size=5, progress=False)
  # A manifest whose params differ from the directory's request (e.g. copied in).
  m = store.read_manifest(path)
  m["params"] = {"length": 99}
  store._write_manifest(path, m)
  with pytest.raises(store.DatasetError, match=r"params=\{'length': 99\}") as e:
    store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False)
  assert "\n" not in str(e.value) and "overwrite" in str(e.value)
  assert _file_bytes(path) == before
  # overwrite=True rebuilds it.
  store.ensure_dataset(task, "train", 20, 0, str(tmp_path), shard_size=10, progress=False,
                       overwrite=True)
  assert store.read_manifest(path)["params"] == {"length": 12}
  assert _file_bytes(path) == before


def test_default_shard_size_is_the_tasks_preferred(tmp_path):
  task = PreferTask()
  assert base.DEFAULT_SHARD_SIZE == DummyTask().preferred_shard_size("train") == 1000
  path = store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False)
  m = store.read_manifest(path)
  assert (m["shard_size"], m["num_shards"]) == (7, 3)
  # A stored dataset keeps its own size when none is asked for (or it is kept).
  other = store.ensure_dataset(task, "train", 20, 1, str(tmp_path), shard_size=10,
                               progress=False)
  assert store.ensure_dataset(task, "train", 20, 1, str(tmp_path), progress=False) == other
  store.ensure_dataset(task, "train", 20, 1, str(tmp_path), shard_size=3,
                       keep_stored_shard_size=True, progress=False)
  assert store.read_manifest(other)["shard_size"] == 10


def test_config_and_cli_shard_size_zero_is_the_tasks_preferred(tmp_path, registered,
                                                                capsys):
  from mdm_jax import config_schema, evaluate, main  # pylint: disable=g-import-not-at-top
  c = config_schema.base_config()
  assert c.data.shard_size == 0  # the default: each task's preferred size
  for preset in ("cpu9", "paper", "gpu"):  # no 9x9 preset overrides it any more
    spec = importlib.util.spec_from_file_location(
        "sudoku_mdm", os.path.join(ROOT, "configs", "sudoku_mdm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.get_config(preset).data.shard_size == 0
  c.task.name, c.task.params = PreferTask.name, {}
  c.data.dir, c.data.num_train, c.data.num_val, c.data.num_test = str(tmp_path), 20, 5, 9
  c.data.gen_workers, c.eval.splits = 1, ("test",)
  paths = main.prepare_data(c, ["train", "eval"])
  assert store.read_manifest(paths["train"])["shard_size"] == 7
  assert store.read_manifest(paths["test"])["shard_size"] == 7
  # Evaluation asks for the same datasets by the same rule (0 or none saved).
  for saved_size in (0, None):
    # As evaluate() passes them: configs merged onto the schema's defaults.
    saved = config_schema.merge_saved({"data": {"num_test": 9, "seed": 0,
                                                "shard_size": saved_size}})
    ex = evaluate._dataset(config_schema.merge_saved({"data": {"dir": str(tmp_path)}}),
                           saved, PreferTask(), "test")
    assert ex["x"].shape == (9, LENGTH)
  # The CLI: no --shard-size, or 0.
  capsys.readouterr()
  for extra in ([], ["--shard-size", "0"]):
    out = str(tmp_path / f"cli{len(extra)}")
    assert cli.main(["--task", PreferTask.name, "--num", "15", "--out", out,
                     "--no-progress", *extra]) == 0
    path = capsys.readouterr().out.strip()
    assert store.read_manifest(path)["shard_size"] == 7


def test_data_identity_refuses_other_generator_versions(tmp_path, monkeypatch):
  task = PreferTask()
  path = store.ensure_dataset(task, "test", 10, 0, str(tmp_path), progress=False)
  assert store.read_manifest(path)["test_generator_version"] == 2
  monkeypatch.setattr(PreferTask, "version", 3)
  with pytest.raises(store.DatasetError, match=r"test_generator_version=2 \(asked 3\)"):
    store.ensure_dataset(task, "test", 10, 0, str(tmp_path), progress=False)
  # A manifest from before the field existed is refused too.
  monkeypatch.setattr(PreferTask, "version", 2)
  m = store.read_manifest(path)
  del m["test_generator_version"]
  store._write_manifest(path, m)
  with pytest.raises(store.DatasetError, match=r"test_generator_version=None \(asked 2\)"):
    store.ensure_dataset(task, "test", 10, 0, str(tmp_path), progress=False)
  # Splits without such fields are not affected.
  train = store.ensure_dataset(task, "train", 10, 0, str(tmp_path), progress=False)
  assert "test_generator_version" not in store.read_manifest(train)


def test_sudoku_hard_datasets_record_the_hard_generator(tmp_path):
  from mdm_jax.data import sudoku as sd  # pylint: disable=g-import-not-at-top
  task = base.get_task("sudoku", box_rows=2, box_cols=3)
  path = store.ensure_dataset(task, "hard", 2, 0, str(tmp_path), progress=False)
  m = store.read_manifest(path)
  assert m["hard_generator_version"] == sd.HARD_GENERATOR_VERSION
  assert m["shard_size"] == 1000  # 6x6 keeps the old default shard size
  easy = store.ensure_dataset(task, "test", 2, 0, str(tmp_path), progress=False)
  assert "hard_generator_version" not in store.read_manifest(easy)


def test_corrupt_shard_refused_and_kept(tmp_path):
  task = DummyTask()
  path = store.ensure_dataset(task, "train", 20, 0, str(tmp_path), shard_size=10,
                              progress=False)
  file = os.path.join(path, "shard-00001.x.npy")
  data = bytearray(open(file, "rb").read())
  data[-1] ^= 0xFF  # same size: only the checksum can tell
  open(file, "wb").write(bytes(data))
  # The cheap check passes; verify=True catches it, naming the file.
  store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False)
  with pytest.raises(store.DatasetError, match="shard 1 file .*shard-00001.x.npy fails"):
    store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False, verify=True)
  with pytest.raises(store.DatasetError, match="checksum"):
    store.load_examples(path, verify=True)
  assert open(file, "rb").read() == bytes(data)
  # A truncated file fails the cheap size check.
  open(file, "wb").write(bytes(data[:-5]))
  with pytest.raises(store.DatasetError, match="has .* bytes"):
    store.ensure_dataset(task, "train", 20, 0, str(tmp_path), progress=False)
  assert os.path.exists(file)


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="dev"), "unknown split"),
    (dict(num=0), "num must be >= 1"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(num=2.5), "num must be an integer"),
    (dict(shard_size=0), "shard_size must be >= 1"),
    (dict(workers=0), "workers must be >= 1"),
])
def test_ensure_dataset_bad_args(tmp_path, kwargs, match):
  args = dict(split="train", num=4, seed=0)
  args.update({k: v for k, v in kwargs.items() if k in args})
  extra = {k: v for k, v in kwargs.items() if k not in args}
  with pytest.raises(ValueError, match=match):
    store.ensure_dataset(DummyTask(), args["split"], args["num"], args["seed"],
                         str(tmp_path), progress=False, **extra)
  assert not os.listdir(tmp_path)


def test_bad_generate_output_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(DummyTask, "generate",
                      lambda self, split, num, seed: {"x": np.zeros((num + 1, 3))})
  with pytest.raises(ValueError, match="leading dimension must be 4"):
    store.ensure_dataset(DummyTask(), "train", 4, 0, str(tmp_path), progress=False)


# ---------------------------------------------------------------------------
# Loading.


@pytest.fixture
def stored(tmp_path):
  task = DummyTask()
  path = store.ensure_dataset(task, "train", 50, 0, str(tmp_path), shard_size=16,
                              progress=False)
  examples = store.load_examples(path)
  assert len(set(_rows(examples["x"]))) == 50  # rows identify examples below
  return task, path, examples


def test_examples_source_random_access(stored):
  _, path, examples = stored
  source = store.ExamplesSource(path)
  assert len(source) == 50
  for i in (0, 15, 16, 31, 49):
    np.testing.assert_array_equal(source[i]["x"], examples["x"][i])
  idx = np.array([49, 0, 17, 16, 3, 17])
  batch = source.get_batch(idx)
  np.testing.assert_array_equal(batch["x"], examples["x"][idx])
  np.testing.assert_array_equal(batch["label"], examples["label"][idx])
  with pytest.raises(IndexError):
    source[50]
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[20]["x"], examples["x"][20])
  assert "tmp" not in repr(source)  # location-free, for iterator-state checks


def test_load_single_shard_is_memory_mapped(tmp_path):
  path = store.ensure_dataset(DummyTask(), "test", 8, 0, str(tmp_path), progress=False)
  ex = store.load_examples(path)
  assert isinstance(ex["x"], np.memmap) and not ex["x"].flags.writeable


def test_load_missing_dataset(tmp_path):
  with pytest.raises(store.DatasetError, match="no dataset"):
    store.load_examples(str(tmp_path))


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_loader_epoch_covers_each_example_once(stored):
  task, path, examples = stored
  loader = store.make_loader(task, path, batch_size=8, seed=0, shuffle=False,
                             num_epochs=1, drop_remainder=False)
  batches = list(loader)
  assert [b["tokens"].shape[0] for b in batches] == [8] * 6 + [2]
  tokens = np.concatenate([b["tokens"] for b in batches])
  np.testing.assert_array_equal(tokens, examples["x"])  # in order without shuffle
  b = batches[0]
  assert b["tokens"].dtype == np.int32 and b["maskable"].dtype == bool
  assert not b["maskable"][:, :PROMPT].any() and b["maskable"][:, PROMPT:].all()


def test_loader_shuffle_deterministic_and_per_epoch(stored):
  task, path, examples = stored
  kw = dict(batch_size=10, seed=3, num_epochs=2)
  a = [b["tokens"] for b in store.make_loader(task, path, **kw)]
  b = [b["tokens"] for b in store.make_loader(task, path, **kw)]
  c = [b["tokens"] for b in store.make_loader(task, path, **{**kw, "seed": 4})]
  assert len(a) == 10
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))
  epoch1, epoch2 = np.concatenate(a[:5]), np.concatenate(a[5:])
  assert sorted(_rows(epoch1)) == sorted(_rows(examples["x"]))
  assert sorted(_rows(epoch2)) == sorted(_rows(examples["x"]))
  assert _rows(epoch1) != _rows(examples["x"]) and _rows(epoch1) != _rows(epoch2)


def test_loader_process_shards_are_disjoint(stored):
  task, path, examples = stored
  seen = []
  for i in range(3):
    loader = store.make_loader(task, path, batch_size=4, seed=1, num_epochs=1,
                               shard_index=i, shard_count=3, drop_remainder=False)
    seen.append(_rows(np.concatenate([b["tokens"] for b in loader])))
  assert [len(s) for s in seen] == [16, 16, 16]  # 50 // 3 each, remainder dropped
  union = set().union(*map(set, seen))
  assert len(union) == 48 and union <= set(_rows(examples["x"]))


def test_loader_state_save_restore(stored):
  task, path, _ = stored
  kw = dict(batch_size=7, seed=5, augment=True)  # infinite, crosses epochs
  ref = [b["tokens"] for b in _take(iter(store.make_loader(task, path, **kw)), 12)]
  it = iter(store.make_loader(task, path, **kw))
  _take(it, 5)
  state = store.get_loader_state(it)
  json.dumps(state)  # JSON-able
  it2 = iter(store.make_loader(task, path, **kw))  # a fresh process, say
  store.set_loader_state(it2, json.loads(json.dumps(state)))
  rest = [b["tokens"] for b in _take(it2, 7)]
  np.testing.assert_array_equal(np.stack(rest), np.stack(ref[5:]))


@pytest.mark.slow
def test_loader_worker_processes_same_batches(stored):
  task, path, _ = stored
  kw = dict(batch_size=6, seed=2, augment=True)
  ref = [b["tokens"] for b in _take(iter(store.make_loader(task, path, **kw)), 12)]
  it = iter(store.make_loader(task, path, worker_count=2, **kw))
  got = [b["tokens"] for b in _take(it, 7)]
  state = store.get_loader_state(it)
  it2 = iter(store.make_loader(task, path, worker_count=2, **kw))
  store.set_loader_state(it2, state)
  got += [b["tokens"] for b in _take(it2, 5)]
  it.close()
  it2.close()
  np.testing.assert_array_equal(np.stack(got), np.stack(ref))


def test_loader_augment_deterministic(stored):
  task, path, examples = stored
  kw = dict(batch_size=10, seed=2, shuffle=False, num_epochs=1)
  plain = np.concatenate([b["tokens"] for b in store.make_loader(task, path, **kw)])
  aug = [np.concatenate([b["tokens"] for b in store.make_loader(task, path, augment=True,
                                                                **kw)]) for _ in range(2)]
  np.testing.assert_array_equal(aug[0], aug[1])
  assert (aug[0] != plain).mean() > 0.5
  # Relabelling keeps each row's pattern of equal symbols.
  for p, a in zip(plain, aug[0]):
    np.testing.assert_array_equal(p[:, None] == p[None, :], a[:, None] == a[None, :])


def test_loader_arm_and_pi(stored):
  task, path, examples = stored
  kw = dict(batch_size=10, seed=0, shuffle=False, num_epochs=1)
  arm = next(iter(store.make_loader(task, path, objective="arm", ordering="reverse", **kw)))
  assert set(arm) == {"tokens", "loss_mask", "prompt_len"}
  np.testing.assert_array_equal(arm["tokens"][:, PROMPT:], examples["x"][:10, PROMPT:][:, ::-1])
  assert arm["prompt_len"].dtype == np.int32 and (arm["prompt_len"] == PROMPT).all()
  perm = np.random.default_rng(0).permutation(LENGTH)
  pi = next(iter(store.make_loader(task, path, objective="pi", perm=perm, **kw)))
  assert set(pi) == {"tokens", "loss_mask"}
  np.testing.assert_array_equal(pi["tokens"], examples["x"][:10][:, perm])
  assert not pi["loss_mask"][:, 0].any() and pi["loss_mask"][:, 1:].all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(objective="xyz"), "unknown objective"),
    (dict(objective="arm"), "needs ordering"),
    (dict(objective="arm", ordering="spiral"), "needs ordering"),
    (dict(objective="pi", perm=[0, 0] + list(range(2, LENGTH))), "permutation"),
    (dict(perm=list(range(LENGTH))), "only used with objective 'pi'"),
    (dict(shard_index=2, shard_count=2), "shard_index must be <"),
    (dict(seed=2**31), "seed must be < 2"),
])
def test_loader_bad_args(stored, kwargs, match):
  task, path, _ = stored
  args = dict(batch_size=4, seed=0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    store.make_loader(task, path, **args)


def test_loader_refuses_other_task(stored):
  _, path, _ = stored
  with pytest.raises(ValueError, match="holds _test_dummy"):
    store.make_loader(DummyTask(length=5), path, batch_size=4, seed=0)


# ---------------------------------------------------------------------------
# CLI.


def test_cli_generates_and_prints_path(tmp_path, registered, capsys):
  argv = ["--task", "_test_dummy", "--num", "25", "--out", str(tmp_path), "--seed", "4",
          "--shard-size", "10", "--param", "length=6", "--no-progress"]
  assert cli.main(argv) == 0
  path = capsys.readouterr().out.strip()
  assert path == store.dataset_dir(DummyTask(6), "train", 25, 4, str(tmp_path))
  assert store.load_examples(path)["x"].shape == (25, 6)
  assert cli.main(argv + ["--verify"]) == 0  # complete: returns at once


@pytest.mark.parametrize("argv, match", [
    (["--task", "nope", "--num", "3"], "unknown task 'nope'"),
    (["--task", "_test_dummy", "--num", "0"], "num must be >= 1"),
    (["--task", "_test_dummy", "--num", "3", "--split", "dev"], "unknown split 'dev'"),
    (["--task", "_test_dummy", "--num", "3", "--param", "width=3"], "bad parameters"),
    (["--task", "_test_dummy", "--num", "3", "--param", "oops"], "expected key=value"),
    (["--task", "_test_dummy", "--num", "x"], "invalid int value"),
    (["--task", "_test_dummy"], "required"),
])
def test_cli_bad_input_one_line(tmp_path, registered, capsys, argv, match):
  if "--out" not in argv and argv != ["--task", "_test_dummy"]:
    argv = argv + ["--out", str(tmp_path)]
  try:
    rc = cli.main(argv)
  except SystemExit as e:  # argparse errors
    rc = e.code
  err = capsys.readouterr().err
  assert rc != 0
  assert len(err.strip().splitlines()) == 1 and match in err, err


def test_cli_subprocess_errors_without_traceback(tmp_path):
  for argv in (["--task", "nope", "--num", "3", "--out", str(tmp_path)],
               ["--task", "nope", "--num", "-2", "--out", str(tmp_path), "--workers", "q"]):
    proc = subprocess.run([sys.executable, "-m", "mdm_jax.data", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
