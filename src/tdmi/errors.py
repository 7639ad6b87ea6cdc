"""Exceptions users see. The CLI prints these as one line (no traceback) and exits with status 2.

Every message names the file (or config key) and the problem, e.g.
``annotations/val/003418_mpii_test.json: annotations[3].keypoints has 48 numbers, expected 51``.
"""


class TdmiError(Exception):
    """Base class of every user-facing tdmi error."""


class DataFormatError(TdmiError, ValueError):
    """A data, annotation, box or prediction file is missing something or malformed."""


class CheckpointError(TdmiError, ValueError):
    """A checkpoint cannot be loaded (missing file, wrong shapes, unsafe pickle, missing keys)."""


class CommandError(TdmiError):
    """A command cannot run as asked (bad combination of arguments, missing input)."""
