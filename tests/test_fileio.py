"""fileio on local paths (tests/test_gcs.py runs the gs:// side against an emulator)."""
import os
import threading

import pytest

from mdm_jax import fileio


def test_normalize_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  assert fileio.normalize("gs://bucket/run/") == "gs://bucket/run"
  assert fileio.normalize("gs://bucket") == "gs://bucket"
  assert fileio.is_remote("gs://bucket/x") and not fileio.is_remote("/tmp/gs:/x")
  monkeypatch.chdir(tmp_path)
  assert fileio.normalize("run") == str(tmp_path / "run")
  assert fileio.normalize("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert fileio.expand("rel") == "rel"
  assert fileio.join("gs://b/run/", "eval", "results.json") == "gs://b/run/eval/results.json"
  assert fileio.join(str(tmp_path), "a") == str(tmp_path / "a")


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path, fsync):
  path = tmp_path / "f.json"
  fileio.atomic_write(path, "old", fsync=fsync)
  fileio.atomic_write_json(path, {"a": [1, 2]}, indent=1)
  assert fileio.read_json(path) == {"a": [1, 2]}
  fileio.atomic_write(path, b"\x00\x01")
  assert fileio.read_bytes(path) == b"\x00\x01" and fileio.getsize(path) == 2
  assert os.listdir(tmp_path) == ["f.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
  path = tmp_path / "f.txt"
  fileio.atomic_write(path, "old")
  with pytest.raises(TypeError):
    fileio.atomic_write(path, object())  # not bytes: fails before the rename
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_line_appender_appends_to_existing_lines(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text("one\n")
  out = fileio.LineAppender(path)
  out.write("two\n")
  assert path.read_text() == "one\ntwo\n"  # flushed at once (local)
  out.close()
  assert not fileio.LineAppender(tmp_path / "x.jsonl").remote


def test_listdir_remove_rmtree_and_temporary_names(tmp_path):
  fileio.makedirs(tmp_path / "a" / "b")
  fileio.atomic_write(tmp_path / "a" / "b" / "f", "x")
  assert fileio.listdir(tmp_path / "a") == ["b"]
  assert fileio.isdir(tmp_path / "a") and fileio.isfile(tmp_path / "a" / "b" / "f")
  fileio.remove(tmp_path / "a" / "missing")  # no error
  with pytest.raises(FileNotFoundError):
    fileio.remove(tmp_path / "a" / "missing", missing_ok=False)
  fileio.rmtree(tmp_path / "a")
  assert not fileio.exists(tmp_path / "a")
  fileio.rmtree(tmp_path / "a")  # no error
  assert fileio.is_temporary(".f.json.tmp-12-abcd") and not fileio.is_temporary("f.json")


def test_lock_is_exclusive_and_reports_waiting(tmp_path):
  path = tmp_path / ".lock"
  waited, inside = threading.Event(), []
  with fileio.lock(path):
    def other():
      with fileio.lock(path, on_wait=waited.set):
        inside.append(True)
    thread = threading.Thread(target=other)
    thread.start()
    assert waited.wait(10)
    assert not inside  # still blocked while we hold the lock
  thread.join(10)
  assert inside == [True]
