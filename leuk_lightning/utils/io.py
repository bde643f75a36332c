"""Atomic file writes: a crash never leaves a half-written checkpoint, split or result.

* The data goes to a temporary file beside the target (``.<name>.<host>-<pid>.<random>.tmp``),
  is fsynced and renamed into place. A writer killed with ``kill -9`` leaves its temporary file
  behind: the next write of the same target removes every such file whose process is gone
  (same host, pid not alive) or that is older than a day (:func:`remove_stale_temps`).
* Written files get the mode a plain ``open()`` would give them (``0666 & ~umask``, so 0644
  by default), not ``mkstemp``'s private 0600: colleagues on a shared server can read results,
  splits and cache indexes.
* A read-only folder or a full disk is a :class:`~leuk_lightning.errors.StorageError` naming
  the path being written (one line), not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from leuk_lightning.errors import StorageError

log = logging.getLogger(__name__)

STALE_AGE_S = 24 * 3600  # a temp file of another host is stale after a day
_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
_umask_lock = threading.Lock()


def file_mode() -> int:
    """``0666 & ~umask``: the mode ``open(path, "w")`` gives a new file."""
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_prefix(path: Path) -> str:
    """Prefix of this process's temporary files for ``path``."""
    return f".{path.name}.{_HOST}-{os.getpid()}."


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted writers left in ``path``'s folder (for any
    target: a run killed while writing ``epoch_003.ckpt`` may never write that name again);
    returns them. Files of live writers on this host are kept."""
    path = Path(path)
    removed: list[Path] = []
    try:  # every target of the folder: a killed run may have been writing another file
        candidates = list(path.parent.glob(".*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        parts = tmp.name.split(".")  # ["", <name parts>, "<host>-<pid>", <random>, "tmp"]
        if len(parts) < 5 or "-" not in parts[-3]:
            continue  # not written by atomic_write
        host, _, pid = parts[-3].rpartition("-")
        try:
            if host == _HOST and pid.isdigit():
                stale = not _pid_alive(int(pid))
            else:
                stale = time.time() - tmp.stat().st_mtime > STALE_AGE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def storage_error(path: str | Path, exc: OSError) -> StorageError:
    """One line for an OSError of writing ``path`` (full disk, read-only folder, permission)."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return StorageError(f"cannot write {path}: {reason}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(fileobj)`` into a temporary file beside ``path``, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise storage_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise storage_error(path, exc) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically with stable formatting (sorted keys, indent 2)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(src: str | Path, dst: str | Path, chunk: int = 1 << 20) -> Path:
    """Copy ``src`` to ``dst`` atomically (the stage cache's ``best.ckpt``)."""

    def copy(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            while block := s.read(chunk):
                f.write(block)

    return atomic_write(dst, copy)


@contextlib.contextmanager
def file_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold the file lock ``path``; if another process holds it, log one line saying what this
    run waits for (a stage being trained, a cache being built) before waiting."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Waiting for %s: another run holds the lock %s", what, path)
        start = time.monotonic()
        lock.acquire()
        log.info("Lock %s acquired after %.0f s", path, time.monotonic() - start)
    try:
        yield
    finally:
        lock.release()
