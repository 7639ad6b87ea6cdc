"""Small file helpers shared by the data readers and writers: JSON loading and field checks whose errors name the
file and the field, plus the atomic writers of :mod:`tdmi.atomic`, re-exported for the data package (every write in
tdmi goes through a temporary file and ``os.replace``, so an interrupted run leaves no half-written file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tdmi import atomic as _atomic
from tdmi.errors import DataFormatError


def read_json(path: Path) -> Any:
    """Parse a JSON file; a file that is not JSON raises :class:`DataFormatError` naming the file and position."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a folder, expected a JSON file") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


# Atomic writes live in tdmi.atomic (shared with models and evaluation); re-exported for the data package.
atomic_write_bytes = _atomic.atomic_write_bytes
atomic_write_json = _atomic.atomic_write_json


# Field checks: each returns the checked value or raises DataFormatError("<file>: <field> <problem>").


def field_error(src: str, where: str, problem: str) -> DataFormatError:
    """The error for field ``where`` (e.g. ``annotations[3].keypoints``) of file ``src``."""
    return DataFormatError(f"{src}: {where} {problem}")


def check_number(value: Any, src: str, where: str) -> float:
    """A finite number. JSON booleans are ints in Python, but true/false where a coordinate belongs is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise field_error(src, where, f"is {value!r}, expected a number")
    if not np.isfinite(value):
        raise field_error(src, where, f"is {value!r}, expected a finite number")
    return float(value)


def check_int(value: Any, src: str, where: str) -> int:
    """An integer (``3.0`` is accepted, ``3.5`` is not)."""
    number = check_number(value, src, where)
    if number != int(number):
        raise field_error(src, where, f"is {value!r}, expected an integer")
    return int(number)


def check_numbers(value: Any, src: str, where: str, count: Optional[int] = None, expected: str = "") -> np.ndarray:
    """A list of numbers as float64 ``[N]``; with ``count``, exactly that many (``expected`` words the message)."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise field_error(src, where, f"is {type(value).__name__}, expected a list of numbers")
    if count is not None and len(value) != count:
        raise field_error(src, where, f"has {len(value)} numbers, expected {expected or count}")
    return np.array([check_number(v, src, f"{where}[{i}]") for i, v in enumerate(value)], np.float64)


def check_list(value: Any, src: str, where: str) -> list:
    """A JSON array."""
    if not isinstance(value, list):
        raise field_error(src, where, f"is {type(value).__name__}, expected a list")
    return value
