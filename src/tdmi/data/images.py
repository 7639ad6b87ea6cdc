"""Frame files: decoding with OpenCV and reading an image's size from its header.

Facts: ``docs/facts/posetrack-facts.md`` 5.1 (frames are read with cv2 as BGR uint8; HRNet adds IGNORE_ORIENTATION so
that EXIF
rotation never changes the pixel grid the annotations refer to) and 4.1 (GT boxes are clipped to the image, which
needs the image size; official PoseTrack18 per-sequence files do not state it).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from tdmi.errors import DataFormatError

# JPEG start-of-frame markers that carry the image size (baseline, progressive, lossless, ...; not DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as BGR uint8 ``[H, W, 3]``, ignoring EXIF orientation.

    Raises:
        DataFormatError: the file is missing or OpenCV cannot decode it.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        reason = "cannot be decoded as an image" if Path(path).exists() else "image file not found"
        raise DataFormatError(f"{path}: {reason}")
    return image


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG from its header (no decoding); other formats are decoded with OpenCV.

    Raises:
        DataFormatError: the file is missing or not a readable image.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return int(width), int(height)
            if head[:2] == b"\xff\xd8":
                size = _jpeg_size(handle)
                if size is not None:
                    return size
    except FileNotFoundError:
        raise DataFormatError(f"{path}: image file not found") from None
    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])


def _jpeg_size(handle) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame; None if the stream is not understood."""
    handle.seek(2)
    while True:
        byte = handle.read(1)
        if byte != b"\xff":
            return None
        while byte == b"\xff":  # fill bytes before a marker
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:  # markers without a length field
            continue
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if marker in _JPEG_SOF:
            data = handle.read(5)
            if len(data) < 5:
                return None
            height, width = struct.unpack(">HH", data[1:5])
            return int(width), int(height)
        handle.seek(length - 2, 1)
