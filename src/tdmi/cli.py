"""The ``tdmi`` command: parse arguments, load the config, call one function. No logic lives here.

Each subcommand has a ``_add_<name>`` function that declares its arguments (with an example in ``--help``)
and a ``_run_<name>`` function that imports the implementing module lazily, so ``tdmi --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from tdmi import __version__
from tdmi.errors import CommandError, TdmiError  # noqa: F401  (CommandError re-exported for commands)
from tdmi.outputs import DEFAULT_REPORT



def _parser(subparsers, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", default="auto",
                   help="CPU threads: a number, or auto (default): the cores other processes leave free, by a 0.2 s "
                        "look at the CPU time they use; OMP_NUM_THREADS wins over auto")


def _add_config_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required,
                   help="experiment YAML file, or the name of a shipped config (tdmi info --list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=5e-4 (repeatable)")


def _load_config(args):
    from tdmi.config import load_config

    return load_config(args.config, args.overrides)


# ---------------------------------------------------------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = _parser(sub, "info", "print the model summary: parameters, multiply-adds, input/heatmap sizes, joints",
                "tdmi info --config tdmi_w48_pt17      (a shipped config by name, or a path)\n"
                "  tdmi info --checkpoint pose_hrnet_w32_256x192.pth   (the model a checkpoint holds)\n"
                "  tdmi info --list")
    _add_config_options(p)
    p.add_argument("--checkpoint", help="summarise the model of this checkpoint (tdmi .safetensors or a foreign "
                                        "HRNet .pth) instead of a config's")
    p.add_argument("--list", action="store_true", help="list the shipped configs with what each reproduces")
    p.add_argument("--json-out", help="also write the summary as JSON to this file")
    p.set_defaults(run=_run_info)


def config_description(path, width: int = 100) -> str:
    """A shipped config's leading comment as one line, shortened at a word boundary (``tdmi info --list``)."""
    import textwrap

    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return textwrap.shorten(" ".join(lines), width=width, placeholder=" ...")


def _run_info(args) -> int:
    if args.list:
        from tdmi.config import packaged_configs

        for path in packaged_configs():
            print(f"{path.stem:<40} {config_description(path)}")
        return 0
    from tdmi.models.summary import print_model_summary

    if args.checkpoint:
        return _info_checkpoint(args)
    if not args.config:
        raise CommandError("give --config NAME_OR_FILE or --checkpoint FILE (tdmi info --list shows the shipped "
                           "configs)")
    cfg = _load_config(args)

    return print_model_summary(cfg, json_out=args.json_out)


def _info_checkpoint(args) -> int:
    """``tdmi info --checkpoint FILE``: what the checkpoint is, then its model's summary."""
    from tdmi.inference.model_loading import load_inference_model
    from tdmi.models.summary import print_model_summary

    loaded = load_inference_model(args.checkpoint, args.config, args.overrides)
    print(f"checkpoint: {loaded.description}")
    for note in loaded.notes:
        print(f"note: {note}")
    return print_model_summary(loaded.config, json_out=args.json_out)


# --------------------------------------------------------------------------------------------------------------- synth


def _add_synth(sub) -> None:
    p = _parser(sub, "synth", "generate SynthTrack, a procedural multi-person video set in the PoseTrack18 layout",
                "tdmi synth --out data/synthtrack --sequences 10 --frames 30 --seed 0\n"
                "  tdmi synth --out data/synthtrack --counterfactual --sequences 30 --frames 20 --seed 2001")
    p.add_argument("--out", required=True, help="output root (images/, annotations/, detections)")
    p.add_argument("--sequences", type=int, default=10, help="number of sequences (default 10)")
    p.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the output is deterministic per seed")
    p.add_argument("--split", default=None,
                   help="split name used in paths and file names (default val; with --counterfactual the prefix of "
                        "the three split names, default cf)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("W", "H"), help="frame size in pixels")
    p.add_argument("--generator-version", type=int, default=None, choices=[1, 2],
                   help="SynthTrack generator version (default 2, the current one); 1 renders the sets the shipped "
                        "demo models were scored on (docs/results.md)")
    p.add_argument("--counterfactual", action="store_true",
                   help="write three paired sets, <split>clean, <split>distractor and <split>background: the same "
                        "scenes with one key person, then with a person walking through its crop, then with a moving "
                        "background; the key people's labels are identical in all three")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from tdmi.data.synthetic import synth_command

    return synth_command(args)


# ------------------------------------------------------------------------------------------------------------- prepare


def _add_prepare(sub) -> None:
    p = _parser(sub, "prepare", "check (and convert where needed) a downloaded PoseTrack17/18/21 or HiEve tree",
                "tdmi prepare posetrack18 --root /data/posetrack18")
    p.add_argument("dataset", choices=["posetrack17", "posetrack18", "posetrack21", "hieve"])
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--json-out", help="also write the report as JSON to this file")
    p.add_argument("--check-only", action="store_true", help="only report; do not convert PoseTrack17 .mat files")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    from tdmi.data.prepare import prepare_command

    return prepare_command(args)


# ------------------------------------------------------------------------------------------------------------ evaluate


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_evaluate(sub) -> None:
    p = _parser(sub, "evaluate", "PoseTrack mAP of prediction files, identical to the official poseval",
                "tdmi evaluate --gt data/posetrack18/annotations/val --pred runs/test/predictions --track")
    p.add_argument("--gt", required=True, help="folder of per-sequence ground-truth JSON files")
    p.add_argument("--pred", required=True, help="folder of per-sequence prediction JSON files (same names)")
    p.add_argument("--protocol", choices=["poseval", "pt21"], default="poseval",
                   help="poseval (PoseTrack17/18, default) or the PoseTrack21 evaluation kit's rules")
    p.add_argument("--allow-missing", action="store_true",
                   help="score a GT sequence without a prediction file as all misses instead of failing")
    p.add_argument("--track", action="store_true",
                   help="also the tracking metrics, under 'tracking' in --json-out: poseval's MOTA, MOTP, precision "
                        "and recall per joint group and Total (--protocol poseval), or the PoseTrack21 kit's HOTA, "
                        "DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA (--protocol pt21)")
    p.add_argument("--pt21-corrected", action="store_true",
                   help="with --protocol pt21 --track: count an empty frame's own joints, not the whole sequence's, "
                        "as the kit does (docs/tracking-metrics.md); published PT21 numbers have the kit's rule")
    p.add_argument("--json-out", help="write the table (8 keys, percent) and per-joint APs as JSON")
    p.add_argument("--report", nargs="?", const=DEFAULT_REPORT, metavar="FILE",
                   help="also write a self-contained HTML page (no network needed to view it): per-joint and "
                        "per-sequence AP (worst first), the tracking metrics with --track, and the worst key frames "
                        "drawn with GT and prediction side by side; without FILE beside --json-out (metrics.json -> "
                        "metrics.html). E.g. --json-out runs/eval/metrics.json --report, or --report eval.html")
    p.add_argument("--image-root", metavar="DIR",
                   help="with --report: the dataset root that the GT files' image names are relative to (default: "
                        "--gt's folder or one of its 3 parents, wherever the images are found)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes that read and check the files (default: one per 16 files, up to the cores, at "
                        "most 8; 1 = this process only); the numbers do not depend on it")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from tdmi.evaluation.evaluate_command import evaluate_command

    return evaluate_command(args)


# ---------------------------------------------------------------------------------------------------------------- test


def _add_test(sub) -> None:
    p = _parser(sub, "test", "run a checkpoint over a split, write prediction files and print the mAP table",
                "tdmi test --config tdmi_w48_pt17 --checkpoint runs/tdmi/best.safetensors --boxes gt\n"
                "  tdmi test --checkpoint runs/tdmi/best.safetensors --boxes val_boxes.json --flip-test --decode dark"
                "   # the authors' later protocol\n"
                "  torchrun --nproc_per_node 4 -m tdmi test --checkpoint runs/tdmi/best.safetensors   # batches shared "
                "over 4 GPUs\n\n"
                "The header line prints the protocol used (boxes, flip test, decoding, metric): published numbers\n"
                "differ in it as much as methods do (docs/results.md, \"Published numbers and their protocols\").")
    _add_config_options(p)
    p.add_argument("--checkpoint", required=True,
                   help="tdmi .safetensors checkpoint, or a foreign HRNet .pth (official, mmpose, DCPose, FAMI)")
    p.add_argument("--boxes", help="'gt' or a detection file; overrides test.boxes")
    p.add_argument("--track", nargs="?", const="pose", choices=["pose", "iou"],
                   help="also track: give predictions track ids (pose: IoU + OKS tracker, the default; iou: boxes "
                        "only), write the pruned tracking submission and report poseval's MOTA, or the PT21 kit's "
                        "HOTA with --set test.protocol=pt21 (test.track*)")
    p.add_argument("--decode", choices=["argmax", "dark", "dark_published"], default=None,
                   help="heatmap decoding (test.decode): argmax + quarter-pixel shift (DCPose/FAMI, the default), dark "
                        "(distribution-aware sub-pixel, Zhang et al. 2020, with tdmi's guard) or dark_published "
                        "(DARK without the guard)")
    p.add_argument("--flip-test", action="store_true",
                   help="HRNet's flip test (test.flip_test): average with the mirrored crop's heatmaps")
    p.add_argument("--out", help="output folder (default: test.out_dir)")
    p.add_argument("--report", nargs="?", const=DEFAULT_REPORT, metavar="FILE",
                   help="also write a self-contained HTML page (no network needed to view it): per-joint and "
                        "per-sequence AP (worst first), the tracking metrics with --track, and the worst key frames "
                        "drawn with GT and prediction side by side; without FILE: OUT/report.html. E.g. --out "
                        "runs/test --report")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _add_threads_option(p)
    p.set_defaults(run=_run_test)


def _run_test(args) -> int:
    from tdmi.engine.test import test_command

    return test_command(args)


# --------------------------------------------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    p = _parser(sub, "train", "train a model (single process, or one process per GPU under torchrun)",
                "tdmi train --config tdmi_w48_pt17 --set train.batch_size=8\n"
                "  torchrun --nproc_per_node 2 -m tdmi train --config tdmi_w48_pt17\n"
                "  tdmi train --resume runs/tdmi_w48_pt17")
    _add_config_options(p)
    p.add_argument("--resume", help="run folder (or checkpoint) to continue from; without --config the run's own "
                                    "config.yaml is used")
    p.add_argument("--out", help="run folder (default: train.out_dir)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms, strictly: the same run gives the same weights, and an op "
                        "without a deterministic kernel stops training with its name. Slower; on GPUs the DCN then "
                        "samples with gathers (deterministic backward, several times its usual memory) instead of "
                        "torchvision's or grid_sample's kernels, whose backward adds with atomics")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from tdmi.engine.train import train_command

    return train_command(args)


# --------------------------------------------------------------------------------------------------------------- infer


def _add_infer(sub) -> None:
    p = _parser(sub, "infer", "video or frame folder in, tracked poses out (PoseTrack18 JSON, optional MP4)",
                "tdmi infer street.mp4 --checkpoint model.safetensors --out out/ --render\n"
                "  torchrun --nproc_per_node 4 -m tdmi infer videos/ --out out/   # the videos shared over 4 GPUs")
    p.add_argument("inputs", nargs="+", help="video files, folders of frames, or folders of videos (each video an "
                                             "input)")
    p.add_argument("--checkpoint", help="tdmi .safetensors checkpoint, or a foreign HRNet .pth (official, mmpose, "
                                        "DCPose, FAMI; its single-frame HRNet); default: the shipped demo model")
    _add_config_options(p)
    box_source = p.add_mutually_exclusive_group()
    box_source.add_argument("--boxes", help="person boxes file: COCO results, a DCPose/PoseWarper list, "
                                            "PoseTrack-style or tdmi-boxes (docs/data.md section 3); boxes scoring "
                                            "below data.box_score_threshold (0.2) are dropped")
    box_source.add_argument(
        "--detector", default=None,
        help="person detector: a YOLOX / RTMDet / YOLOv8 .onnx file (needs onnxruntime: tdmi[onnx]; the best "
             "choice), a torchvision name (fasterrcnn_resnet50_fpn_v2, ... : needs torchvision and its weights "
             "already in the torch hub cache), or hog (built in, weak: upright people only). Default: a cached "
             "torchvision detector, else hog")
    p.add_argument("--detector-layout", default="auto", choices=["auto", "yolox", "rtmdet", "yolov8"],
                   help="output layout and preprocessing of an .onnx detector (default: read from the file)")
    p.add_argument("--out", default="tdmi-out", help="output folder (default tdmi-out)")
    p.add_argument("--render", action="store_true",
                   help="also write an MP4 with skeletons coloured per track (H.264, which browsers play, with "
                        "pip install 'tdmi[video]'; otherwise OpenCV's mp4v, with a note)")
    p.add_argument("--render-scores", action="store_true",
                   help="like --render, and write each drawn joint's score beside it")
    p.add_argument("--tracker", choices=["pose", "iou"], default="pose",
                   help="track ids written: pose (IoU + OKS on the estimated poses, re-identifies people across "
                        "10-frame gaps; the default) or iou (boxes only); docs/tracking-metrics.md")
    p.add_argument("--redetect", action="store_true",
                   help="run the detector even when OUT/<input>.boxes.json holds its boxes for this input (a rerun "
                        "on the same input and detector reuses them by default)")
    p.add_argument("--online", action="store_true",
                   help="causal: frame t from frames t-delta..t only (future slots padded with frame t), for live use")
    p.add_argument("--mode", choices=["tube", "warp", "exact"], default="tube",
                   help="feature sharing: tube (one crop per track window, fast), warp (each frame encoded once in "
                        "its own crop, supporting features resampled into the key frame's crop) or exact (the "
                        "paper's per-key-frame crop); docs/results.md compares their speed and mAP")
    p.add_argument("--window", type=int, default=12,
                   help="key frames estimated together offline (batching; memory and latency grow with it); in tube "
                        "mode also the most key frames that share one crop box per track (default 12)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="mixed precision of the model: bf16 or fp16 autocast (faster on GPUs; bf16 also on recent "
                        "CPUs); the heatmap head and keypoint decoding stay float32 (default none)")
    p.add_argument("--decode", choices=["argmax", "dark", "dark_published"], default=None,
                   help="heatmap decoding: argmax + quarter-pixel shift (HRNet/DCPose/FAMI), dark (distribution-"
                        "aware sub-pixel, Zhang et al. 2020, with tdmi's guard) or dark_published (no guard); "
                        "default: the checkpoint config's test.decode")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _add_threads_option(p)
    p.set_defaults(run=_run_infer)


def _run_infer(args) -> int:
    from tdmi.inference.infer_command import infer_command

    return infer_command(args)


# ---------------------------------------------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = _parser(sub, "demo", "the embedded default: synthesise a clip, run the shipped model, render and score it",
                "tdmi demo            # or: tdmi demo --video street.mp4")
    p.add_argument("--video", help="run on this video instead of a synthetic clip")
    p.add_argument("--out", default="tdmi-demo", help="output folder (default tdmi-demo)")
    p.add_argument("--frames", type=int, default=24, help="frames of the synthetic clip (default 24)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _add_threads_option(p)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from tdmi.inference.demo import demo_command

    return demo_command(args)


# -------------------------------------------------------------------------------------------------------------- export


def _add_export(sub) -> None:
    p = _parser(sub, "export", "export the per-frame encoder and the clip decoder as two ONNX graphs",
                "tdmi export --checkpoint model.safetensors --format onnx --out export/")
    p.add_argument("--checkpoint", help="tdmi .safetensors checkpoint, or a foreign HRNet .pth (official, mmpose, "
                                        "DCPose, FAMI; its single-frame HRNet); default: the shipped demo model")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", default="tdmi-export", help="output folder (default tdmi-export)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from tdmi.inference.export import export_command

    return export_command(args)


# -------------------------------------------------------------------------------------------------------------- main

_COMMANDS: tuple[Callable, ...] = (
    _add_demo, _add_infer, _add_train, _add_test, _add_evaluate, _add_synth, _add_prepare, _add_export, _add_info,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdmi",
        description="TDMI: mutual-information-based temporal difference learning for video pose estimation.",
        epilog="example:\n  tdmi demo\n  tdmi <command> --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tdmi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _COMMANDS:
        add(sub)
    return parser


def one_line(err: BaseException) -> str:
    """An error's message without the worker traceback that a DataLoader worker process wraps around it."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    kind, sep, message = last.partition(": ")  # "tdmi.errors.DataFormatError: <the message>"
    return message if sep and "." in kind and " " not in kind else last


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: ``--out`` (a folder, every command), ``--json-out`` and ``--report`` (files) must be writable or
    creatable (:mod:`tdmi.outputs`); otherwise one line naming the option, exit 2, nothing written.

    ``tdmi test`` under torchrun: only rank 0 writes (:mod:`tdmi.sharding`), so only rank 0 checks; the other ranks
    may run where the output location is not even mounted."""
    from tdmi.outputs import check_output_dir, check_output_file, check_report_path, torchrun_rank

    if getattr(args, "image_root", None) and not getattr(args, "report", None):
        raise CommandError("--image-root: only the --report page reads images; add --report, or leave it out")
    if args.command == "test" and torchrun_rank() != 0:
        return
    if getattr(args, "out", None):
        check_output_dir(args.out, "--out")
    if getattr(args, "json_out", None):
        check_output_file(args.json_out, "--json-out")
    if getattr(args, "report", None):  # a bare --report of tdmi test without --out: checked once the config is read
        check_report_path(args.report, out_dir=getattr(args, "out", None), json_out=getattr(args, "json_out", None),
                          known_later=args.command == "test")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    from tdmi import results_fallback
    from tdmi.config import ConfigError

    results_fallback.reset(args.command)
    try:
        check_outputs(args)
        if hasattr(args, "threads"):
            from tdmi.threads import apply_threads, choose_threads

            threads, why = choose_threads(args.threads)
            apply_threads(threads)
            print(f"tdmi {args.command}: {threads} CPU thread{'s' if threads > 1 else ''} ({why})", file=sys.stderr)
        return results_fallback.exit_status(int(args.run(args) or 0))  # 1 when results were saved elsewhere
    except (TdmiError, ConfigError, FileNotFoundError) as err:
        print(f"tdmi {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tdmi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
