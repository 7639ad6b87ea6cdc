"""The HTML report of ``tdmi test --report`` and ``tdmi evaluate --report``: one self-contained page.

The page needs nothing but itself: inline CSS, bars drawn as plain HTML, frames embedded as base64 JPEG data URIs,
one small inline script (sortable tables; the page reads fine without it), no fonts, links or requests. It holds:

- the paper's table (Head ... Ankle, Mean) as bars, and poseval's 15 joints with AP, precision, recall and counts;
- the tracking metrics when the evaluation has them (poseval's MOTA, MOTP, precision, recall per joint group, or the
  PoseTrack21 kit's HOTA, DetA, AssA, ...);
- every sequence's AP scored alone (:mod:`tdmi.evaluation.per_sequence`), worst first;
- the worst labelled key frames (lowest share of GT joints hit, at most two per sequence while others remain), the
  ground truth and the prediction drawn side by side on the frame's image, read from the dataset root; when no image
  is found the gallery says so in one line (drawn by :mod:`tdmi.evaluation.report_gallery`).

All numbers in the first three parts come from the results dictionary the command also writes as JSON
(``results.json`` / ``--json-out``); the per-sequence part and the gallery re-read the same files.

    make_report("out/report.html", results, gt_dir, pred_dir, protocol="poseval", image_root="data/synthtrack")
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from tdmi.atomic import atomic_write_bytes
from tdmi.evaluation.per_sequence import SequenceScore, score_sequences, worst_frames
from tdmi.evaluation.report_gallery import GALLERY_SIZE, LOW_SCORE, Gallery, build_gallery, find_image_root
from tdmi.keypoints import POSEVAL15
from tdmi.results_fallback import save_results

TABLE_KEYS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")


# -------------------------------------------------------------------------------------------------------------- page


def _number(value: Any, digits: int = 1) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if math.isnan(value) else f"{value:.{digits}f}"


def _sort_value(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "nan"
    return "nan" if math.isnan(value) else repr(value)


def _colour(value: Any) -> str:
    """Red (0) to green (100) for a percentage; grey when there is none."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "#bbb"
    if math.isnan(value):
        return "#bbb"
    return f"hsl({max(0.0, min(100.0, value)) * 1.2:.0f}, 62%, 44%)"


def _bar(value: Any, width_px: Optional[int] = None) -> str:
    try:
        share = max(0.0, min(100.0, float(value)))
    except (TypeError, ValueError):
        share = 0.0
    if math.isnan(share):
        share = 0.0
    style = f' style="width:{width_px}px"' if width_px else ""
    return (f'<span class="bar"{style}><span style="width:{share:.2f}%;background:{_colour(value)}"></span>'
            f'</span>')


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any, digits: int = 1) -> str:
    return f'<td class="num" data-value="{_sort_value(value)}">{_number(value, digits)}</td>'


def _joint_bars(payload: Mapping[str, Any]) -> str:
    rows = []
    for key in TABLE_KEYS:
        value = payload.get(key)
        rows.append(f'<div class="row{" total" if key == "Mean" else ""}"><span class="label">{key}</span>'
                    f'{_bar(value)}<span class="value">{_number(value)}</span></div>')
    return '<div class="bars" id="joint-bars">' + "".join(rows) + "</div>"


def _joint_table(payload: Mapping[str, Any]) -> str:
    per_joint = payload.get("per_joint") or {}
    if not per_joint.get("ap"):
        return ""
    head = ("<tr><th>joint</th><th>AP</th><th>precision</th><th>recall</th><th>GT joints</th>"
            "<th>predicted joints</th></tr>")
    rows = []
    for name in POSEVAL15.names:
        rows.append(f"<tr><td>{_esc(name.replace('_', ' '))}</td>{_cell(per_joint['ap'].get(name))}"
                    f"{_cell((per_joint.get('precision') or {}).get(name))}"
                    f"{_cell((per_joint.get('recall') or {}).get(name))}"
                    f"{_cell((per_joint.get('num_gt_joints') or {}).get(name), 0)}"
                    f"{_cell((per_joint.get('num_detections') or {}).get(name), 0)}</tr>")
    return (f'<details><summary>poseval\'s 15 joints</summary><table class="sortable">'
            f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></details>")


def _tracking_section(payload: Mapping[str, Any]) -> str:
    tracking = payload.get("tracking")
    if not isinstance(tracking, Mapping):
        return ""
    parts = ['<section id="tracking"><h2>Tracking</h2>']
    if tracking.get("protocol") == "pt21":
        keys = [k for k in ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA") if k in tracking]
        parts.append("<p>The PoseTrack21 kit's pose-tracking metrics"
                     f"{' (its defects corrected)' if tracking.get('kit_defects_corrected') else ''}, percent.</p>")
        parts.append("<table><thead><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr></thead><tbody><tr>"
                     + "".join(_cell(tracking.get(k)) for k in keys) + "</tr></tbody></table>")
    else:
        groups = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")
        metrics = [m for m in ("MOTA", "MOTP", "Precision", "Recall") if isinstance(tracking.get(m), Mapping)]
        parts.append("<p>poseval's tracking metrics (<code>--evalPoseTracking</code>), percent.</p>")
        mota = tracking.get("MOTA", {}).get("Total") if isinstance(tracking.get("MOTA"), Mapping) else None
        if mota is not None:
            parts.append(f'<p class="headline">MOTA <b>{_number(mota)}</b></p>')
        parts.append("<table><thead><tr><th></th>" + "".join(f"<th>{g}</th>" for g in groups) + "</tr></thead><tbody>"
                     + "".join(f"<tr><th>{m}</th>" + "".join(_cell(tracking[m].get(g)) for g in groups) + "</tr>"
                               for m in metrics) + "</tbody></table>")
    settings = tracking.get("settings")
    if isinstance(settings, Mapping):
        parts.append("<p class=\"small\">tracker settings: "
                     + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in settings.items()) + "</p>")
    for note in tracking.get("notes") or []:
        parts.append(f'<p class="small">note: {_esc(note)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _sequence_table(sequences: Sequence[SequenceScore]) -> str:
    def key(s: SequenceScore):
        return (math.isnan(s.mean_ap), s.mean_ap if not math.isnan(s.mean_ap) else 0.0, s.name)

    ordered = sorted(sequences, key=key)
    groups = TABLE_KEYS[:-1]
    head = ("<tr><th>#</th><th>sequence</th><th>Mean AP</th>" + "".join(f"<th>{g}</th>" for g in groups)
            + "<th>frames</th><th>GT people</th><th>joints hit %</th></tr>")
    rows = []
    for rank, seq in enumerate(ordered, 1):
        gt_joints = sum(f.gt_joints for f in seq.frames)
        hit = 100.0 * sum(f.correct_joints for f in seq.frames) / gt_joints if gt_joints else math.nan
        missing = ' <span class="tag">no prediction file</span>' if seq.missing_prediction else ""
        rows.append(f'<tr><td class="num" data-value="{rank}">{rank}</td><td>{_esc(seq.name)}{missing}</td>'
                    f'<td class="num" data-value="{_sort_value(seq.mean_ap)}">{_bar(seq.mean_ap, 90)} '
                    f"{_number(seq.mean_ap)}</td>"
                    + "".join(_cell(seq.result.table.get(g)) for g in groups)
                    + _cell(seq.result.num_frames, 0) + _cell(seq.result.num_gt_people, 0) + _cell(hit) + "</tr>")
    return (f'<table class="sortable" id="sequences"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


def _gallery_section(gallery: Gallery) -> str:
    parts = ['<section id="gallery"><h2>Worst key frames</h2>',
             "<p>The labelled frames whose ground-truth joints were hit least (PCKh@0.5 under poseval's matching), "
             "at most two per sequence. Left: ground truth, one colour per person. Right: the prediction; each joint "
             'is <span class="dot" style="background:#3cc83c"></span> a hit as poseval counts it, '
             '<span class="dot" style="background:#eb2828"></span> not a hit, hollow when it scores below '
             f"{LOW_SCORE:g}.</p>"]
    if gallery.note:
        parts.append(f'<p class="note" id="gallery-note">{_esc(gallery.note)}</p>')
    if gallery.items:
        parts.append('<div class="gallery">')
        for item in gallery.items:
            f = item.frame
            alt = _esc(f"{f.sequence} {f.file_name}")
            gt, pred = (base64.b64encode(data).decode("ascii") for data in (item.gt_jpeg, item.pred_jpeg))
            parts.append(
                '<figure><div class="pair">'
                f'<img alt="ground truth, {alt}" src="data:image/jpeg;base64,{gt}">'
                f'<img alt="prediction, {alt}" src="data:image/jpeg;base64,{pred}">'
                f"</div><figcaption><b>{_esc(f.sequence)}</b> {_esc(Path(f.file_name).name)}<br>"
                f"{f.correct_joints} of {f.gt_joints} GT joints hit ({_number(f.score)}%), {f.false_joints} predicted "
                f"joints hit nothing; sequence AP {_number(item.sequence_ap)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _meta_list(payload: Mapping[str, Any]) -> str:
    meta = payload.get("meta") or {}
    items = []
    for key, value in meta.items():
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, Mapping):
            continue
        elif isinstance(value, float):
            value = f"{value:.4g}"
        items.append(f"<dt>{_esc(key.replace('_', ' '))}</dt><dd>{_esc(value)}</dd>")
    return f'<dl class="meta">{"".join(items)}</dl>' if items else ""


_CSS = """
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d232a;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:6px;padding:4px 16px 14px;margin-top:16px}
.sub{color:#5b6570;margin:0 0 8px}.small{color:#5b6570;font-size:12px}
.headline{font-size:16px}.headline b{font-size:22px}
dl.meta{display:grid;grid-template-columns:repeat(3,max-content minmax(0,1fr));gap:2px 12px;font-size:12px;
margin:8px 0 0}
dl.meta dt{color:#5b6570}dl.meta dd{margin:0;word-break:break-all}
.bars{max-width:640px}.bars .row{display:flex;align-items:center;gap:10px;margin:5px 0}
.bars .label{width:70px;text-align:right;color:#333}.bars .value{width:48px;font-variant-numeric:tabular-nums}
.bars .bar{flex:1;height:18px}.bars .total .label,.bars .total .value{font-weight:700}
.bar{display:inline-block;vertical-align:middle;height:10px;background:#eceff3;border-radius:3px;overflow:hidden}
.bar>span{display:block;height:100%}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}thead th{background:#f0f2f5;position:sticky;top:0}
.js table.sortable thead th{cursor:pointer}.js table.sortable thead th[data-order=asc]::after{content:" \\25B2"}
.js table.sortable thead th[data-order=desc]::after{content:" \\25BC"}
.js-only{display:none}.js .js-only{display:block}
.scroll{max-height:560px;overflow:auto;border:1px solid #eceff3}
.tag{background:#fde2e2;color:#9b1c1c;border-radius:3px;padding:0 4px;font-size:11px}
.note{background:#fff7e0;border:1px solid #f0d98c;border-radius:4px;padding:6px 10px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px;align-items:start}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;border:1px solid #000;vertical-align:-1px}
figure{margin:0;border:1px solid #e2e5ea;border-radius:4px;padding:6px;background:#fafbfc}
.pair{display:flex;gap:4px}.pair img{width:50%;height:auto;display:block;background:#222}
figcaption{font-size:12px;margin-top:4px;color:#333}
footer{color:#5b6570;font-size:12px;margin-top:20px}
"""

# Sortable tables; the html element gets the class "js" (the page shows its sort hint only then, and the browser test
# checks it). Numbers sort by data-value; missing values ("nan") always sort last.
_SCRIPT = """
(function () {
  document.documentElement.classList.add("js");
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("data-order") !== "asc";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-order"); });
        th.setAttribute("data-order", ascending ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(row) {
          var cell = row.cells[column];
          var raw = cell.getAttribute("data-value");
          return raw === null ? cell.textContent.trim() : (raw === "nan" ? NaN : parseFloat(raw));
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (typeof x === "number" && typeof y === "number") {
            if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
            return ascending ? x - y : y - x;
          }
          return ascending ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
})();
"""


def build_report_html(payload: Mapping[str, Any], sequences: Sequence[SequenceScore], gallery: Gallery, *,
                      title: str = "tdmi report", generated: Optional[str] = None) -> str:
    """The page as a string.

    Args:
        payload: the results dictionary (``results.json`` of ``tdmi test``, the ``--json-out`` of ``tdmi
            evaluate``): the 8 table keys in percent, ``per_joint``, ``meta`` and, with tracking, ``tracking``.
        sequences: every sequence scored alone (:func:`~tdmi.evaluation.per_sequence.score_sequences`).
        gallery: the drawn worst frames (:func:`build_gallery`).
        title: the page's heading.
        generated: the time stamp shown (default: now, local time).
    """
    from tdmi import __version__

    meta = payload.get("meta") or {}
    generated = generated or _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mean = payload.get("Mean")
    protocol = meta.get("protocol", "poseval")
    summary = (f"Mean AP <b>{_number(mean)}</b> ({_esc(protocol)} protocol) over {_esc(meta.get('sequences', '?'))} "
               f"sequences, {_esc(meta.get('frames_evaluated', '?'))} evaluated frames")
    if isinstance(payload.get("tracking"), Mapping):
        tracking = payload["tracking"]
        if isinstance(tracking.get("MOTA"), Mapping):
            summary += f", MOTA <b>{_number(tracking['MOTA'].get('Total'))}</b>"
        elif "HOTA" in tracking:
            summary += f", HOTA <b>{_number(tracking.get('HOTA'))}</b>"
    body = [
        f"<header><h1>{_esc(title)}</h1><p class=\"sub\">generated {_esc(generated)} by tdmi {_esc(__version__)}</p>"
        f'<p class="headline">{summary}</p>{_meta_list(payload)}</header>',
        '<section id="joints"><h2>AP per joint</h2><p>poseval\'s table, percent (Mean = the mean of the 15 joint '
        "APs, so Head weighs 3/15 and every other group 2/15).</p>",
        _joint_bars(payload), _joint_table(payload), "</section>",
        _tracking_section(payload),
        '<section id="per-sequence"><h2>AP per sequence, worst first</h2><p>Each sequence scored alone (its AP is '
        "not additive: the split's AP above is not their mean). Joints hit: the share of GT joints a matched "
        'prediction hits (PCKh@0.5).</p><p class="small js-only">Click a column heading to sort by it.</p>'
        f'<div class="scroll">{_sequence_table(sequences)}</div></section>',
        _gallery_section(gallery),
        "<footer>Self-contained page: no network access is needed to view it.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(part for part in body if part)
            + f"\n</main><script>{_SCRIPT}</script></body></html>\n")


def make_report(path: str | os.PathLike, payload: Mapping[str, Any], gt_dir: str | os.PathLike,
                pred_dir: str | os.PathLike, *, protocol: str = "poseval", image_root: str | os.PathLike | None = None,
                find_images: bool = False, title: str = "tdmi report", allow_missing: bool = False,
                workers: Optional[int] = None, gallery_size: int = GALLERY_SIZE) -> Path:
    """Score every sequence of ``gt_dir`` / ``pred_dir`` alone, draw the worst frames and write the page atomically;
    returns where it was written: ``path``, or when that fails (a full disk) the fallback folder of
    :func:`tdmi.results_fallback.save_results`, which says so in one line.

    ``image_root``: the folder the GT's image file names are relative to (``tdmi test``: the dataset's image root);
    with ``find_images`` and no ``image_root``, :func:`find_image_root` looks near ``gt_dir``. Without either, only
    absolute file names are drawn.
    """
    sequences = score_sequences(gt_dir, pred_dir, protocol=protocol, allow_missing=allow_missing, workers=workers)
    frames = worst_frames(sequences, gallery_size)
    if image_root is None and find_images and frames:
        image_root = find_image_root(gt_dir, [f.file_name for f in frames])
    gallery = build_gallery(frames, image_root, {s.name: s.mean_ap for s in sequences})
    page = build_report_html(payload, sequences, gallery, title=title).encode("utf-8")
    return save_results(path, lambda target: atomic_write_bytes(target, page), "the HTML report")


def write_evaluate_report(args, payload: Mapping[str, Any], json_out: str | os.PathLike | None = None) -> Path:
    """``tdmi evaluate --report [FILE] [--image-root DIR]``: the page of ``payload`` (the ``--json-out``
    dictionary), at FILE or beside the JSON: ``json_out``, where it was saved (a fallback folder on a full disk),
    else ``--json-out``. The CLI checked the place before any work (:func:`tdmi.outputs.check_report_path`); a
    write that fails now goes to the fallback folder."""
    from tdmi.outputs import check_report_path, report_path

    # (a bare --report without --json-out has no place: check_report_path says so, as the CLI did)
    path = report_path(args.report, json_out=json_out or getattr(args, "json_out", None)) or check_report_path(
        args.report)
    image_root = getattr(args, "image_root", None)
    return make_report(path, payload, args.gt, args.pred, protocol=args.protocol, image_root=image_root,
                       find_images=image_root is None, title=f"tdmi evaluate: {args.pred}",
                       allow_missing=args.allow_missing, workers=getattr(args, "workers", None))
