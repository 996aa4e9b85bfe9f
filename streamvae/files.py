"""Writing a file so that a reader (or a restart after a crash) sees the old content or the
new, never a part: write a temporary sibling, flush it to disk, then ``os.replace``.

The one helper every package uses for that (stdlib only, so any layer may import it).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_atomic(d / "a.txt", b"one")
>>> _ = write_atomic(d / "a.txt", lambda fh: fh.write(b"two"))
>>> (d / "a.txt").read_bytes(), sorted(p.name for p in d.iterdir())
(b'two', ['a.txt'])
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO, Callable

from streamvae.errors import DataError


def write_atomic(path: str | Path, content: bytes | Callable[[IO[bytes]], object], fsync: bool = False) -> Path:
    """Replace ``path`` with ``content`` (bytes, or a function that writes to the open
    binary file) in one ``os.replace``; parent directories are created. ``fsync``: flush
    the data to disk before the rename (for state a restart depends on). Raises
    :class:`DataError` (the temporary file removed) when it cannot be written."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # unique on a shared filesystem too
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            if isinstance(content, (bytes, bytearray, memoryview)):
                fh.write(content)
            else:
                content(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {p}: {e.strerror or e}") from e
    return p
