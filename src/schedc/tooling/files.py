"""Writing files without losing data: every file schedc writes goes through `atomic_write`.

The bytes go to a temporary file beside the target (same folder, so the same file
system), are flushed to disk, and the temporary file is renamed over the target: a
full disk, a kill or a crash mid-write leaves either the old file or the new one,
never a truncated mix. `same_file` lets a command refuse to write over one of its
own inputs (`schedc plot s.sched --out s.sched`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once (umask can only be read by setting it), then restored
os.umask(_UMASK)


def atomic_write(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` atomically (a file beside it, fsynced, then renamed).

    Raises:
        OSError: when the folder is not writable, the disk is full, ...; `path` is then untouched.
    """
    path = Path(path)
    with atomic_open(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_open(path: Path | str):
    """A binary file to write that becomes `path` when the block ends without an exception.

    On an exception the temporary file is removed (a kill leaves it, as `.NAME.*.tmp` beside the
    target: the checkpoint loader sweeps those) and `path` is untouched.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the permissions the user gave the file
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def same_file(a: Path | str, b: Path | str) -> bool:
    """True when `a` and `b` are one file (through links, `..` or another spelling); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
