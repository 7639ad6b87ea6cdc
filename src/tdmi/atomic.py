"""Atomic file writes: a temporary file beside the target, then ``os.replace``, so a crash or Ctrl-C never leaves a
half-written checkpoint, prediction file or video, and whatever was there before survives a failed write.

Every whole-file writer in tdmi goes through :func:`atomic_write`; the one streamed output, rendered video, follows
the same temporary-file-then-rename rule in ``inference/render.py``. Files get the usual permissions (0666 minus the
umask), not the 0600 that ``tempfile.mkstemp`` gives.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temp_path)`` to create a temporary file beside ``target``, then rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None, allow_nan: bool = True) -> Path:
    """Serialise ``obj`` as UTF-8 JSON (newline-terminated) and write it atomically."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))
