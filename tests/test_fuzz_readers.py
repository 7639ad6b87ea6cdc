"""Fuzzing the readers users feed files to: any input ends in a result or a one-line tdmi error, never a traceback.

Each test mutates a valid document (replaces a random subtree by random JSON, deletes a key, or truncates a
list) and feeds it to a reader. An exception must be a :class:`~tdmi.errors.TdmiError` (the CLI prints those as
one line); a ``TypeError``, ``KeyError``, ``IndexError`` ... is a bug. ``EXAMPLES`` inputs per reader.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from posetrack_gen import make_gt_sequence, make_predictions, to_annolist
from tdmi.config import load_config
from tdmi.data.detections import load_detections
from tdmi.errors import TdmiError
from tdmi.evaluation.posetrack_ap import evaluate_sequences
from tdmi.evaluation.posetrack_mota import evaluate_tracking_sequences
from tdmi.inference.detectors import BoxFileDetector

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

_rng = np.random.default_rng(3)
GT = make_gt_sequence(_rng, 1, num_frames=4, ignore_prob=0.5)
PRED = make_predictions(_rng, GT)
GT17 = to_annolist(GT)
BOXES = [{"image_name": "images/val/000001_mpii_test/000000.jpg", "bbox": [1, 2, 30, 60], "score": 0.9,
          "category_id": 1}, {"image_id": 3, "bbox": [5, 5, 10, 10], "score": 0.3}]
CONFIG = {"name": "x", "model": {"arch": "hrnet", "delta": 0, "backbone": {"width": 8}, "input_size": [96, 128]},
          "data": {"dataset": "synthtrack", "root": "data"}, "train": {"lr": 0.001, "epochs": 2}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8)


@st.composite
def mutated(draw, document):
    """``document`` with 1-3 random mutations at random places."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        node, parent, key = doc, None, None
        for _ in range(draw(st.integers(0, 6))):  # walk down a random path
            if isinstance(node, dict) and node:
                parent, key = node, draw(st.sampled_from(sorted(node, key=str)))
            elif isinstance(node, list) and node:
                parent, key = node, draw(st.integers(0, len(node) - 1))
            else:
                break
            node = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "truncate"]))
        if parent is None:
            if action == "replace":
                doc = draw(json_values)
            continue
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "truncate" and isinstance(node, list):
            parent[key] = node[: draw(st.integers(0, max(0, len(node) - 1)))]
        else:
            parent[key] = draw(json_values)
    return doc


def _roundtrip(doc):
    """What a file would hold: JSON text parsed back (NaN/Infinity tokens included, as Python writes them)."""
    return json.loads(json.dumps(doc))


def _only_tdmi_errors(call) -> None:
    try:
        call()
    except TdmiError as err:
        assert str(err) and "Traceback" not in str(err)


@FUZZ
@given(pred=mutated(PRED))
def test_evaluate_with_a_mutated_prediction_file(pred):
    for protocol in ("poseval", "pt21"):
        _only_tdmi_errors(lambda: evaluate_sequences({"s": GT}, {"s": _roundtrip(pred)}, protocol=protocol))
    _only_tdmi_errors(lambda: evaluate_tracking_sequences({"s": GT}, {"s": _roundtrip(pred)}))


def _null_in_an_ignore_region(document):
    """Found by scripts/hypothesis_stress.py (issue 21): a null coordinate became NaN, and shapely's GEOS raised
    its own exception instead of a one-line error naming the field."""
    doc = copy.deepcopy(document)
    doc["images"][0]["ignore_regions_x"] = [[None, 1135.0, 1135.0, 916.0]]
    doc["images"][0]["ignore_regions_y"] = [[310.0, 528.0, 310.0, 528.0]]
    return doc


@FUZZ
@given(gt=mutated(GT))
@example(gt=_null_in_an_ignore_region(GT))
def test_evaluate_with_a_mutated_ground_truth_file(gt):
    for protocol in ("poseval", "pt21"):
        _only_tdmi_errors(lambda: evaluate_sequences({"s": _roundtrip(gt)}, {"s": PRED}, protocol=protocol))


@FUZZ
@given(gt=mutated(GT17))
def test_evaluate_with_a_mutated_posetrack17_file(gt):
    _only_tdmi_errors(lambda: evaluate_sequences({"s": _roundtrip(gt)}, {"s": _roundtrip(gt)}))
    _only_tdmi_errors(lambda: evaluate_tracking_sequences({"s": _roundtrip(gt)}, {"s": _roundtrip(gt)}))


@FUZZ
@given(boxes=mutated(BOXES))
def test_mutated_box_files(tmp_path_factory, boxes):
    path = tmp_path_factory.mktemp("boxes") / "boxes.json"
    path.write_text(json.dumps(boxes))
    _only_tdmi_errors(lambda: load_detections(path))
    _only_tdmi_errors(lambda: BoxFileDetector(path))


@FUZZ
@given(config=mutated(CONFIG))
def test_mutated_configs(tmp_path_factory, config):
    path = tmp_path_factory.mktemp("config") / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    _only_tdmi_errors(lambda: load_config(path))


@FUZZ
@given(gt=mutated(GT))
def test_mutated_ground_truth_for_training_and_test(tmp_path_factory, gt):
    from tdmi.data.posetrack import load_sequences

    folder = tmp_path_factory.mktemp("gt")
    (folder / "000001_mpii_test.json").write_text(json.dumps(gt))
    _only_tdmi_errors(lambda: load_sequences(folder))


def test_the_documents_are_valid_to_begin_with(tmp_path: Path):
    assert np.isfinite(evaluate_sequences({"s": GT}, {"s": PRED}).table["Mean"])
    path = tmp_path / "b.json"
    path.write_text(json.dumps(BOXES))
    assert len(load_detections(path)) == 2 and load_config(_write_yaml(tmp_path, CONFIG)).model.arch == "hrnet"


def _write_yaml(folder: Path, doc: dict) -> Path:
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
