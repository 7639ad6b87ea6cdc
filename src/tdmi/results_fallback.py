"""Results that cannot be written where they belong are saved elsewhere, not lost.

Output locations are checked before any work (:mod:`tdmi.outputs`), but a disk can still fill up (or a quota run
out, or a network mount fail) while a split is computed. The final writes of ``tdmi test`` (prediction files,
``results.json``), ``tdmi evaluate`` (``--json-out``) and ``tdmi infer`` (each input's JSON) therefore go through
:func:`save_results`: when writing to the target raises :class:`OSError` (ENOSPC, EDQUOT, EIO, EROFS, ...), the
same content is written into a fresh folder under ``$TDMI_FALLBACK_DIR`` (when set), else the system's temporary
folder, else ``~/.cache/tdmi``, and one line says what failed and where the results are instead:

    tdmi test: error: writing the results table to runs/test/results.json failed (no space left on the device);
    saved it to /tmp/tdmi-results-k2j4/results.json instead

The command goes on (``tdmi test`` scores the predictions from where they were saved) and exits with status 1
(:func:`exit_status`, applied by the CLI). When the fallback cannot be written either, the error names both places.

A folder of results (``folder=True``: ``predictions/``, ``ground_truth/``, ...) is written whole or not at all: its
writer fills a hidden temporary folder beside the target (``.<name>.<random>.partial``), which replaces the target
only once every file is written; a writer that fails midway leaves no half-written folder (and an older folder of
that name as it was), and the whole set goes to the fallback.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tdmi.atomic import atomic_write_folder
from tdmi.errors import CommandError
from tdmi.outputs import os_error_reason

FALLBACK_ENV = "TDMI_FALLBACK_DIR"
"""Environment variable naming the folder to save results in when their own place cannot be written."""


@dataclass(frozen=True)
class SavedElsewhere:
    """One result written to the fallback folder instead of ``target``."""

    what: str
    target: Path
    saved: Path
    reason: str

    command: str = ""

    @property
    def line(self) -> str:
        return (f"tdmi{f' {self.command}' if self.command else ''}: error: writing {self.what} to {self.target} "
                f"failed ({self.reason}); saved it to {self.saved} instead")


_saved_elsewhere: list[SavedElsewhere] = []
_folder: Optional[Path] = None
_command = ""


def fallback_roots() -> list[Path]:
    """Where fallback folders are made, in order of preference."""
    roots = [Path(os.environ[FALLBACK_ENV])] if os.environ.get(FALLBACK_ENV) else []
    return roots + [Path(tempfile.gettempdir()), Path.home() / ".cache" / "tdmi"]


def save_results(target: str | os.PathLike, write: Callable[[Path], Any], what: Optional[str] = None, *,
                 folder: bool = False) -> Path:
    """``write(target)``, or on :class:`OSError` ``write(<fallback folder>/<target's name>)`` and one line on stderr.

    Args:
        target: the file or folder the results belong in.
        write: writes the results to the path it is given (a file, or a folder it fills) and raises OSError when it
            cannot; it must not depend on anything under ``target``.
        what: the results in words, for the message (default: the target's name).
        folder: ``target`` is a folder that ``write`` fills file by file: it is written through
            :func:`tdmi.atomic.atomic_write_folder`, so that a failure midway leaves no partial folder.

    Returns:
        where the results are: ``target``, or the fallback path.

    Raises:
        CommandError: the fallback could not be written either (naming the target, the places tried and why).
    """
    global _folder
    target = Path(target)
    what = what or target.name
    if folder:
        fill = write
        write = lambda path: atomic_write_folder(path, fill)  # noqa: E731
    try:
        write(target)
        return target
    except OSError as err:
        reason = os_error_reason(err)
    tried: list[str] = []
    places = ([(_folder, False)] if _folder is not None else []) + [(root, True) for root in fallback_roots()]
    for place, is_root in places:
        fresh = None
        try:
            if is_root:  # a fresh folder of our own under this root
                place.mkdir(parents=True, exist_ok=True)
                fresh = Path(tempfile.mkdtemp(prefix="tdmi-results-", dir=place))
            elif (place / target.name).exists() or (place / target.name).is_symlink():
                # an earlier result of this command has the name (every epoch's results.json): keep both
                fresh = Path(tempfile.mkdtemp(prefix=f"{target.stem}-", dir=place))
            saved = (fresh or place) / target.name
            write(saved)
        except OSError as err:
            tried.append(f"{place}: {os_error_reason(err)}")
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
            continue
        _folder = fresh if is_root else place  # later results of this command go beside these
        record = SavedElsewhere(what, target, saved, reason, _command)
        _saved_elsewhere.append(record)
        print(record.line, file=sys.stderr, flush=True)
        return saved
    raise CommandError(f"writing {what} to {target} failed ({reason}), and saving it elsewhere failed too "
                       f"({'; '.join(tried)}); set {FALLBACK_ENV} to a folder with space")


_lost: list[str] = []
"""Requested outputs that could not be written anywhere (a rendered video on a full disk), since :func:`reset`."""


def output_lost(description: str) -> None:
    """Record a requested output that was not written (the caller has said so in a note); the command then exits 1,
    so a script does not take the run for complete."""
    _lost.append(description)


def lost_outputs() -> list[str]:
    """The requested outputs this process could not write (since :func:`reset`), as :func:`output_lost` recorded."""
    return list(_lost)


def saved_elsewhere() -> list[SavedElsewhere]:
    """The results this process saved in a fallback folder (since :func:`reset`)."""
    return list(_saved_elsewhere)


def reset(command: str = "") -> None:
    """Forget earlier fallbacks; ``command`` names the command in the messages (the CLI calls this when a command
    starts)."""
    global _folder, _command
    _saved_elsewhere.clear()
    _lost.clear()
    _folder = None
    _command = command or ""


def exit_status(code: int) -> int:
    """A command's exit status: 1 instead of 0 when some results were saved in a fallback folder or an output that was
    asked for could not be written."""
    return 1 if code == 0 and (_saved_elsewhere or _lost) else code
