"""Atomic file writes: a temporary file beside the target, then ``os.replace``, so a crash or Ctrl-C never leaves a
half-written checkpoint, prediction file or video, and whatever was there before survives a failed write.

Every whole-file writer in tdmi goes through :func:`atomic_write` (a folder filled file by file, through
:func:`atomic_write_folder`); the one streamed output, rendered video, follows
the same temporary-file-then-rename rule in ``inference/render.py``. Files get the usual permissions (0666 minus the
umask), not the 0600 that ``tempfile.mkstemp`` gives.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Optional


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns those it created, deepest first (see
    :func:`remove_empty`)."""
    created = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders :func:`make_parents` created, deepest first, where they are still empty: a failed write
    leaves no empty folder behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's files), or already gone
            break


def atomic_write(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temp_path)`` to create a temporary file beside ``target``, then rename it over ``target``. On
    failure the temporary file, and any parent folder this call created, are removed."""
    target = Path(target)
    created = make_parents(target)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~current_umask())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        remove_empty(created)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None, allow_nan: bool = True) -> Path:
    """Serialise ``obj`` as UTF-8 JSON (newline-terminated) and write it atomically."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_folder(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(<hidden temporary folder beside target>)``, then that folder becomes ``target`` (replacing an older
    ``target``, which is removed); on any error the temporary folder is removed and ``target`` is as it was."""
    target = Path(target)
    created = make_parents(target)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    old: Optional[Path] = None
    try:
        write(temp)
        os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        if target.exists() or target.is_symlink():  # set aside first: a folder cannot be renamed over a full one
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            os.rename(target, old)
        try:
            os.rename(temp, target)
        except BaseException:
            if old is not None:
                os.rename(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        remove_empty(created)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return target
