import pytest

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
