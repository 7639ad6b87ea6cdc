"""scripts/decode_compare.py (issue 22): argmax, DARK and flip + DARK on real predictions of the shipped TDMI."""

from __future__ import annotations

import json

from script_helpers import load_script


def test_decode_compare_scores_every_protocol_on_the_shipped_model(tmp_path, capsys):
    module = load_script("decode_compare")
    out = tmp_path / "compare.json"
    assert module.main(["--models", "tdmi_demo", "--sequences", "1", "--frames", "8", "--work-dir",
                        str(tmp_path / "work"), "--json-out", str(out)]) == 0
    rows = {row["protocol"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"argmax", "dark", "dark_published", "flip + argmax", "flip + dark", "flip + dark_published"}
    assert rows["argmax"]["printed_protocol"].endswith("argmax decoding, poseval mAP")
    assert "flip test on, dark decoding" in rows["flip + dark"]["printed_protocol"]
    for row in rows.values():
        assert 0 < row["Mean"] <= 100
    # the model's outputs are the same in every row: only decoding and the flip test can change the numbers
    assert rows["dark"]["Mean"] != rows["argmax"]["Mean"] or rows["flip + argmax"]["Mean"] != rows["argmax"]["Mean"]
