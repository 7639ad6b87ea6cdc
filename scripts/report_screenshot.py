"""Regenerate docs/report.png: a real ``tdmi test --report`` page, photographed by headless Chromium.

    OMP_NUM_THREADS=1 python scripts/report_screenshot.py            # about a minute on one CPU core

Steps: a small SynthTrack val set (6 sequences x 20 frames, the generator the shipped models were scored with),
``tdmi test --report --track`` with the shipped TDMI-W8 demo checkpoint (GT boxes), Chromium's screenshot of the
page (1200 px wide), cropped after the first row of the gallery and stored as a 128-colour palette PNG (k-means
palette; OpenCV writes no palette PNGs, so the few PNG chunks are written here) to stay small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's tdmi, installed or not

from tdmi.atomic import atomic_write_bytes  # noqa: E402
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def palette_png(path: Path, image_bgr: np.ndarray, colours: int = 128, seed: int = 0) -> int:
    """Write ``image_bgr`` as an 8-bit palette PNG of ``colours`` k-means colours; returns its size in bytes."""
    rgb = image_bgr[..., ::-1].reshape(-1, 3).astype(np.float32)
    sample = rgb[np.random.default_rng(seed).choice(len(rgb), min(len(rgb), 60000), replace=False)]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(seed)
    _, _, centres = cv2.kmeans(sample, colours, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    index = np.empty(len(rgb), np.uint8)
    norms = (centres ** 2).sum(axis=1)
    for start in range(0, len(rgb), 200_000):
        index[start:start + 200_000] = (norms[None] - 2 * rgb[start:start + 200_000] @ centres.T).argmin(axis=1)
    height, width = image_bgr.shape[:2]
    raw = b"".join(b"\x00" + row.tobytes() for row in index.reshape(height, width))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", np.clip(centres.round(), 0, 255).astype(np.uint8).tobytes())
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    atomic_write_bytes(path, png)
    return len(png)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--height", type=int, default=1915, help="rows of the page kept (default 1915)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tdmi-report-shot-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for suffix in (".safetensors", ".json"):  # beside the run, so the page shows a short checkpoint name
            shutil.copy(REPO / "src" / "tdmi" / "weights" / f"tdmi_demo{suffix}", work / f"tdmi_demo{suffix}")
        tdmi = [sys.executable, "-m", "tdmi"]  # this checkout's tdmi, from the work folder
        paths = [str(REPO / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        subprocess.run([*tdmi, "synth", "--out", "data", "--sequences", "6", "--frames", "20", "--seed", "1001",
                        "--split", "val", "--generator-version", "1"], cwd=work, env=env, check=True)
        subprocess.run([*tdmi, "test", "--checkpoint", "tdmi_demo.safetensors", "--set", "data.root=data",
                        "--boxes", "gt", "--track", "--device", "cpu", "--out", "runs/test", "--report"],
                       cwd=work, env=env, check=True)
        page = work / "runs" / "test" / "report.html"
        shot = work / "screenshot.png"
        with tempfile.TemporaryDirectory(prefix="tdmi-chromium-") as profile:
            subprocess.run([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                            "--window-size=1200,2600", page.resolve().as_uri()], check=True, timeout=120,
                           stderr=subprocess.DEVNULL)
        image = cv2.imread(str(shot)) if shot.is_file() else None
        if image is None:
            print(f"report_screenshot: error: {args.chromium} wrote no readable screenshot ({shot}) of {page}",
                  file=sys.stderr)
            return 1
        size = palette_png(args.out, image[:args.height])
        print(f"wrote {args.out} ({size / 1024:.0f} KiB, {image.shape[1]}x{min(args.height, image.shape[0])})")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
