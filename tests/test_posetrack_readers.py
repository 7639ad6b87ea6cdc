"""PoseTrack17/18/21 readers and the PoseTrack18-schema writer (tdmi.data.posetrack)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from records_helpers import assert_sequences_equal, write_json
from tdmi.data.posetrack import (
    FLAG_LABELED,
    FLAG_OCCLUDED,
    POSETRACK18_SOURCE_IDS,
    bbox_from_keypoints,
    frame_index_base,
    load_sequence_file,
    load_sequences,
    parse_frame_index,
    posetrack18_image_id,
    posetrack18_image_id_parts,
    save_sequences,
    sequence_to_posetrack18_json,
)
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17, POSEVAL15

J = POSETRACK17.num_joints


# ------------------------------------------------------------------------------------------------ fixtures


def _keypoints(**joints: tuple[float, float, float]) -> list[float]:
    """51 numbers with the named joints set (name -> (x, y, flag)), everything else 0."""
    flat = [0.0] * (3 * J)
    for name, xyv in joints.items():
        i = POSETRACK17.index(name)
        flat[3 * i:3 * i + 3] = xyv
    return flat


def _pt21_doc() -> dict:
    images = [
        {"file_name": "images/val/000342_mpii_test/000000.jpg", "id": 10003420000, "frame_id": 10003420000,
         "vid_id": "000342", "nframes": 3, "is_labeled": True, "has_labeled_person": True,
         "ignore_regions_x": [[1, 50, 50]], "ignore_regions_y": [[2, 2, 60]]},
        {"file_name": "images/val/000342_mpii_test/000001.jpg", "id": 10003420001, "frame_id": 10003420001,
         "vid_id": "000342", "nframes": 3, "is_labeled": False, "has_labeled_person": True,
         "ignore_regions_x": [], "ignore_regions_y": []},
        {"file_name": "images/val/000342_mpii_test/000002.jpg", "id": 10003420002, "frame_id": 10003420002,
         "vid_id": "000342", "nframes": 3, "is_labeled": False, "has_labeled_person": False,
         "ignore_regions_x": [], "ignore_regions_y": []},
    ]
    annotations = [
        {"id": 1000342000000, "image_id": 10003420000, "category_id": 1, "track_id": 4, "person_id": 1234,
         "bbox": [10, 20, 100, 200], "bbox_head": [40, 20, 30, 30], "scores": [],
         # nose visible; left shoulder occluded but annotated (flag 0, real coordinates);
         # right shoulder flagged visible but at x = 0 (the PT21 kit ignores it).
         "keypoints": _keypoints(nose=(50, 40, 1), left_shoulder=(70, 80, 0), right_shoulder=(0, 80, 1))},
        {"id": 1000342000100, "image_id": 10003420001, "category_id": 1, "track_id": 5, "person_id": 99,
         "bbox": [300, 20, 10, 30], "keypoints": [], "scores": []},  # box-only person
    ]
    return {"images": images, "annotations": annotations, "categories": []}


def _pt17_doc() -> dict:
    """A poseval ``annolist`` file: two frames of a PT17 sequence, one labelled with one person."""
    point = lambda j, x, y, v: {"id": [j], "x": [x], "y": [y], "is_visible": [v]}  # noqa: E731
    return {"annolist": [
        {"image": [{"name": "images/bonn/000001_bonn/00000001.jpg"}], "imgnum": [1], "is_labeled": [1],
         "ignore_regions": [{"point": [{"x": [0], "y": [0]}, {"x": [10], "y": [0]}, {"x": [10], "y": [10]}]}],
         "annorect": [{"x1": [100], "y1": [50], "x2": [140], "y2": [100], "track_id": [3],
                       "annopoints": [{"point": [point(0, 120, 400, 1), point(13, 121, 90, 1),
                                                  point(12, 119, 105, 0)]}]}]},
        {"image": [{"name": "images/bonn/000001_bonn/00000002.jpg"}], "imgnum": [2], "is_labeled": [0],
         "annorect": []},
    ]}


@pytest.fixture
def sample_val(posetrack18_sample: Path) -> Path:
    return posetrack18_sample / "annotations" / "val"


# ------------------------------------------------------------------------------------------------ real sample


def test_sample_sequences_match_their_files(sample_val):
    sequences = load_sequences(sample_val)
    files = sorted(sample_val.glob("*.json"))
    assert [s.name for s in sequences] == [f.stem for f in files]
    for sequence, file in zip(sequences, files):
        doc = json.loads(file.read_text())
        assert sequence.dataset == "posetrack18"
        assert sequence.nframes == doc["images"][0]["nframes"]
        assert sequence.vid_id == doc["images"][0]["vid_id"]
        assert [f.file_name for f in sequence.frames] == [im["file_name"] for im in doc["images"]]
        frame = sequence.frames[0]
        assert frame.image_id == doc["images"][0]["id"] and frame.frame_index == 0 and frame.is_labeled
        assert len(frame.ignore_regions) == len(doc["images"][0]["ignore_regions_x"])
        assert frame.width == doc["images"][0]["width"]
        assert len(frame.people) == len(doc["annotations"])
        for person, ann in zip(frame.people, doc["annotations"]):
            raw = np.array(ann["keypoints"], np.float32).reshape(J, 3)
            np.testing.assert_array_equal(person.keypoints, raw)  # PT18 flags are 0/1, unlabelled are zero
            np.testing.assert_array_equal(person.bbox, np.float32(ann["bbox"]))
            assert person.track_id == ann["track_id"] and person.num_labeled == ann["num_keypoints"]
            assert person.keypoints[[3, 4], 2].sum() == 0  # ears are never labelled


def test_sample_merged_file_equals_per_sequence_files(posetrack18_sample, sample_val):
    merged = load_sequences(posetrack18_sample / "annotations" / "test_posetrack18_val.json")
    per_sequence = {s.name: s for s in load_sequences(sample_val)}
    assert sorted(s.name for s in merged) == sorted(per_sequence)
    for sequence in merged:
        assert_sequences_equal(sequence, per_sequence[sequence.name])


def test_sample_image_ids_follow_the_posetrack18_formula(sample_val):
    for sequence in load_sequences(sample_val):
        for frame in sequence.frames:
            assert posetrack18_image_id(frame.file_name) == frame.image_id


def test_sample_gt_boxes_are_the_enlarged_keypoint_extent(sample_val):
    people = [p for s in load_sequences(sample_val) for f in s.frames for p in f.people]
    assert len(people) > 3
    for person in people:
        np.testing.assert_allclose(bbox_from_keypoints(person.keypoints), person.bbox, atol=1e-3)


def test_sample_round_trip(sample_val, tmp_path):
    sequences = load_sequences(sample_val)
    written = save_sequences(sequences, tmp_path)
    assert [p.name for p in written] == [f"{s.name}.json" for s in sequences]
    for original, again in zip(sequences, load_sequences(tmp_path)):
        assert_sequences_equal(original, again)


# ------------------------------------------------------------------------------------------------ ids and names


def test_appendix_image_ids():
    assert posetrack18_image_id("images/val/012834_mpii_test/000000.jpg") == 10128340000
    assert posetrack18_image_id("000001_mpiinew_test/000004.jpg") == 30000010004
    assert posetrack18_image_id("images/train/000001_bonn_train/000123.jpg") == 20000010123


@given(source=st.sampled_from(sorted(POSETRACK18_SOURCE_IDS)), sequence=st.integers(0, 999_999),
       frame=st.integers(0, 9_999), split=st.sampled_from(["train", "val", "test"]))
def test_image_id_parts_invert_the_id(source, sequence, frame, split):
    name = f"images/{split}/{sequence:06d}_{source}_{split}/{frame:06d}.jpg"
    assert posetrack18_image_id_parts(posetrack18_image_id(name)) == (POSETRACK18_SOURCE_IDS[source], sequence, frame)


@given(index=st.integers(0, 999_999), digits=st.sampled_from([4, 5, 6, 8]))
def test_frame_numbering_rule(index, digits):
    name = f"images/x/000001_bonn/{index:0{digits}d}.jpg"
    if len(str(index)) > digits:
        return
    assert parse_frame_index(name) == index
    assert frame_index_base(name) == (0 if digits == 6 else 1)


@pytest.mark.parametrize("bad", ["images/val/foo_mpii/000001.jpg", "images/val/000001_kinetics/000001.jpg",
                                 "images/val/000001_mpii/abc.jpg", "images/val/000001_mpii/012345.jpg"])
def test_image_id_rejects_non_posetrack_names(bad):
    with pytest.raises(DataFormatError, match="images/val"):
        posetrack18_image_id(bad)


def test_parse_frame_index_rejects_names_without_numbers():
    with pytest.raises(ValueError, match="frame_a.jpg"):
        parse_frame_index("seq/frame_a.jpg")


# ------------------------------------------------------------------------------------------------ PoseTrack21


def test_posetrack21_visibility_and_fields(tmp_path):
    path = write_json(tmp_path / "000342_mpii_test.json", _pt21_doc())
    [sequence] = load_sequences(path)
    assert sequence.dataset == "posetrack21" and sequence.name == "000342_mpii_test" and sequence.nframes == 3
    first, second, third = sequence.frames
    person = first.people[0]
    nose, l_sho, r_sho = (POSETRACK17.index(n) for n in ("nose", "left_shoulder", "right_shoulder"))
    np.testing.assert_array_equal(person.keypoints[nose], [50, 40, FLAG_LABELED])
    np.testing.assert_array_equal(person.keypoints[l_sho], [70, 80, FLAG_OCCLUDED])  # occluded: kept
    np.testing.assert_array_equal(person.keypoints[r_sho], [0, 0, 0])  # x = 0: not a joint for the PT21 kit
    assert person.num_labeled == 2 and person.person_id == 1234 and person.track_id == 4
    np.testing.assert_array_equal(person.bbox_head, [40, 20, 30, 30])
    box_only = second.people[0]
    assert box_only.num_labeled == 0 and box_only.person_id == 99
    np.testing.assert_array_equal(box_only.bbox, [300, 20, 10, 30])
    assert (first.is_labeled, second.is_labeled, third.is_labeled) == (True, False, False)
    assert (first.has_labeled_person, second.has_labeled_person, third.has_labeled_person) == (True, True, False)
    np.testing.assert_array_equal(first.ignore_regions[0], [[1, 2], [50, 2], [50, 60]])


def test_posetrack21_round_trip_keeps_occluded_joints(tmp_path):
    [sequence] = load_sequences(write_json(tmp_path / "in" / "000342_mpii_test.json", _pt21_doc()))
    doc = sequence_to_posetrack18_json(sequence)
    written = np.array(doc["annotations"][0]["keypoints"]).reshape(J, 3)
    assert list(written[POSETRACK17.index("left_shoulder")]) == [70, 80, 0]  # file convention: flag 0, coordinates
    assert doc["annotations"][0]["person_id"] == 1234 and doc["images"][1]["has_labeled_person"] is True
    save_sequences([sequence], tmp_path / "out")
    [again] = load_sequences(tmp_path / "out")
    assert_sequences_equal(sequence, again)


def test_posetrack18_rule_scores_flag_zero_joints_with_coordinates(tmp_path):
    """poseval drops a point only when x == y == flag == 0; a PT18 file's flag-0 point with coordinates counts."""
    doc = _pt21_doc()
    for image in doc["images"]:
        del image["has_labeled_person"]
    for ann in doc["annotations"]:
        del ann["person_id"]
    [sequence] = load_sequences(write_json(tmp_path / "000342_mpii_test.json", doc))
    assert sequence.dataset == "posetrack18"
    keypoints = sequence.frames[0].people[0].keypoints
    np.testing.assert_array_equal(keypoints[POSETRACK17.index("left_shoulder")], [70, 80, FLAG_OCCLUDED])
    np.testing.assert_array_equal(keypoints[POSETRACK17.index("right_shoulder")], [0, 80, FLAG_LABELED])
    # Forcing the PT21 rule on the same file drops the x = 0 joint.
    [forced] = load_sequences(tmp_path / "000342_mpii_test.json", dataset="posetrack21")
    assert forced.dataset == "posetrack21" and forced.frames[0].people[0].num_labeled == 2


def test_unknown_dataset_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="posetrack18"):
        load_sequences(write_json(tmp_path / "a.json", _pt21_doc()), dataset="coco")


# ------------------------------------------------------------------------------------------------ PoseTrack17


def _check_pt17_sequence(sequence, name: str) -> None:
    assert sequence.name == name and sequence.dataset == "posetrack17" and sequence.nframes == 2
    first, second = sequence.frames
    assert (first.frame_index, second.frame_index) == (1, 2) and frame_index_base(first.file_name) == 1
    assert first.is_labeled and not second.is_labeled and second.people == []
    assert first.image_id == posetrack18_image_id(first.file_name)  # PT17 folders follow the PT18 naming here
    [person] = first.people
    assert person.track_id == 3
    np.testing.assert_array_equal(person.bbox_head, [100, 50, 40, 50])
    # poseval ids 0 (right_ankle), 13 (nose), 12 (head_bottom, is_visible 0) land in their 17-slot places
    assert POSEVAL15.names[0] == "right_ankle"
    np.testing.assert_array_equal(person.keypoints[POSETRACK17.index("right_ankle")], [120, 400, FLAG_LABELED])
    np.testing.assert_array_equal(person.keypoints[POSETRACK17.index("nose")], [121, 90, FLAG_LABELED])
    np.testing.assert_array_equal(person.keypoints[POSETRACK17.index("head_bottom")], [119, 105, FLAG_OCCLUDED])
    assert person.num_labeled == 3
    np.testing.assert_allclose(person.bbox, bbox_from_keypoints(person.keypoints))
    np.testing.assert_array_equal(first.ignore_regions[0], [[0, 0], [10, 0], [10, 10]])


def test_posetrack17_annolist_json(tmp_path):
    [sequence] = load_sequences(write_json(tmp_path / "000001_bonn_relpath_5sec.json", _pt17_doc()))
    _check_pt17_sequence(sequence, "000001_bonn_relpath_5sec")


def _save_pt17_mat(path: Path, doc: dict) -> None:
    """The annolist as MATLAB struct arrays (the layout of the official PT17 .mat files)."""
    import scipy.io

    def struct_array(items: list[dict], fields: list[str]) -> np.ndarray:
        array = np.zeros((len(items),), dtype=[(f, "O") for f in fields])
        for i, item in enumerate(items):
            array[i] = tuple(item[f] for f in fields)
        return array

    def points(pts):
        return struct_array([{k: v[0] for k, v in p.items()} for p in pts], ["id", "x", "y", "is_visible"])

    frames = []
    for entry in doc["annolist"]:
        rects = [{"x1": r["x1"][0], "y1": r["y1"][0], "x2": r["x2"][0], "y2": r["y2"][0], "track_id": r["track_id"][0],
                  "annopoints": struct_array([{"point": points(r["annopoints"][0]["point"])}], ["point"])}
                 for r in entry["annorect"]]
        regions = [struct_array([{"point": struct_array([{"x": p["x"][0], "y": p["y"][0]} for p in reg["point"]],
                                                        ["x", "y"])}], ["point"])
                   for reg in entry.get("ignore_regions", [])]
        frames.append({
            "image": struct_array([{"name": entry["image"][0]["name"]}], ["name"]),
            "imgnum": entry["imgnum"][0], "is_labeled": entry["is_labeled"][0],
            "annorect": struct_array(rects, ["x1", "y1", "x2", "y2", "track_id", "annopoints"]),
            "ignore_regions": regions[0] if regions else np.zeros((0,)),
        })
    scipy.io.savemat(str(path), {"annolist": struct_array(frames, ["image", "imgnum", "is_labeled", "annorect",
                                                                   "ignore_regions"])})


def test_posetrack17_mat_reads_like_its_json(tmp_path):
    _save_pt17_mat(tmp_path / "000001_bonn_relpath_5sec.mat", _pt17_doc())
    [from_mat] = load_sequences(tmp_path)
    _check_pt17_sequence(from_mat, "000001_bonn_relpath_5sec")
    assert from_mat.source.endswith(".mat")


def test_folder_prefers_converted_json_over_mat(tmp_path):
    _save_pt17_mat(tmp_path / "seq.mat", _pt17_doc())
    doc = _pt17_doc()
    doc["annolist"][0]["annorect"] = []
    write_json(tmp_path / "seq.json", doc)
    [sequence] = load_sequences(tmp_path)
    assert sequence.source.endswith("seq.json") and sequence.frames[0].people == []


def test_posetrack17_round_trip_through_posetrack18_schema(tmp_path):
    [sequence] = load_sequences(write_json(tmp_path / "in" / "s.json", _pt17_doc()))
    save_sequences([sequence], tmp_path / "out")
    [again] = load_sequences(tmp_path / "out", dataset="posetrack17")
    assert_sequences_equal(sequence, again)


def test_mat_without_annolist(tmp_path):
    import scipy.io

    scipy.io.savemat(str(tmp_path / "x.mat"), {"something": np.zeros(3)})
    with pytest.raises(DataFormatError, match=r"x\.mat: no 'annolist' variable \(found: something\)"):
        load_sequences(tmp_path / "x.mat")


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"hello, not matlab")
    with pytest.raises(DataFormatError, match=r"x\.mat: not a readable MATLAB file"):
        load_sequences(tmp_path / "x.mat")


# ------------------------------------------------------------------------------------------------ errors


def _broken(tmp_path: Path, edit) -> Path:
    doc = _pt21_doc()
    edit(doc)
    return write_json(tmp_path / "x.json", doc)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(keypoints=[0.0] * 48), r"x\.json: annotations\[0\]\.keypoints has 48 "
                                                                 r"numbers, expected 51"),
    (lambda d: d.pop("images"), r"x\.json: missing 'images'"),
    (lambda d: d["annotations"][1].update(image_id=5), r"x\.json: annotations\[1\]\.image_id 5 is not the id of any"),
    (lambda d: d["annotations"][0].pop("image_id"), r"x\.json: annotations\[0\] has no image_id"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]\.bbox has 3 numbers, expected 4"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(4, "a"), r"annotations\[0\]\.keypoints\[4\] is 'a'"),
    (lambda d: d["annotations"][0].update(scores=[0.5] * 15), r"annotations\[0\]\.scores has 15 numbers, expected "
                                                              r"17 or none"),
    (lambda d: d["images"][0].update(ignore_regions_y=[]), r"images\[0\] has 1 ignore_regions_x polygons but 0"),
    (lambda d: d["images"][0]["ignore_regions_y"][0].pop(), r"images\[0\]\.ignore_regions_y\[0\] has 2 numbers"),
    (lambda d: d["images"][1].update(file_name="images/val/s/frame.jpg"), r"images\[1\]\.file_name .*frame number"),
    (lambda d: d["images"][1].update(id=10003420000), r"images\[1\]\.id 10003420000 is used by two images"),
    (lambda d: d["images"][2].pop("file_name"), r"images\[2\]\.file_name is missing"),
    (lambda d: d["annotations"][0].update(track_id=1.5), r"annotations\[0\]\.track_id is 1\.5, expected an integer"),
])
def test_malformed_files_name_file_and_field(tmp_path, edit, message):
    with pytest.raises(DataFormatError, match=message):
        load_sequences(_broken(tmp_path, edit))


def test_malformed_old_format_point(tmp_path):
    doc = _pt17_doc()
    doc["annolist"][0]["annorect"][0]["annopoints"][0]["point"][1]["id"] = [15]
    with pytest.raises(DataFormatError, match=r"annolist\[0\]\.annorect\[0\]\.annopoints\[0\]\.point\[1\]\.id is "
                                              r"\[15\], expected a joint id 0\.\.14"):
        load_sequences(write_json(tmp_path / "s.json", doc))


def test_non_json_and_wrong_top_level(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"a\.json: not valid JSON"):
        load_sequence_file(tmp_path / "a.json")
    write_json(tmp_path / "b.json", [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(DataFormatError, match=r"b\.json: top level is a list \(a detection"):
        load_sequence_file(tmp_path / "b.json")
    # a folder fails on its first bad file, naming it
    with pytest.raises(DataFormatError, match=r"a\.json"):
        load_sequences(tmp_path)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_sequences(tmp_path / "nope")
    with pytest.raises(DataFormatError, match="no annotation files"):
        load_sequences(tmp_path)


def test_writer_refuses_duplicate_ids_and_names(tmp_path):
    [sequence] = load_sequences(write_json(tmp_path / "in" / "s.json", _pt21_doc()))
    with pytest.raises(DataFormatError, match="several sequences are named s"):
        save_sequences([sequence, sequence], tmp_path / "out")
    sequence.frames[1].image_id = sequence.frames[0].image_id
    with pytest.raises(DataFormatError, match="used by two frames"):
        sequence_to_posetrack18_json(sequence)


def test_merged_file_groups_by_folder(tmp_path):
    doc = _pt21_doc()
    other = json.loads(json.dumps(doc["images"][0]))
    other.update(file_name="images/val/000007_bonn_test/000000.jpg", id=20000070000, vid_id="000007", nframes=9)
    doc["images"].insert(1, other)
    doc["annotations"].append({"image_id": 20000070000, "bbox": [0, 0, 5, 5], "keypoints": [], "person_id": 1})
    sequences = load_sequences(write_json(tmp_path / "posetrack_val.json", doc))
    assert [(s.name, s.nframes, len(s.frames)) for s in sequences] == [("000342_mpii_test", 3, 3),
                                                                       ("000007_bonn_test", 9, 1)]
    assert len(sequences[1].frames[0].people) == 1


def test_non_person_annotations_are_skipped(tmp_path):
    path = _broken(tmp_path, lambda d: d["annotations"][0].update(category_id=2))
    [sequence] = load_sequences(path)
    assert sequence.frames[0].people == []


def test_the_metric_names_a_bad_point_by_its_full_location():
    """Error locations are written one way everywhere: the path of the field, e.g. ``annolist[0].annorect[1]...``."""
    from tdmi.evaluation.posetrack_files import _read_poseval_file

    person = {"annopoints": [{"point": [{"id": [0], "x": [10.0], "y": [20.0], "score": [0.9]}]}]}
    broken = {"annopoints": [{"point": [{"id": [0], "x": [10.0], "y": [20.0]}, {"id": [1], "x": ["left"],
                                                                                "y": [3.0]}]}]}
    data = {"annolist": [{"image": [{"name": "a.jpg"}], "annorect": [person, broken]}]}
    with pytest.raises(DataFormatError, match=r"pred\.json: annolist\[0\]\.annorect\[1\]\.annopoints\[0\]\.point\[1\] "
                                              r"has no numeric x/y"):
        _read_poseval_file(data, "pred.json", is_gt=False)
