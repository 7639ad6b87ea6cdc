"""Output locations checked before any work: a bad ``--out`` or ``--json-out`` is one line, not a traceback after
the whole split was computed.

Every command that writes checks each location first (the CLI does it for ``--out``, always a folder, and
``--json-out``, always a file; commands check locations that come from a config, e.g. ``test.out_dir``). A location
passes when it exists as the right kind and is writable, or can be created; the check proves it by creating what is
missing and a temporary file in it, then removes everything it created, so a refused command leaves nothing behind.

    check_output_dir("runs/x", "--out")          # or raise CommandError("--out runs/x: ...")
    check_output_file("report.json", "--json-out")
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tdmi.errors import CommandError


def _reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (permission denied)" if err.errno != errno.EROFS else "on a read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or str(err)


def _probe_writable(folder: Path, option: str, shown: Path) -> None:
    """Create and delete a temporary file in ``folder``, or raise naming ``option`` and ``shown``."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tdmi-write-check-"):
            pass
    except OSError as err:
        raise CommandError(f"{option} {shown}: cannot write in {folder}: {_reason(err)}") from None


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check that ``path`` is (or can be made) a writable folder; returns it as a Path. Creates nothing that stays."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"{option} {path}: exists and is not a folder (give a folder to write into)")
    created: list[Path] = []
    missing = path
    while not missing.exists():
        created.append(missing)
        if missing.parent == missing:
            break
        missing = missing.parent
    if not missing.is_dir():
        raise CommandError(f"{option} {path}: {missing} is a file, so the folder cannot be created")
    try:
        for folder in reversed(created):
            folder.mkdir()
    except OSError as err:
        _remove(created)
        raise CommandError(f"{option} {path}: the folder cannot be created: {_reason(err)}") from None
    try:
        _probe_writable(path, option, path)
    finally:
        _remove(created)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--json-out") -> Path:
    """Check that file ``path`` can be written (atomically, via a temporary file beside it); returns it."""
    path = Path(path)
    if path.is_dir():
        raise CommandError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise CommandError(f"{option} {path}: exists and is not writable (permission denied)")
    check_output_dir(path.parent if str(path.parent) else Path("."), option=f"{option} {path}: its folder")
    return path


def _remove(created: list[Path]) -> None:
    for folder in created:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            pass
