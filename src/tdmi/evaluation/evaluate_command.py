"""``tdmi evaluate``: score a folder of prediction files against a folder of ground truth, print the table, and
write it (``--json-out``) and its HTML report (``--report``).

The CLI glue only: the metrics are :mod:`tdmi.evaluation.posetrack_ap` (AP), :mod:`tdmi.evaluation.posetrack_mota`
and :mod:`tdmi.evaluation.pt21_hota` (tracking), the page :mod:`tdmi.evaluation.report`. Both files go through
:func:`tdmi.results_fallback.save_results`, so a full disk loses neither.
"""

from __future__ import annotations

from tdmi.evaluation.posetrack_ap import evaluate_dirs, write_json_atomic
from tdmi.results_fallback import save_results


def evaluate_command(args) -> int:
    """``tdmi evaluate --gt DIR --pred DIR [--protocol poseval|pt21] [--allow-missing] [--track] [--json-out FILE]
    [--report [FILE]] [--image-root DIR]``."""
    result = evaluate_dirs(args.gt, args.pred, protocol=args.protocol, allow_missing=args.allow_missing,
                           progress=True, workers=getattr(args, "workers", None))
    print(f"PoseTrack AP ({result.protocol} protocol): {result.num_sequences} sequences, "
          f"{result.num_frames} frames evaluated")
    print(result.format_table())
    if result.missing_predictions:
        print(f"scored as all misses (no prediction file): {', '.join(result.missing_predictions)}")
    payload = result.to_json_dict(gt_dir=str(args.gt), pred_dir=str(args.pred))
    summary = f"evaluate: Mean AP {result.table['Mean']:.1f} over {result.num_frames} frames"
    if getattr(args, "track", False) and args.protocol == "pt21":
        from tdmi.evaluation.pt21_hota import evaluate_hota_dirs

        corrected = bool(getattr(args, "pt21_corrected", False))
        hota = evaluate_hota_dirs(args.gt, args.pred, corrected=corrected, allow_missing=args.allow_missing)
        print(f"PoseTrack21 pose tracking (the kit's hota_pose{', its defects corrected' if corrected else ''}): "
              f"{hota.num_sequences} sequences")
        print(hota.format_table())
        payload["tracking"] = hota.to_json_dict()
        summary += f", HOTA {hota.table['HOTA']:.1f}"
    elif getattr(args, "track", False):
        from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs

        tracking = evaluate_tracking_dirs(args.gt, args.pred, allow_missing=args.allow_missing, progress=True,
                                          workers=getattr(args, "workers", None))
        print(f"PoseTrack tracking (poseval --evalPoseTracking): {tracking.num_sequences} sequences, "
              f"{tracking.num_frames} frames (each sequence's last evaluated frame is not counted, as in poseval)")
        print(tracking.format_table())
        for note in tracking.notes:
            print(f"note: {note}")
        payload["tracking"] = tracking.to_json_dict()
        summary += f", MOTA {tracking.table['MOTA']['Total']:.1f}"
    json_out = None
    if args.json_out:  # a full disk loses nothing: the table goes to a fallback folder (tdmi.results_fallback)
        json_out = save_results(args.json_out, lambda path: write_json_atomic(path, payload), "the results table")
    if getattr(args, "report", None):  # a bare --report: beside the table, wherever that was saved
        from tdmi.evaluation.report import write_evaluate_report

        print(f"report: wrote {write_evaluate_report(args, payload, json_out=json_out)}")
    print(summary + (f"; wrote {json_out}" if json_out else ""))
    return 0
