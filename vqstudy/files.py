"""Writing files so that a reader never sees half of one: the run cache and the CIFAR-10
cache both go through :func:`atomic_write`."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write, mode: int = 0o644) -> Path:
    """Write ``path`` through ``write(f)`` on a temporary file in the same folder, then
    ``os.replace`` it into place: readers see the old file or the whole new one, a crash
    leaves at most a ``.tmp`` file (never read as a result), and two processes writing
    the same file leave one complete copy. ``mode`` 0644: a shared cache must be readable
    by the others who use it (``mkstemp`` makes files 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
