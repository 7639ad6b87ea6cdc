import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdmi.config import ConfigError, ExperimentConfig, config_from_dict, dump_config, load_config, to_dict


def test_defaults_are_the_paper_setting():
    cfg = load_config(None)
    assert cfg.model.backbone.width == 48
    assert cfg.model.input_size == [288, 384] and cfg.model.heatmap_size == [72, 96]
    assert cfg.model.delta == 2 and cfg.model.num_frames == 5
    assert cfg.model.tde.blocks_per_stage == [3, 3, 2, 2]
    assert cfg.train.lr == 1e-3 and cfg.train.lr_steps == [6, 12, 18] and cfg.train.epochs == 20
    assert cfg.model.mi.alpha == 1.0


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: small\nmodel:\n  backbone:\n    width: 18\n  tde:\n    modulation: false\n")
    cfg = load_config(path, ["train.lr=5e-4", "model.tde.blocks_per_stage=[1,1,1,1]", "model.mi.formulation=fami"])
    assert cfg.name == "small" and cfg.model.backbone.width == 18 and not cfg.model.tde.modulation
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.tde.blocks_per_stage == [1, 1, 1, 1]
    assert cfg.model.mi.formulation == "fami"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  tde:\n    modulaton: false\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model\.tde\.modulaton"):
        load_config(path)


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError, match=r"model.arch='resnet'.*tdmi, tdmi_st, hrnet"):
        load_config(None, ["model.arch=resnet"])


@pytest.mark.parametrize("override,match", [
    ("train.epochs=1.5", "integer"),
    ("model.backbone.freeze=3", "true or false"),
    ("train.lr_steps=5", "list"),
    ("train.lr", "key=value"),
])
def test_bad_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_dict_and_yaml():
    cfg = load_config(None, ["model.arch=tdmi_st", "data.dataset=synthtrack"])
    again = config_from_dict(to_dict(cfg))
    assert again == cfg
    assert "tdmi_st" in dump_config(cfg)
    assert isinstance(again, ExperimentConfig)


def test_errors_blame_the_set_argument_and_name_the_yaml_file(tmp_path):
    from tdmi.config import ConfigError, load_config

    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 1.0e-3\n")
    with pytest.raises(ConfigError, match=r"^--set train\.lr=abc: train\.lr must be a number"):
        load_config(good, ["train.lr=abc"])
    with pytest.raises(ConfigError, match=r"^--set model\.bogus=1: unknown key 'model\.bogus'"):
        load_config(good, ["model.bogus=1"])
    with pytest.raises(ConfigError, match=r"^--set model\.arch=xx: model\.arch='xx' is not allowed"):
        load_config(good, ["model.arch=xx"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "<unicode string>" not in str(err.value) and "\n" not in str(err.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=rf"^{wrong}: train\.lr must be a number"):
        load_config(wrong)


# ---------------------------------------------------------------------------------------------------------------
# Numeric ranges (issue 25): any out-of-range value is a one-line error naming the key, never a traceback


def _numeric_fields(cls=None, prefix=""):
    import dataclasses
    import typing

    from tdmi.config_schema import ExperimentConfig

    cls = cls or ExperimentConfig
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, f"{prefix}{f.name}.")
        elif any(t in (int, float) for t in (tp, *typing.get_args(tp))):
            yield f"{prefix}{f.name}", tp


def test_every_numeric_field_has_a_range():
    from tdmi.config_schema import NUMERIC_RANGES

    fields = dict(_numeric_fields())
    assert set(fields) == set(NUMERIC_RANGES), set(fields) ^ set(NUMERIC_RANGES)


def _out_of_range(data, key):
    import math
    import typing

    from tdmi.config_schema import NUMERIC_RANGES

    low, high, low_open = NUMERIC_RANGES[key]
    tp = dict(_numeric_fields())[key]
    is_int = int in (tp, *typing.get_args(tp), *(typing.get_args(a) for a in typing.get_args(tp)))
    choices = []
    if low is not None:
        choices.append(low - data.draw(st.integers(1, 10**6)) if is_int else
                       low - data.draw(st.floats(0 if low_open else 1e-6, 1e6)))
    if high is not None:
        choices.append(high + data.draw(st.integers(1, 10**6)) if is_int else
                       high + data.draw(st.floats(1e-6, 1e6)))
    if not is_int:
        choices += [math.nan, math.inf]
    value = data.draw(st.sampled_from(choices))
    return f"[{value}, 384]" if key.endswith("_size") else (f"[{value}]" if key.endswith(("_stage", "_steps"))
                                                             else str(value).replace("nan", ".nan")
                                                             .replace("inf", ".inf"))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_an_out_of_range_value_is_a_one_line_error_naming_its_key(data):
    from tdmi.config_schema import NUMERIC_RANGES

    key = data.draw(st.sampled_from(sorted(NUMERIC_RANGES)))
    text = _out_of_range(data, key)
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{key}={text}"])
    message = str(caught.value)
    assert key in message and "\n" not in message and message.startswith(f"--set {key}=")


def test_tdmi_info_with_a_negative_width_says_so_in_one_line(capsys):
    from tdmi.cli import main

    assert main(["info", "--config", "tdmi_w48_pt17", "--set", "model.backbone.width=-8"]) == 2
    err = capsys.readouterr().err
    assert "model.backbone.width=-8 is out of range" in err and "Traceback" not in err and err.count("\n") == 1
