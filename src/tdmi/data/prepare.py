"""``tdmi prepare DATASET --root DIR``: check a downloaded PoseTrack17/18/21 or HiEve tree, convert what needs
converting, and say whether it is usable. It never downloads anything (user-needs.md item 5 and 6).

What it checks (layouts in ``docs/data.md``):

- the expected annotation folders per split and that every annotation file parses (errors name file and field);
- sequence counts against the known ones (docs/facts/posetrack-facts.md 10, user-needs.md 6): PoseTrack17 250 train /
50 val /
  214 test; PoseTrack18 593 / 170 / 375 with label v0.45, while v0.2 had 74 val sequences (the report says which
  version the val count matches); PoseTrack21 reuses the PoseTrack18 videos (no count is asserted);
- per sequence: frame files on disk against ``nframes`` and against the frames the annotation lists, listing
  missing frames as compact ranges (frame names follow the numbering rule of :mod:`tdmi.data.posetrack`:
  6-digit names 0-based, others 1-based);
- HiEve: per-frame XML folders and track-1 ``.txt`` files parse (the images' naming is not public, so frame files
  are not checked).

What it converts: PoseTrack17 ``.mat`` ground truth -> ``<same name>.json`` (PoseTrack18 schema) next to it, written
atomically and only when that JSON does not exist yet (an existing one is never overwritten).

A count that differs from the known one is a warning; unreadable annotations, missing frame files or no usable
split are problems. Exit status 0 = usable (no problems), 1 = problems (listed).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from tqdm import tqdm

from tdmi.data.fileio import atomic_write_json
from tdmi.data.hieve import load_hieve_mot, load_hieve_sequence
from tdmi.data.posetrack import annotation_files, frame_index_base, load_sequence_file, sequence_to_posetrack18_json
from tdmi.data.records import Sequence
from tdmi.errors import CommandError, DataFormatError

DATASETS = ("posetrack17", "posetrack18", "posetrack21", "hieve")


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps its per-sequence annotation files and how many sequences each split should have."""

    annotation_dir: str
    splits: tuple[str, ...]
    known_counts: dict[str, dict[str, int]]
    """split -> {label version: sequence count}."""


LAYOUTS: dict[str, Layout] = {
    "posetrack17": Layout("annotations", ("train", "val", "test"),
                          {"train": {"PoseTrack17": 250}, "val": {"PoseTrack17": 50}, "test": {"PoseTrack17": 214}}),
    "posetrack18": Layout("annotations", ("train", "val", "test"),
                          {"train": {"v0.45": 593}, "val": {"v0.45": 170, "v0.2": 74}, "test": {"v0.45": 375}}),
    "posetrack21": Layout("posetrack_data", ("train", "val"), {}),
}
#: HiEve: 32 videos, 19 train (annotated) and 13 test (user-needs.md section 2).
HIEVE_TRAIN_SEQUENCES = 19
#: How many problem lines the console shows before summarising the rest (the JSON report has all of them).
MAX_LISTED = 20


@dataclass
class SequenceCheck:
    name: str
    annotation_file: str
    nframes: int
    frames_listed: int
    frames_on_disk: int
    frames_expected: int = 0
    """Frame files the sequence needs: the listed frames, or the whole ``nframes`` range of a trimmed file."""
    missing_frames: list[str] = field(default_factory=list)
    """Missing frame files as compact ranges, e.g. ``000001.jpg-000148.jpg``."""
    missing_count: int = 0


@dataclass
class SplitCheck:
    split: str
    annotation_dir: str
    sequences: int = 0
    version: str = ""
    frames_expected: int = 0
    frames_missing: int = 0
    sequence_checks: list[SequenceCheck] = field(default_factory=list)


@dataclass
class PrepareReport:
    dataset: str
    root: str
    splits: list[SplitCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems and any(s.sequences for s in self.splits)

    def summary(self) -> str:
        parts = [f"{s.split} {s.sequences} sequences" + (f" ({s.version})" if s.version else "") for s in self.splits]
        frames = sum(s.frames_expected for s in self.splits)
        missing = sum(s.frames_missing for s in self.splits)
        state = "usable" if self.usable else f"NOT usable, {len(self.problems)} problem(s)"
        counts = "; ".join(parts) or "no splits found"
        frame_text = f"; {missing} of {frames} frame files missing" if frames else ""
        extra = f"; {len(self.converted)} converted" if self.converted else ""
        return f"tdmi prepare {self.dataset} {self.root}: {state}: {counts}{frame_text}{extra}; " \
               f"{len(self.warnings)} warning(s)"

    def to_json(self) -> dict:
        return {**asdict(self), "usable": self.usable, "summary": self.summary()}


# ------------------------------------------------------------------------------------------------ frame files


def _frame_name(template: str, index: int) -> str:
    stem = PurePosixPath(template).stem
    return f"{index:0{len(stem)}d}{PurePosixPath(template).suffix}"


def _compact_ranges(names: list[str]) -> list[str]:
    """``['000001.jpg', '000002.jpg', '000005.jpg']`` -> ``['000001.jpg-000002.jpg', '000005.jpg']``."""
    def number(name: str) -> Optional[int]:
        stem = PurePosixPath(name).stem
        return int(stem) if stem.isdigit() else None

    ranges: list[list[str]] = []
    previous = None
    for name in sorted(names, key=lambda n: (number(n) is None, number(n) or 0, n)):
        current = number(name)
        if ranges and previous is not None and current is not None and current == previous + 1:
            ranges[-1][1] = name
        else:
            ranges.append([name, name])
        previous = current
    return [a if a == b else f"{a}-{b}" for a, b in ranges]


def check_sequence_frames(sequence: Sequence, image_root: Path) -> SequenceCheck:
    """Compare a sequence's frame files on disk with ``nframes`` and the frames its annotation lists.

    Expected files: every listed frame, plus, when the file lists fewer frames than ``nframes`` (trimmed files,
    frames-only-when-labelled files), the whole numbered range of the sequence in the listed frames' naming.
    """
    folders = {str(PurePosixPath(f.file_name.replace("\\", "/")).parent) for f in sequence.frames}
    expected: dict[str, set[str]] = {folder: set() for folder in folders}
    for frame in sequence.frames:
        path = PurePosixPath(frame.file_name.replace("\\", "/"))
        expected[str(path.parent)].add(path.name)
    if sequence.frames and len(sequence.frames) < sequence.nframes and len(folders) == 1:
        template = sequence.frames[0].file_name
        base = frame_index_base(template)
        expected[next(iter(folders))].update(_frame_name(template, base + i) for i in range(sequence.nframes))
    on_disk, missing_count, missing = 0, 0, []
    for folder, names in expected.items():
        directory = image_root / folder
        present = set(os.listdir(directory)) if directory.is_dir() else set()
        on_disk += sum(1 for n in present if n.lower().endswith((".jpg", ".jpeg", ".png")))
        absent = sorted(names - present)
        missing_count += len(absent)
        missing.extend(f"{folder}/{r}" if len(expected) > 1 else r for r in _compact_ranges(absent))
    return SequenceCheck(name=sequence.name, annotation_file=sequence.source, nframes=sequence.nframes,
                         frames_listed=len(sequence.frames), frames_on_disk=on_disk,
                         frames_expected=sum(len(n) for n in expected.values()), missing_frames=missing,
                         missing_count=missing_count)


# ------------------------------------------------------------------------------------------------ PoseTrack


def convert_mat_files(folder: Path, report: PrepareReport, write: bool = True) -> None:
    """PoseTrack17 ``X.mat`` -> ``X.json`` (PoseTrack18 schema) next to it, unless ``X.json`` already exists."""
    kept = 0
    for mat in sorted(folder.glob("*.mat")):
        target = mat.with_suffix(".json")
        if target.exists():
            kept += 1
            continue
        try:
            documents = [sequence_to_posetrack18_json(s) for s in load_sequence_file(mat, "posetrack17")]
        except DataFormatError as err:
            report.problems.append(str(err))
            continue
        if not write:
            report.notes.append(f"{mat}: would be converted to {target.name} (--check-only)")
            continue
        atomic_write_json(target, documents[0])
        report.converted.append(str(target))
    if kept:
        report.notes.append(f"{folder}: {kept} .mat file(s) already have a .json next to them; left unchanged")


def _match_version(split: str, count: int, layout: Layout, report: PrepareReport) -> str:
    known = layout.known_counts.get(split)
    if not known:
        return ""
    for label, expected in known.items():
        if count == expected:
            return f"labels {label}" if label.startswith("v") else label
    known_text = ", ".join(f"{n} ({label})" for label, n in known.items())
    report.warnings.append(f"{split}: {count} sequences; known counts: {known_text}. A subset, or another label "
                           f"version: results are not comparable with published numbers")
    return "unknown version"


def _check_posetrack(dataset: str, root: Path, report: PrepareReport, write: bool) -> None:
    layout = LAYOUTS[dataset]
    for split in layout.splits:
        folder = root / layout.annotation_dir / split
        if not folder.is_dir():
            report.warnings.append(f"{folder}: not found; split {split!r} skipped")
            continue
        if dataset == "posetrack17":
            convert_mat_files(folder, report, write)
        check = SplitCheck(split=split, annotation_dir=str(folder))
        report.splits.append(check)
        files = annotation_files(folder)
        if not files:
            report.problems.append(f"{folder}: no annotation files (*.json or *.mat)")
            continue
        trimmed = 0
        for file in tqdm(files, desc=f"checking {dataset} {split}", unit="sequence", leave=False):
            try:
                sequences = load_sequence_file(file, dataset)
            except DataFormatError as err:
                report.problems.append(str(err))
                continue
            for sequence in sequences:
                result = check_sequence_frames(sequence, root)
                check.sequence_checks.append(result)
                check.sequences += 1
                check.frames_expected += result.frames_expected
                check.frames_missing += result.missing_count
                trimmed += result.frames_listed < result.nframes
                if result.missing_count:
                    shown = ", ".join(result.missing_frames[:4]) + (", ..." if len(result.missing_frames) > 4 else "")
                    folder_name = PurePosixPath(sequence.frames[0].file_name).parent
                    report.problems.append(f"{folder_name}: {result.missing_count} of {result.frames_expected} frame "
                                           f"files missing ({shown})")
                elif result.frames_on_disk > result.nframes:
                    report.warnings.append(f"{sequence.name}: {result.frames_on_disk} image files on disk but "
                                           f"nframes is {result.nframes}")
        check.version = _match_version(split, check.sequences, layout, report)
        if trimmed:
            report.notes.append(f"{split}: {trimmed} annotation file(s) list fewer frames than their nframes "
                                f"(trimmed files); the whole range was checked")
    if dataset == "posetrack21":
        report.notes.append("PoseTrack21 reuses the PoseTrack18 videos; no per-split sequence count is asserted")


# ------------------------------------------------------------------------------------------------ HiEve


def _looks_like_mot(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    values = line.strip().split(",")
                    return len(values) >= 7 and all(v.strip().lstrip("-").replace(".", "", 1).isdigit()
                                                    for v in values[:7])
    except OSError:
        return False
    return False


def _read_hieve_sources(paths: list[Path], load: Callable[[Path], Sequence], split: str,
                        report: PrepareReport) -> SplitCheck:
    """Parse each HiEve annotation source, counting readable sequences and listing the unreadable ones."""
    check = SplitCheck(split=split, annotation_dir=report.root)
    for path in tqdm(paths, desc=f"checking hieve {split}", unit="sequence", leave=False):
        try:
            sequence = load(path)
        except DataFormatError as err:
            report.problems.append(str(err))
            continue
        check.sequences += 1
        check.sequence_checks.append(SequenceCheck(name=sequence.name, annotation_file=str(path),
                                                   nframes=sequence.nframes, frames_listed=len(sequence.frames),
                                                   frames_on_disk=0))
    return check


def _check_hieve(root: Path, report: PrepareReport) -> None:
    xml_folders = sorted(Path(d) for d, _, files in os.walk(root) if any(f.lower().endswith(".xml") for f in files))
    mot_files = sorted(p for p in root.rglob("*.txt") if _looks_like_mot(p))
    poses = _read_hieve_sources(xml_folders, load_hieve_sequence, "all-track xml", report)
    boxes = _read_hieve_sources(mot_files, load_hieve_mot, "track-1 txt", report)
    report.splits.extend(s for s in (poses, boxes) if s.sequences)
    if not xml_folders and not mot_files:
        report.problems.append(f"{root}: no HiEve annotations (folders of per-frame .xml files, track-1 .txt files)")
    for check in (poses, boxes):
        if check.sequences and check.sequences != HIEVE_TRAIN_SEQUENCES:
            report.warnings.append(f"{check.split}: {check.sequences} sequences; the HiEve training set has "
                                   f"{HIEVE_TRAIN_SEQUENCES} annotated videos")
    report.notes.append("HiEve frame files are not checked: the released images' naming is not public")


# ------------------------------------------------------------------------------------------------ entry points


def prepare_dataset(dataset: str, root: str | Path, write: bool = True) -> PrepareReport:
    """Check (and, with ``write``, convert) one dataset tree; see the module docstring."""
    if dataset not in DATASETS:
        raise CommandError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise CommandError(f"--root {root} is not a folder")
    report = PrepareReport(dataset=dataset, root=str(root))
    if dataset == "hieve":
        _check_hieve(root, report)
    else:
        _check_posetrack(dataset, root, report, write)
    report.problems = list(dict.fromkeys(report.problems))  # a .mat that fails to convert also fails to load
    if not any(s.sequences for s in report.splits) and not report.problems:
        report.problems.append(f"{root}: no readable sequences found (expected layout: see docs/data.md)")
    return report


def _print_list(title: str, items: list[str]) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):")
    for item in items[:MAX_LISTED]:
        print(f"  - {item}")
    if len(items) > MAX_LISTED:
        print(f"  ... and {len(items) - MAX_LISTED} more (all of them in the --json-out report)")


def print_report(report: PrepareReport) -> None:
    print(f"{report.dataset} at {report.root}")
    for check in report.splits:
        version = f" ({check.version})" if check.version else ""
        frames = f", {check.frames_expected} frame files expected, {check.frames_missing} missing" \
            if check.frames_expected else ""
        print(f"  {check.split}: {check.sequences} sequences{version}{frames}")
    _print_list("problems", report.problems)
    _print_list("warnings", report.warnings)
    _print_list("converted", report.converted)
    _print_list("notes", report.notes)
    print(report.summary())


def prepare_command(args) -> int:
    """``tdmi prepare``: check/convert, print the report and a one-line summary; 0 if usable, else 1."""
    report = prepare_dataset(args.dataset, args.root, write=not getattr(args, "check_only", False))
    if getattr(args, "json_out", None):
        atomic_write_json(Path(args.json_out), report.to_json(), indent=1)
    print_report(report)
    return 0 if report.usable else 1
