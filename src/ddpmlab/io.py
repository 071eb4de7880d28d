"""Safe writes: atomic file writes (temp file, fsync, rename) and run-directory locks (one writer at a time).

Every file ddpmlab writes goes through atomic_write, so a crash leaves the old file or the new one, never half.

A lock is an exclusive, non-blocking fcntl.flock on RUN/.lock, which holds the owner's pid. The kernel releases
it when the process exits, however it exits, so a killed run never leaves a stale lock behind. Where fcntl does
not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import RunError

LOCK = ".lock"


def atomic_write(path: Path, write: Any) -> None:
    """Call write(file_object) on a temp file beside path, fsync, then rename it over path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or new file in the folder durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold RUN/.lock for the duration; a second writer gets a one-line RunError naming the holder's pid.

    The run directory is created if missing; if this call created it and it holds nothing but the lock when the
    block fails, it is removed again (and so is a lock file this call created), so a refused or failed start leaves
    nothing behind.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    lock_created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{run_dir} is in use by another ddpmlab process (pid {holder}); wait for it to finish "
                           "or stop it, or choose another directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        except BaseException:
            if created and [p.name for p in run_dir.iterdir()] == [LOCK]:
                path.unlink(missing_ok=True)
                run_dir.rmdir()
            elif lock_created:  # a refused resume leaves the run as it found it
                path.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)


def user_files(folder: Path) -> list[str]:
    """Names in folder other than ddpmlab's own lock file (empty for a missing folder)."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []
