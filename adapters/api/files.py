"""Atomic file writes and cached file digests: what every reader and writer of nfebench shares.

A result, a statistics file, a checkpoint or a work-dir shard is written to a temporary
file in its folder and renamed into place, so a reader never sees a half-written file and an
interrupted write leaves the old file (or none), never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename,
    so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"newline": "", "encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_npz(path: str | Path, **arrays: Any) -> None:
    """`numpy.savez` of `arrays` to `path`, written atomically (see `atomic_write`)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


_digests: dict[tuple, str] = {}  # (path, size, mtime_ns, algorithm) -> hex digest


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, remembered per (path, size, mtime) so a process hashes it once."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, algorithm)
    if key not in _digests:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]
