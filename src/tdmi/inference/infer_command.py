"""``tdmi infer``: inputs checked first, the model and detector loaded once, each input estimated and written.

One PoseTrack18-style JSON per input (``<out>/<stem>.json``), optionally an MP4 with the skeletons, and the image
detector's boxes as a cache (:mod:`tdmi.inference.detection_cache`). Files are written atomically when an input is
finished; a failing input is said once and leaves earlier outputs untouched.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tdmi import __version__
from tdmi.data.fileio import atomic_write_json
from tdmi.errors import CommandError, DataFormatError, TdmiError
from tdmi.evaluation.writers import POSETRACK18_CATEGORIES, posetrack18_annotation
from tdmi.inference.sources import FrameSource
from tdmi.inference.model_loading import (RANDOM_INIT_BANNER, SHIPPED_MODEL_NOTE, LoadedModel,  # noqa: F401
                                          load_inference_model, resolve_device, shipped_checkpoint)
from tdmi.inference.pipeline import VideoPoseEstimator
from tdmi.inference.pose_tracking import FramePeople, PoseTracker
from tdmi.inference.tracking import MAX_TRACK_ID
from tdmi.inference.records import DEFAULT_WINDOW, MAX_NOTES, FramePoses, PipelineOptions, RunStats
from tdmi.outputs import os_error_reason
from tdmi.results_fallback import output_lost, save_results


# ----------------------------------------------------------------------------------------------------------- files


def _image_ids(source_stem: str, frames: list[FramePoses]) -> list[int]:
    """PoseTrack18 ids when every frame name follows the PoseTrack layout (so files line up with GT), else the
    frames' source indices."""
    from tdmi.data.posetrack import posetrack18_image_id

    try:
        ids = [posetrack18_image_id(f"{source_stem}/{Path(f.name).stem}.jpg") for f in frames]
    except (DataFormatError, ValueError):
        return [f.index for f in frames]
    return ids if len(set(ids)) == len(ids) else [f.index for f in frames]


def poses_document(frames: list[FramePoses], source_stem: str, kind: str, meta: dict) -> dict:
    """The PoseTrack18-style JSON of one input: ``images`` (one per decoded frame, in order), ``annotations`` (17-slot
    ``keypoints`` whose third value is the joint score, ``scores``, ``track_id``, ``bbox``, ``score``),
    ``categories``, and run information under ``"tdmi"`` (poseval ignores unknown keys)."""
    ids = _image_ids(source_stem, frames)
    images, annotations = [], []
    for frame, image_id in zip(frames, ids):
        file_name = f"{source_stem}/{frame.name}" if kind != "video" else f"{source_stem}/{frame.index:06d}.jpg"
        images.append({"id": image_id, "file_name": file_name, "frame_id": image_id, "frame_index": frame.index,
                       "nframes": len(frames), "width": frame.size[0], "height": frame.size[1]})
        for person in frame.people:
            annotation = posetrack18_annotation(person.prediction(), image_id, len(annotations),
                                                f"{source_stem} frame {frame.name}")
            annotation["bbox"] = [round(float(v), 2) for v in person.box]
            annotation["id"] = len(annotations)
            annotations.append(annotation)
    return {"images": images, "annotations": annotations, "categories": POSETRACK18_CATEGORIES, "tdmi": meta}


@dataclass
class InferOutcome:
    """What :func:`infer_source` wrote and measured."""

    json_path: Path
    video_path: Optional[Path]
    stats: RunStats
    people: int
    tracks: int
    notes: list[str] = field(default_factory=list)
    frames: list[FramePoses] = field(default_factory=list)


def _output_stem(spec: str, taken: set[str]) -> str:
    path = Path(spec)
    stem = path.name if path.is_dir() else path.stem
    stem = stem or "input"
    candidate, number = stem, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}_{number}"
    taken.add(candidate)
    return candidate


def infer_source(spec: str, out_dir: Path, loaded: LoadedModel, detector, detector_description: str,
                 options: PipelineOptions, device: torch.device, *, render: bool = False,
                 output_stem: Optional[str] = None, progress: bool = True,
                 reuse_detections: bool = True, render_scores: bool = False) -> InferOutcome:
    """Run one video / frame folder / image and write ``<out>/<stem>.json`` (and ``<stem>.mp4`` with ``render``).

    Files are written atomically when the input is finished; an error leaves earlier files as they were and no
    partial file of this input. An image detector's boxes are cached in ``<out>/<stem>.boxes.json`` and reused by
    the next run on the same input with the same detector (:mod:`tdmi.inference.detection_cache`), unless
    ``reuse_detections`` is False. A video that cannot be written (``render``; a full disk, ...) is dropped with its
    partial file and a note, and the poses are still estimated and saved (:mod:`tdmi.results_fallback`).

    Raises:
        FileNotFoundError, DataFormatError: the input cannot be read (messages name it).
    """
    from tdmi.inference.detection_cache import RecordingDetector, cache_key, cache_path, load_cached_detector
    from tdmi.inference.detectors import BoxFileDetector
    from tdmi.inference.render import VideoWriter, draw_people
    from tdmi.inference.sources import open_source

    source: FrameSource = open_source(spec)
    stem = output_stem or _output_stem(spec, set())
    box_file = detector if isinstance(detector, BoxFileDetector) else None
    if box_file is not None:
        if len(box_file.sequences) > 1:
            box_file.select_sequence(source.info.name)
        box_file.frames_seen = box_file.frames_matched = 0  # counted per input
    recorder, cache_file, key, cache_note = None, None, None, None
    if box_file is None and source.info.kind != "webcam":
        cache_file = cache_path(out_dir, stem)
        key = cache_key(spec, detector_description)
        cached = load_cached_detector(cache_file, key) if reuse_detections else None
        if cached is not None:
            detector = cached
            cache_note = (f"{source.info.name}: boxes reused from {cache_file} (same input, same detector); "
                          f"--redetect runs the detector again")
        elif key is not None:
            detector = recorder = RecordingDetector(detector)
    estimator = VideoPoseEstimator(loaded.model, loaded.config, options, device)
    collected: list[FramePoses] = []
    video_failure: Optional[str] = None
    video_target = out_dir / f"{stem}.mp4"

    def video_lost(err: OSError) -> None:
        """The video cannot be written (a full disk, ...): drop it and its partial file, keep estimating poses."""
        nonlocal writer, video_failure
        if writer is not None:
            try:
                writer.abort()
            except OSError:  # the partial file could not be removed either: nothing more to do about it
                pass
            writer = None
        video_failure = (f"{source.info.name}: the video was not written to {video_target} "
                         f"({os_error_reason(err)}); the "
                         f"poses are kept in the JSON")
        output_lost(video_failure)  # the command exits 1: a video that was asked for is missing

    writer = None
    try:
        writer = VideoWriter(video_target, source.info.fps, (source.info.width, source.info.height)) \
            if render else None
    except OSError as err:
        video_lost(err)
    except BaseException:
        source.close()  # the writer could not start: release the decoder before reporting
        raise

    pose_tracker = PoseTracker() if options.tracker == "pose" else None

    def emit(frame: FramePoses, image: np.ndarray) -> None:
        for person in frame.people:
            person.heatmaps = None  # never keep maps of a whole video
        if pose_tracker is not None:  # frames come in order, with their poses: relabel before writing anything
            _pose_track_ids(pose_tracker, frame)
        collected.append(frame)
        if writer is not None:
            people = frame.people
            drawn = draw_people(
                image, np.stack([p.box for p in people]) if people else None, [p.track_id for p in people],
                np.stack([p.keypoints for p in people]) if people else None,
                np.stack([p.heatmap_scores for p in people]) if people else None, show_scores=render_scores)
            try:
                writer.write(drawn)
            except OSError as err:
                video_lost(err)

    video_path = None
    try:
        with source, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = estimator.run(source, detector, emit, progress=progress, total=source.info.frame_count,
                                  description=f"infer {source.info.name}")
        if writer is not None:
            try:
                video_path = writer.close()
            except OSError as err:
                video_lost(err)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    cache_failure = None
    if recorder is not None:
        try:
            recorder.write(cache_file, source.info.name, key)
        except OSError as err:  # only a cache (a rerun detects again): the poses below are what must be kept
            cache_failure = (f"{source.info.name}: the detector's boxes were not cached in {cache_file} "
                             f"({err.strerror or err})")
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    if cache_failure is not None:
        notes.append(cache_failure)
    if cache_note is not None:
        notes.insert(0, cache_note)
    if len(notes) > MAX_NOTES:  # e.g. a box cap hit in every frame: the first ones tell the story
        notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more warnings like these"]
    if writer is not None and writer.note:
        notes.append(writer.note)
    if video_failure is not None:
        notes.append(video_failure)
    people = sum(len(f.people) for f in collected)
    tracks = len({p.track_id for f in collected for p in f.people})
    if box_file is not None and box_file.frames_seen and box_file.frames_matched == 0:
        notes.append(f"{source.info.name}: the boxes file has no entry for any of its {box_file.frames_seen} frames "
                     "(frame names or indices do not match); no poses were estimated")
    if people == 0:
        notes.append(f"{source.info.name}: no person was detected in any frame; the JSON lists the frames with no "
                     f"annotations")
    meta = {
        "tdmi_version": __version__, "source": str(spec), "source_kind": source.info.kind, "fps": source.info.fps,
        "model": loaded.description, "checkpoint": str(loaded.checkpoint) if loaded.checkpoint else None,
        "random_init": loaded.random_init, "detector": detector_description, "mode": options.mode,
        "online": options.online, "window": options.window, "delta": int(loaded.config.model.delta),
        "tracker": options.tracker, "amp": options.amp,
        "padding": options.padding or loaded.config.data.padding, "device": str(device),
        "throughput": stats.to_json(),
        "skipped_frames": [{"index": i, "name": n, "reason": r} for i, n, r in source.skipped],
        "size_changes": [{"index": i, "size": list(s)} for i, s in source.size_changes],
        "gaps": [{"before": g.before, "after": g.after, "missing": g.missing} for g in source.info.gaps],
        "truncated": source.truncated, "notes": notes,
    }
    document = poses_document(collected, Path(source.info.name).stem if source.info.kind == "video"
                              else source.info.name, source.info.kind, meta)
    # a full disk loses nothing: the poses go to a fallback folder, said in one line (tdmi.results_fallback)
    json_path = save_results(out_dir / f"{stem}.json", lambda path: atomic_write_json(path, document),
                             f"the poses of {spec}")
    return InferOutcome(json_path, video_path, stats, people, tracks, notes, collected)


def _pose_track_ids(tracker: PoseTracker, frame: FramePoses) -> None:
    """Give ``frame``'s people the pose-aware tracker's ids (kept below poseval's 10000)."""
    people = frame.people
    boxes = np.stack([p.box for p in people]).astype(np.float64) if people else np.zeros((0, 4))
    keypoints = np.stack([p.keypoints for p in people]).astype(np.float64) if people else np.zeros((0, 17, 2))
    scores = (np.stack([p.heatmap_scores * p.box_score for p in people]).astype(np.float64) if people
              else np.zeros((0, 17)))
    box_scores = np.array([p.box_score for p in people], np.float64)
    ids = tracker.update(FramePeople(frame.position, boxes, keypoints, scores, box_scores))
    taken: set[int] = set()
    for person, track_id in zip(people, ids):
        new = int(track_id) % MAX_TRACK_ID
        while new in taken:  # only after 10000 tracks: ids wrap, and must stay unique in the frame
            new = (new + 1) % MAX_TRACK_ID
        taken.add(new)
        person.track_id = new


def expand_inputs(specs: list[str]) -> list[str]:
    """The inputs to run: a folder that holds videos and no images stands for its videos (natural order of the
    names); anything else is taken as given (a folder of images is one input, a frame sequence)."""
    from tdmi.inference.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, natural_key

    expanded: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file()]
            videos = sorted((p for p in files if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: natural_key(p.name))
            if videos and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
                expanded.extend(str(video) for video in videos)
                continue
        expanded.append(spec)
    return expanded


def _quiet(*_args, **_kwargs) -> None:
    """``print`` for lines about the whole run on ranks other than 0 under torchrun."""


def infer_command(args) -> int:
    """``tdmi infer INPUT... [--checkpoint FILE] [--config FILE] [--boxes FILE | --detector NAME] [--out DIR]
    [--render] [--online] [--mode tube|warp|exact] [--window N] [--device cpu|cuda]``.

    Under torchrun, input ``i`` runs on rank ``i % world`` (:mod:`tdmi.sharding`); every rank checks all inputs and
    loads the model first, the inputs run are those rank 0's check passed (:func:`agree_on_inputs`), each input's
    files are named as one process names them, and rank 0 prints the run's summary, with every rank's failures and
    results saved elsewhere or lost (:func:`_infer_summary`); every rank exits with the run's status."""
    from tdmi.inference.detectors import HOGPeopleDetector, make_detector
    from tdmi.inference.sources import open_source
    from tdmi.sharding import all_gather, dist_info_from_env, input_share, process_group, rank_device

    ranks = dist_info_from_env()
    say = print if ranks.is_main else _quiet  # lines about the whole run: once, from rank 0

    # Inputs first: a missing or undecodable input is said once, before a model or detector is loaded and before
    # anything is written.
    specs = expand_inputs(list(args.inputs))
    failures: list[str] = []
    inputs = []
    for spec in specs:
        try:
            with open_source(spec):
                inputs.append(spec)
        except (TdmiError, FileNotFoundError) as err:
            failures.append(_input_error(spec, err))
    if not inputs:
        raise CommandError(failures[0] if len(failures) == 1 else
                           f"none of the {len(failures)} inputs can be read: {'; '.join(failures)}")
    for failure in failures:
        say(f"tdmi infer: error: {failure} (skipped)", file=sys.stderr)

    device = resolve_device(args.device)
    device = rank_device(device, ranks) if ranks.enabled else device
    loaded = load_inference_model(args.checkpoint, args.config, args.overrides, device)
    if loaded.random_init:
        say(RANDOM_INIT_BANNER, file=sys.stderr)
    detector, detector_description = make_detector(args.detector, args.boxes, device=str(device),
                                                   box_score_threshold=loaded.config.data.box_score_threshold,
                                                   layout=getattr(args, "detector_layout", "auto"))
    say(f"model: {loaded.description}")
    for note in loaded.notes:
        say(f"note: {note}")
    shipped = shipped_checkpoint()
    if shipped is not None and loaded.checkpoint is not None and Path(loaded.checkpoint).resolve() == shipped.resolve():
        say(SHIPPED_MODEL_NOTE)
    say(f"detector: {detector_description}")
    if isinstance(detector, HOGPeopleDetector):
        say("note: the HOG detector is weak (upright, unoccluded, large people only); poses can only be as good "
            "as the boxes. Pass --boxes FILE with a stronger detector's output when you have one.")
    options = PipelineOptions(mode=args.mode, online=args.online, window=getattr(args, "window", DEFAULT_WINDOW),
                              tracker=getattr(args, "tracker", "pose"), amp=getattr(args, "amp", "none"),
                              decode=getattr(args, "decode", None))
    say(f"mode: {options.mode}{' (online, causal clips)' if options.online else ''}, delta="
        f"{loaded.config.model.delta}, window={options.window}, device={device}"
        f"{f', amp {options.amp}' if options.amp != 'none' else ''}, decoding "
        f"{options.decode or loaded.config.test.decode}"
        f"{f'; {len(inputs)} inputs over {ranks.world_size} ranks' if ranks.enabled else ''}")
    out_dir = Path(args.out)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[InferOutcome] = []
    run_failures: list[str] = []
    crash: Optional[BaseException] = None
    with process_group(ranks, device, loaded.config.train.dist_timeout_minutes):
        # rank 0's checked inputs on every rank: a check that fails on one rank only cannot shift shares or names
        inputs, failures = agree_on_inputs(inputs, failures, ranks)
        taken: set[str] = set()
        stems = [_output_stem(spec, taken) for spec in inputs]  # over all inputs: names do not depend on the ranks
        try:
            for _, (spec, stem) in input_share(list(zip(inputs, stems)), ranks):
                try:
                    outcome = infer_source(spec, out_dir, loaded, detector, detector_description, options, device,
                                           render=args.render or getattr(args, "render_scores", False),
                                           output_stem=stem, progress=ranks.is_main,
                                           reuse_detections=not getattr(args, "redetect", False),
                                           render_scores=getattr(args, "render_scores", False))
                except (TdmiError, FileNotFoundError) as err:
                    run_failures.append(_input_error(spec, err))
                    print(f"tdmi infer: error: {run_failures[-1]}", file=sys.stderr)
                    continue
                outcomes.append(outcome)
                for note in outcome.notes:
                    print(f"note: {note}", file=sys.stderr)
                s = outcome.stats
                print(f"{spec}: {s.frames} frames, {outcome.people} person-frames in {outcome.tracks} tracks, "
                      f"{s.person_frames_per_second:.1f} person-frames/s (pose), {s.encodes_per_person_frame:.2f} "
                      f"backbone encodes per person-frame -> {outcome.json_path}"
                      + (f" and {outcome.video_path}" if outcome.video_path else ""))
        except Exception as err:  # under torchrun: told to rank 0 before this rank stops, so that nothing waits
            if not ranks.enabled:
                raise
            crash = err
            lines = str(err).splitlines()  # none for a bare assert or RuntimeError()
            run_failures.append(f"rank {ranks.rank} stopped: {type(err).__name__}{f': {lines[0]}' if lines else ''}")
        counts = [(o.stats.frames, o.stats.person_frames, o.stats.pose_seconds, o.stats.encoded_crops)
                  for o in outcomes]
        shares = all_gather((counts, run_failures, created, _not_where_asked()), ranks)
        code = (_infer_summary(shares, failures, len(specs), out_dir, options, loaded) if ranks.is_main
                else _infer_status(shares, failures))
        if ranks.enabled:
            torch.distributed.barrier()  # rank 0 has said everything before any rank stops
    if crash is not None:
        raise crash
    return code


def agree_on_inputs(inputs: list[str], failures: list[str], ranks) -> tuple[list[str], list[str]]:
    """Rank 0's checked inputs and check failures, on every rank (one process: its own).

    Each rank checks the inputs before the process group starts; a file that fails the check on one rank only (a
    mount missing on one node, a file still being written) would otherwise make the ranks number the inputs
    differently, so that inputs were run twice or not at all and files were named differently. Rank 0's list is
    the run's; a rank whose own check differed says so on its stderr (its share may then fail, as a failure of the
    run that rank 0 reports)."""
    from tdmi import sharding

    agreed_inputs, agreed_failures = sharding.broadcast_from_main((list(inputs), list(failures)), ranks)
    agreed_inputs, agreed_failures = list(agreed_inputs), list(agreed_failures)
    if not ranks.is_main and agreed_inputs != list(inputs):
        mine = set(inputs)
        differ = [spec for spec in agreed_inputs if spec not in mine] + \
                 [spec for spec in inputs if spec not in set(agreed_inputs)]
        print(f"tdmi infer: note: rank {ranks.rank}: the inputs' check here differs from rank 0's for "
              f"{', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}; running rank 0's list of "
              f"{len(agreed_inputs)} inputs", file=sys.stderr)
    return agreed_inputs, agreed_failures


def _not_where_asked() -> dict:
    """This process's results saved in a fallback folder, and its requested outputs that were not written
    (:mod:`tdmi.results_fallback`), as lines for rank 0's summary."""
    from tdmi import results_fallback

    saved = [f"writing {r.what} to {r.target} failed ({r.reason}); saved it to {r.saved} instead"
             for r in results_fallback.saved_elsewhere()]
    return {"saved": saved, "lost": results_fallback.lost_outputs()}


def _share_records(share) -> dict:
    """A share's fallback records (``{"saved": [...], "lost": [...]}``); none for a share without them."""
    records = share[3] if len(share) > 3 else None
    return records or {"saved": [], "lost": []}


def _infer_status(shares: list, failures: list[str]) -> int:
    """The run's exit status from every rank's share (:func:`_infer_summary`), the same on every rank: 2 when no
    input was done, 1 when some failed or any rank saved results elsewhere or lost an output, else 0."""
    done = any(share[0] for share in shares)
    failed = bool(failures) or any(share[1] for share in shares)
    elsewhere = any(_share_records(share)["saved"] or _share_records(share)["lost"] for share in shares)
    if failed and not done:
        return 2
    return 1 if failed or elsewhere else 0


def _infer_summary(shares: list, failures: list[str], total: int, out_dir: Path, options: PipelineOptions,
                   loaded: LoadedModel) -> int:
    """The run's last line from every rank's ``(per-input counts, failures, out folder was created, results saved
    elsewhere or lost)``; the exit status (:func:`_infer_status`: 0, 1 when some inputs failed or some results are
    not where they were asked for, 2 when none was done).

    The other ranks' results saved in a fallback folder and outputs not written are said again here, one line each
    with the rank (each rank said its own already, but rank 0's output is the run's)."""
    status = _infer_status(shares, failures)
    counts = [c for share in shares for c in share[0]]
    failures = failures + [f for share in shares for f in share[1]]
    created = any(share[2] for share in shares)
    saved = sum(len(_share_records(share)["saved"]) for share in shares)
    lost = sum(len(_share_records(share)["lost"]) for share in shares)
    for rank, share in enumerate(shares):
        if rank == 0:
            continue  # rank 0's own lines are above, said as they happened
        records = _share_records(share)
        for line in records["saved"]:
            print(f"tdmi infer: error: rank {rank}: {line}", file=sys.stderr)
        for line in records["lost"]:
            print(f"tdmi infer: error: rank {rank}: {line}", file=sys.stderr)
    frames = sum(c[0] for c in counts)
    person_frames = sum(c[1] for c in counts)
    pose_seconds = sum(c[2] for c in counts)
    encodes = sum(c[3] for c in counts)
    rate = person_frames / pose_seconds if pose_seconds > 0 else 0.0
    per = encodes / person_frames if person_frames else 0.0
    failed = f", {len(failures)} failed" if failures else ""
    if status == 2:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing was written: leave no empty folder behind
        print(f"infer: none of {total} inputs done; nothing written", file=sys.stderr)
        return status  # every failure has been printed once already
    elsewhere = "".join([f"; {saved} saved in a fallback folder" if saved else "",
                         f"; {lost} requested output{'s' if lost != 1 else ''} not written" if lost else ""])
    print(f"infer: {len(counts)} of {total} inputs done{failed}, {frames} frames, {person_frames} "
          f"person-frames, {rate:.1f} person-frames/s, {per:.2f} encodes/person-frame ({options.mode}"
          f"{', online' if options.online else ''}){' [RANDOM WEIGHTS]' if loaded.random_init else ''}; "
          f"wrote {out_dir}{elsewhere}{' (said above)' if elsewhere else ''}")
    return status


def _input_error(spec, err: BaseException) -> str:
    """The error's text, led by the input once (most messages already start with the path)."""
    text = str(err)
    return text if text.startswith(str(spec)) else f"{spec}: {text}"
