"""Output locations checked before any work: a bad ``--out`` or ``--json-out`` is one line, not a traceback after
the whole split was computed.

Every command that writes checks each location first (the CLI does it for ``--out``, always a folder, and
``--json-out`` and ``--report``, always files; commands check locations that come from a config, e.g.
``test.out_dir``, and the ``OUT/report.html`` of a bare ``tdmi test --report`` without ``--out``). A location
passes when it exists as the right kind and is writable, or can be created; the check proves it by creating what is
missing and a temporary file in it, then removes everything it created, so a refused command leaves nothing behind.
Under torchrun only rank 0 creates and probes; the other ranks ask ``os.access`` (:func:`check_output_dir`).

    check_output_dir("runs/x", "--out")          # or raise CommandError("--out runs/x: ...")
    check_output_file("report.json", "--json-out")
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
import time
from pathlib import Path

from tdmi.errors import CommandError


def os_error_reason(err: OSError) -> str:
    """An OS error as the short phrase our one-line messages end with ("no space left on the device")."""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (permission denied)" if err.errno != errno.EROFS else "on a read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    # the first line only: some libraries (imageio's ffmpeg writer) put a whole command log in the message
    return err.strerror or (str(err).splitlines() or [type(err).__name__])[0]


_CHECK_ATTEMPTS = 8
"""How often a check starts again when the folder disappears while it is checked (see :class:`_Vanished`)."""


class _Vanished(Exception):
    """A folder being checked disappeared meanwhile: another process checking the same place (the ranks of
    ``torchrun ... -m tdmi test``) removed what its own check created. The check starts again."""


def _probe_writable(folder: Path, option: str, shown: Path) -> None:
    """Create and delete a temporary file in ``folder``, or raise naming ``option`` and ``shown``."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tdmi-write-check-"):
            pass
    except OSError as err:
        if isinstance(err, FileNotFoundError) and not folder.is_dir():
            raise _Vanished() from None
        raise CommandError(f"{option} {shown}: cannot write in {folder}: {os_error_reason(err)}") from None


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check that ``path`` is (or can be made) a writable folder; returns it as a Path. Creates nothing that stays.

    Under torchrun (its ``RANK``; :func:`_is_main_rank`) only rank 0
    creates and probes; the other ranks create nothing and only ask the system (``os.access``) whether the folder,
    or the nearest existing folder above it, is writable: the ranks' checks of one place cannot meet in it, so no
    rank's folder survives because another rank's probe was inside when it was removed. Independent processes
    checking one place at once are still safe: a folder another process created meanwhile is not removed by this
    one, and a check whose folder another process removed meanwhile starts again.
    """
    path = Path(path)
    check = _check_output_dir_once if _is_main_rank() else _check_output_dir_access
    for attempt in range(_CHECK_ATTEMPTS):
        try:
            return check(path, option)
        except _Vanished:
            time.sleep(0.02 * (attempt + 1) * (1 + random.random()))
    raise CommandError(f"{option} {path}: the folder kept disappearing while it was checked (another process "
                       f"removes it)")


def torchrun_rank() -> int:
    """This process's rank under torchrun (its ``RANK``), 0 without torchrun; read here without importing torch, so
    that ``tdmi evaluate`` checks its outputs in a fraction of a second. A malformed ``RANK`` counts as 0, which
    checks fully."""
    rank = os.environ.get("RANK", "0").strip()
    return int(rank) if rank.isdigit() else 0


def _is_main_rank() -> bool:
    return torchrun_rank() == 0


def _check_output_dir_access(path: Path, option: str) -> Path:
    """The check of a torchrun rank other than 0: nothing is created, the system says what is writable."""
    if path.exists():
        if not path.is_dir():
            if not path.exists():
                raise _Vanished()
            raise CommandError(f"{option} {path}: exists and is not a folder (give a folder to write into)")
        if not os.access(path, os.W_OK | os.X_OK):
            if not path.is_dir():
                raise _Vanished()
            raise CommandError(f"{option} {path}: cannot write in {path}: not writable (permission denied)")
        return path
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        if not existing.exists():
            raise _Vanished()
        raise CommandError(f"{option} {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        if not existing.is_dir():  # rank 0's check removed what it had created meanwhile: look again
            raise _Vanished()
        raise CommandError(f"{option} {path}: the folder cannot be created: {existing} is not writable "
                           f"(permission denied)")
    return path


def _check_output_dir_once(path: Path, option: str) -> Path:
    if path.exists() and not path.is_dir():
        if not path.exists():
            raise _Vanished()
        raise CommandError(f"{option} {path}: exists and is not a folder (give a folder to write into)")
    missing_chain: list[Path] = []
    missing = path
    while not missing.exists():
        missing_chain.append(missing)
        if missing.parent == missing:
            break
        missing = missing.parent
    if not missing.is_dir():
        if not missing.exists():
            raise _Vanished()
        raise CommandError(f"{option} {path}: {missing} is a file, so the folder cannot be created")
    created: list[Path] = []  # deepest first, only what this process made
    try:
        for folder in reversed(missing_chain):
            if _make_folder(folder):
                created.insert(0, folder)
    except OSError as err:
        _remove(created)
        raise CommandError(f"{option} {path}: the folder cannot be created: {os_error_reason(err)}") from None
    except _Vanished:
        _remove(created)
        raise
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


def _make_folder(folder: Path) -> bool:
    """Create ``folder``: True when this process made it, False when another process made it meanwhile (then it is
    not ours to remove). :class:`_Vanished` when its parent was removed meanwhile; OSError when the system refuses."""
    for attempt in range(3):
        try:
            folder.mkdir()
            return True
        except FileExistsError:
            if folder.is_dir():
                return False
            raise
        except FileNotFoundError:
            if not folder.parent.is_dir():
                raise _Vanished() from None
            if attempt == 2:  # the parent is there, and still no folder: the system refuses it (e.g. under /proc)
                raise
    return False  # not reached


def _remove(created: list[Path]) -> None:
    for folder in created:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            pass


DEFAULT_REPORT = "<default>"
"""What a bare ``--report`` (no file name) parses to: the command's default place for the HTML report."""


def report_path(value: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                json_out: str | os.PathLike | None = None) -> Path | None:
    """Where ``--report [FILE]`` writes, unchecked: FILE, or for a bare ``--report`` (:data:`DEFAULT_REPORT`)
    ``report.html`` in ``out_dir`` (``tdmi test``), else beside ``json_out`` with the suffix ``.html`` (``tdmi
    evaluate``); None for a bare ``--report`` with neither."""
    if str(value) != DEFAULT_REPORT:
        return Path(value)
    if out_dir:
        return Path(out_dir) / "report.html"
    if json_out:
        return Path(json_out).with_suffix(".html")
    return None


def check_report_path(value: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                      json_out: str | os.PathLike | None = None, known_later: bool = False,
                      json_what: str = "the --json-out file") -> Path | None:
    """:func:`report_path`, checked like ``--json-out``. Returns None when a bare ``--report`` has no place yet and
    ``known_later`` (``tdmi test`` without ``--out``: the folder comes from the config, and the command checks
    again); otherwise a bare ``--report`` without a place is a :class:`CommandError`, and so is a report that would
    overwrite ``json_out`` (the command's JSON results, ``json_what`` in the message: ``--json-out`` of ``tdmi
    evaluate``, ``OUT/results.json`` of ``tdmi test``)."""
    path = report_path(value, out_dir=out_dir, json_out=json_out)
    if path is None:
        if known_later:
            return None
        raise CommandError("--report: give a file name (--report report.html), or --json-out FILE to write the report "
                           "beside it")
    if json_out and os.path.realpath(path) == os.path.realpath(json_out):  # "d/../m.json" and links are one file
        raise CommandError(f"--report {path}: is {json_what} too; give the report its own name")
    return check_output_file(path, "--report")
