"""``tdmi test --report``: the HTML report (:mod:`tdmi.evaluation.report`) of a finished test run.

The page shows ``results.json``'s numbers, every sequence's AP from the run's own prediction and ground-truth files,
and the worst key frames drawn on the images the dataset read (``TestResult.image_root``: ``data.image_root`` under
``data.root``).
"""

from __future__ import annotations

from pathlib import Path

from tdmi.config import ExperimentConfig
from tdmi.data.dataset import under_root


def write_test_report(path: str | Path, result, cfg: ExperimentConfig) -> Path:
    """Write the report of ``result`` (a :class:`~tdmi.engine.test.TestResult`) to ``path``, atomically (to the
    fallback folder of :mod:`tdmi.results_fallback` when ``path`` cannot be written); returns where it is."""
    from tdmi.evaluation.report import make_report

    name = result.meta.get("experiment") or cfg.name
    image_root = result.image_root if result.image_root is not None else under_root(cfg, cfg.data.image_root)
    return make_report(path, result.to_json_dict(), result.ground_truth, result.predictions_dir,
                       protocol=result.result.protocol, image_root=image_root, title=f"tdmi test: {name}")
