"""File I/O for local paths and Cloud Storage (`gs://bucket/...`) alike.

Every path mdm_jax writes or reads (workdirs, checkpoints, exports, metrics,
evaluation outputs, the dataset store) goes through these helpers, so that a
`gs://` workdir is used as such: local paths are made absolute (`~` expanded),
paths with a URI scheme are left untouched (`os.path.abspath('gs://b/run')` would
be `<cwd>/gs:/b/run`). Remote paths go through `etils.epath` (gcsfs, i.e.
`pip install gcsfs` or the `gcs` extra); TensorStore (orbax's array writes) has
its own GCS client.

Writes:
  atomic_write(path, data)   local: a temporary file in the same directory, then
                             os.replace (optionally fsynced); gs://: one object
                             upload, which Cloud Storage makes visible atomically.
  LineAppender               append-only text files (metrics.jsonl). Cloud Storage
                             has no append: the lines are kept in memory and the
                             whole object is rewritten on flush, at most every
                             `remote_flush_secs` seconds (and on close), so a crash
                             loses at most that much of the remote file.
  lock(path)                 an exclusive flock on a local lock file; gs:// has no
                             lock (the dataset store's writes are idempotent).

Emulators: with STORAGE_EMULATOR_HOST set (the Cloud Storage client libraries'
convention; gcsfs and google-cloud-storage read it), `use_emulator_if_configured`
points TensorStore at the same endpoint (TENSORSTORE_GCS_HTTP_URL) and makes
gcsfs connect anonymously, since an emulator takes no credentials.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from typing import Any, Iterator

from etils import epath

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TMP_MARK = ".tmp-"


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` has a URI scheme (gs://, s3://, ...), i.e. is not local."""
  return bool(_SCHEME_RE.match(os.fspath(path)))


def normalize(path: str | os.PathLike) -> str:
  """A local path made absolute (with `~` expanded); a remote one unchanged."""
  path = os.fspath(path)
  if is_remote(path):
    stripped = path.rstrip("/")
    return path if stripped.endswith(":") else stripped
  return os.path.abspath(os.path.expanduser(path))


def expand(path: str | os.PathLike) -> str:
  """`~` expanded for a local path (relative paths stay relative); remote unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.expanduser(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """An epath.Path of `path` (expanded, not made absolute)."""
  return epath.Path(expand(path))


def join(path: str | os.PathLike, *parts: str) -> str:
  """os.path.join; for remote paths always with '/'."""
  path = os.fspath(path)
  if is_remote(path):
    return "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])
  return os.path.join(path, *parts)


def exists(path: str | os.PathLike) -> bool:
  return as_path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
  return as_path(path).is_dir()


def isfile(path: str | os.PathLike) -> bool:
  return as_path(path).is_file()


def listdir(path: str | os.PathLike) -> list[str]:
  """The names in directory `path` (FileNotFoundError if it does not exist)."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.listdir(expand(path))
  if not isdir(path):
    raise FileNotFoundError(f"no directory {path}")
  return [p.name for p in as_path(path).iterdir()]


def getsize(path: str | os.PathLike) -> int:
  """Size in bytes (OSError / FileNotFoundError if missing)."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.getsize(expand(path))
  return int(as_path(path).stat().length)


def makedirs(path: str | os.PathLike) -> None:
  """Creates a directory and its parents; nothing if it exists."""
  as_path(path).mkdir(parents=True, exist_ok=True)


def remove(path: str | os.PathLike, *, missing_ok: bool = True) -> None:
  """Deletes a file (no error if it is missing, unless missing_ok=False)."""
  try:
    as_path(path).unlink()
  except FileNotFoundError:
    if not missing_ok:
      raise


def rmtree(path: str | os.PathLike) -> None:
  """Deletes a directory tree (no error if it is missing)."""
  p = as_path(path)
  if p.exists():
    p.rmtree(missing_ok=True)


def open_file(path: str | os.PathLike, mode: str = "r", **kwargs: Any):
  """`open` for local and remote paths."""
  path = os.fspath(path)
  if not is_remote(path):
    return open(expand(path), mode, **kwargs)  # pylint: disable=consider-using-with,unspecified-encoding
  return as_path(path).open(mode, **kwargs)


def read_bytes(path: str | os.PathLike) -> bytes:
  return as_path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
  return as_path(path).read_text(encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(read_text(path))


def atomic_write(path: str | os.PathLike, data: bytes | str, *,
                 fsync: bool = False) -> None:
  """Writes `data` to `path` so that readers see the old or the new content.

  Local: a temporary file in the same directory, then os.replace; `fsync=True`
  also syncs the file and its directory (durable across a power loss). Remote:
  one object upload (Cloud Storage makes a finished upload visible atomically).
  The parent directory must exist (local).
  """
  path = os.fspath(path)
  payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
  if is_remote(path):
    as_path(path).write_bytes(payload)
    return
  path = expand(path)
  directory, name = os.path.split(path)
  tmp = os.path.join(directory, f".{name}{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
  try:
    with open(tmp, "wb") as f:
      f.write(payload)
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  if fsync:
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
  """`atomic_write` of json.dumps(obj, **dump_kwargs)."""
  atomic_write(path, json.dumps(obj, **dump_kwargs))


def is_temporary(name: str) -> bool:
  """Whether a file name is one of `atomic_write`'s temporary files."""
  return name.startswith(".") and _TMP_MARK in name


class LineAppender:
  """Appends text lines to a file, local or remote.

  Local: the file is opened in append mode and flushed after every `write`.
  Remote (Cloud Storage has no append): the existing content is read once, new
  lines are kept in memory, and the whole object is rewritten by `flush`, at most
  every `remote_flush_secs` seconds unless `flush(force=True)`; `close` flushes.
  """

  def __init__(self, path: str | os.PathLike, *, remote_flush_secs: float = 30.0):
    self.path = os.fspath(path)
    self.remote = is_remote(self.path)
    self._interval = float(remote_flush_secs)
    self._file = None
    self._chunks: list[str] = []
    self._dirty = False
    self._last_flush = time.monotonic()
    if self.remote:
      if exists(self.path):
        self._chunks.append(read_text(self.path))
    else:
      self._file = open(expand(self.path), "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write(self, text: str) -> None:
    """Appends `text` (include the newline)."""
    if self._file is not None:
      self._file.write(text)
      self._file.flush()
      return
    self._chunks.append(text)
    self._dirty = True
    self.flush()

  def flush(self, force: bool = False) -> None:
    if self._file is not None:
      self._file.flush()
      return
    if not self._dirty:
      return
    if force or time.monotonic() - self._last_flush >= self._interval:
      content = "".join(self._chunks)
      self._chunks = [content]
      atomic_write(self.path, content)
      self._dirty = False
      self._last_flush = time.monotonic()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    else:
      self.flush(force=True)


@contextlib.contextmanager
def lock(path: str | os.PathLike, *, on_wait: Any = None) -> Iterator[None]:
  """An exclusive lock on the local file `path` (created if missing).

  `on_wait()` is called once if another process holds the lock. Remote paths are
  not locked (Cloud Storage has no advisory locks): callers must make concurrent
  writers harmless, as the dataset store does (deterministic, idempotent writes).
  """
  if is_remote(path):
    yield
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  with open(expand(path), "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if on_wait is not None:
        on_wait()
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
  """fig.savefig to a local or remote path (atomically; format from the suffix)."""
  path = os.fspath(path)
  buf = io.BytesIO()
  fmt = os.path.splitext(path)[1].lstrip(".") or None
  fig.savefig(buf, format=fmt, **kwargs)
  atomic_write(path, buf.getvalue())


def use_emulator_if_configured() -> None:
  """With STORAGE_EMULATOR_HOST set, points every GCS client at the emulator.

  TensorStore (orbax) reads TENSORSTORE_GCS_HTTP_URL, not STORAGE_EMULATOR_HOST:
  it is set to the same endpoint, and GOOGLE_AUTH_TOKEN_FOR_TESTING to a dummy
  token (no credential look-up); gcsfs (etils.epath) is told to connect
  anonymously and to skip its bucket-type probe (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
  =false). Variables already set are kept; nothing happens without
  STORAGE_EMULATOR_HOST. Called on import of this module, i.e. before any GCS
  client exists. google-cloud-storage (tensorboardX's GCS writer) reads
  STORAGE_EMULATOR_HOST itself and then uses anonymous credentials.
  """
  host = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if host in ("", "default"):
    return
  url = host if host.startswith(("http://", "https://")) else f"http://{host}"
  os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
  # TensorStore sends this bearer token instead of looking for credentials.
  os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
  os.environ.setdefault("FSSPEC_GCS_TOKEN", "anon")  # read by fsspec on import
  # gcsfs's zonal / hierarchical-bucket probe calls the Storage Control API (gRPC,
  # not the emulator's endpoint); an emulator bucket is a plain one.
  os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
  try:
    import fsspec.config  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  fsspec.config.conf.setdefault("gcs", {}).setdefault("token", "anon")


use_emulator_if_configured()
