"""Tests for conla_ros.core.config: strict YAML → frozen dataclass loading."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from conla_ros.core.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

# Config classes live at module level: postponed annotations are resolved by name.


@dataclass(frozen=True)
class EncoderConfig:
    width: int = 64
    depth: int = 4
    heads: int = 4


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    activation: Literal["gelu", "relu"] = "gelu"
    channels: tuple[int, ...] = (32, 64)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    dropout: float | None = None
    legacy_dropout: Optional[float] = None  # noqa: UP045 - typing.Optional must keep working


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    steps: int = 1000
    use_amp: bool = False
    tags: list[str] = field(default_factory=list)
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@dataclass(frozen=True)
class LamConfig:
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: Path = Path("runs")
    extra: Any = None
    teacher: EncoderConfig | None = None


@dataclass(frozen=True)
class Defaults:
    steps: int = 10
    out_dir: Path = Path("runs")


LAM_YAML = """\
name: lam-small
model:
  encoder:
    width: 128
    depth: 2
  activation: relu
  channels: [16, 32, 64]
  image_mean: [0.485, 0.456, 0.406]
  dropout: 0.1
train:
  lr: 3e-4          # YAML 1.1 would read this as a string
  steps: 500
  use_amp: true
  tags: [baseline, small]
  loss_weights: {recon: 1.0, commit: 0.25}
out_dir: runs/lam
extra: {anything: [1, 2]}
"""


def write(tmp_path: Path, text: str, name: str = "lam.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def expect_error(data: dict[str, Any], *fragments: str, cls: type = LamConfig) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(cls, data, source="config/lam.yaml")
    message = str(info.value)
    assert message.startswith("config/lam.yaml: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- Loading ------------------------------------------------------------------------------------


def test_load_nested_yaml_file(tmp_path: Path) -> None:
    cfg = load_config(LamConfig, write(tmp_path, LAM_YAML))
    assert cfg == LamConfig(
        name="lam-small",
        model=ModelConfig(
            encoder=EncoderConfig(width=128, depth=2),
            activation="relu",
            channels=(16, 32, 64),
            image_mean=(0.485, 0.456, 0.406),
            dropout=0.1,
        ),
        train=TrainConfig(
            lr=3e-4,
            steps=500,
            use_amp=True,
            tags=["baseline", "small"],
            loss_weights={"recon": 1.0, "commit": 0.25},
        ),
        out_dir=Path("runs/lam"),
        extra={"anything": [1, 2]},
    )
    assert isinstance(cfg.train.lr, float)
    assert isinstance(cfg.model.channels, tuple)
    assert isinstance(cfg.out_dir, Path)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(Defaults, write(tmp_path, "")) == Defaults()
    assert load_config(Defaults, write(tmp_path, "# only a comment\n")) == Defaults()


def test_empty_file_still_needs_required_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lam\.yaml: name: missing required field"):
        load_config(LamConfig, write(tmp_path, ""))


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(LamConfig, path)
    assert str(info.value).startswith(f"{path}: ")
    assert "mapping" in str(info.value) and "LamConfig" in str(info.value) and "list" in str(info.value)


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(LamConfig, path)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_names_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  encoder: [1, 2\n  depth: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(LamConfig, path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "invalid YAML" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\ntrain:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'lr'"):
        load_config(LamConfig, path)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = "name: a\nmodel:\n  encoder: &enc {width: 8, depth: 1}\nteacher:\n  <<: *enc\n  depth: 3\n"
    cfg = load_config(LamConfig, write(tmp_path, text))
    assert cfg.model.encoder == EncoderConfig(width=8, depth=1)
    assert cfg.teacher == EncoderConfig(width=8, depth=3)


# --- Errors -------------------------------------------------------------------------------------


def test_unknown_key_suggests_closest() -> None:
    message = expect_error(
        {"name": "a", "model": {"encoder": {"widht": 3}}},
        "model.encoder.widht: unknown key",
        "did you mean 'width'?",
        "(valid keys: depth, heads, width)",
    )
    assert message == (
        "config/lam.yaml: model.encoder.widht: unknown key; did you mean 'width'? "
        "(valid keys: depth, heads, width)"
    )


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    message = expect_error({"name": "a", "train": {"zzz": 1}}, "train.zzz: unknown key (valid keys: ")
    assert "did you mean" not in message
    assert "loss_weights, lr, steps, tags, use_amp" in message


def test_missing_required_field() -> None:
    expect_error({"model": {}}, "name: missing required field", "str")


def test_wrong_scalar_type_names_field_and_value() -> None:
    expect_error({"name": "a", "train": {"lr": "fast"}}, "train.lr: expected float, got str 'fast'")
    expect_error({"name": "a", "train": {"steps": 1.5}}, "train.steps: expected int, got float 1.5")
    expect_error({"name": 3}, "name: expected str, got int 3")
    expect_error({"name": "a", "out_dir": 3}, "out_dir: expected a path")


def test_section_must_be_a_mapping() -> None:
    expect_error({"name": "a", "model": [1, 2]}, "model: expected a mapping for ModelConfig, got list")


def test_int_accepted_for_float() -> None:
    cfg = config_from_dict(TrainConfig, {"lr": 1})
    assert cfg.lr == 1.0 and type(cfg.lr) is float


def test_bool_rejected_for_int_and_float() -> None:
    expect_error({"name": "a", "train": {"steps": True}}, "train.steps: expected int, got bool True")
    expect_error({"name": "a", "train": {"lr": False}}, "train.lr: expected float, got bool False")


def test_bool_only_accepts_real_bools() -> None:
    expect_error({"name": "a", "train": {"use_amp": 1}}, "train.use_amp: expected bool, got int 1")
    expect_error({"name": "a", "train": {"use_amp": "yes"}}, "train.use_amp: expected bool, got str 'yes'")


def test_literal_lists_allowed_values() -> None:
    expect_error(
        {"name": "a", "model": {"activation": "tanh"}},
        "model.activation: expected one of 'gelu', 'relu', got str 'tanh'",
    )


def test_fixed_tuple_length_checked() -> None:
    expect_error(
        {"name": "a", "model": {"image_mean": [0.5, 0.5]}},
        "model.image_mean: expected 3 items for tuple[float, float, float], got 2",
    )


def test_tuple_items_checked_with_index() -> None:
    expect_error(
        {"name": "a", "model": {"channels": [16, "x"]}}, "model.channels[1]: expected int, got str 'x'"
    )
    expect_error({"name": "a", "model": {"channels": "16"}}, "model.channels: expected a list")


def test_list_and_dict_items_checked() -> None:
    expect_error({"name": "a", "train": {"tags": ["a", 2]}}, "train.tags[1]: expected str, got int 2")
    expect_error(
        {"name": "a", "train": {"loss_weights": {"recon": "big"}}},
        "train.loss_weights.recon: expected float, got str 'big'",
    )


def test_optional_fields() -> None:
    assert config_from_dict(ModelConfig, {"dropout": None}).dropout is None
    assert config_from_dict(ModelConfig, {"dropout": 0}).dropout == 0.0
    assert config_from_dict(ModelConfig, {"legacy_dropout": 0.2}).legacy_dropout == 0.2
    expect_error(
        {"name": "a", "model": {"dropout": "x"}}, "model.dropout: expected float | None, got str 'x'"
    )


def test_optional_dataclass_reports_nested_error() -> None:
    assert config_from_dict(LamConfig, {"name": "a", "teacher": None}).teacher is None
    assert config_from_dict(LamConfig, {"name": "a", "teacher": {"depth": 1}}).teacher == EncoderConfig(
        depth=1
    )
    expect_error({"name": "a", "teacher": {"dpeth": 1}}, "teacher.dpeth: unknown key; did you mean 'depth'?")


def test_post_init_error_carries_source_and_path() -> None:
    message = expect_error({"name": "a", "train": {"lr": -1.0}}, "train: lr must be > 0, got -1.0")
    assert message == "config/lam.yaml: train: lr must be > 0, got -1.0"


def test_not_a_dataclass() -> None:
    with pytest.raises(TypeError):
        config_from_dict(dict, {})  # type: ignore[type-var]


# --- Round trip and saving ----------------------------------------------------------------------


def test_config_to_dict_is_plain_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(LamConfig, write(tmp_path, LAM_YAML))
    plain = config_to_dict(cfg)
    assert plain["model"]["channels"] == [16, 32, 64]
    assert plain["out_dir"] == "runs/lam"
    assert isinstance(plain["model"]["encoder"], dict)
    assert config_from_dict(LamConfig, plain) == cfg


def test_save_then_load_equals(tmp_path: Path) -> None:
    cfg = LamConfig(name="x", teacher=EncoderConfig(width=8), train=TrainConfig(lr=3e-4, tags=["t"]))
    path = tmp_path / "sub" / "saved.yaml"
    save_config(cfg, path)
    assert load_config(LamConfig, path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["saved.yaml"]  # no temp file left behind
    save_config(dataclasses.replace(cfg, name="y"), path)  # replaces an existing file
    assert load_config(LamConfig, path).name == "y"


# --- Overrides ----------------------------------------------------------------------------------


def test_apply_overrides() -> None:
    cfg = LamConfig(name="a")
    new = apply_overrides(
        cfg,
        [
            "train.lr=3e-4",
            "model.encoder.depth=2",
            "train.use_amp=true",
            "model.channels=[8, 16]",
            "train.loss_weights.recon=2",
            "teacher.width=16",
            "out_dir=/tmp/x",
        ],
    )
    assert new.train.lr == 3e-4
    assert new.model.encoder == EncoderConfig(depth=2)
    assert new.train.use_amp is True
    assert new.model.channels == (8, 16)
    assert new.train.loss_weights == {"recon": 2.0}
    assert new.teacher == EncoderConfig(width=16)
    assert new.out_dir == Path("/tmp/x")
    assert cfg == LamConfig(name="a")  # the original is untouched
    assert apply_overrides(cfg, []) == cfg


def test_apply_overrides_unknown_key() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(LamConfig(name="a"), ["model.encoder.widht=3"])
    assert str(info.value) == (
        "<overrides>: model.encoder.widht: unknown key; did you mean 'width'? "
        "(valid keys: depth, heads, width)"
    )


def test_apply_overrides_bad_values() -> None:
    cfg = LamConfig(name="a")
    with pytest.raises(ConfigError, match=r"<overrides>: train\.lr: expected float, got str 'fast'"):
        apply_overrides(cfg, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"<overrides>: train: lr must be > 0"):
        apply_overrides(cfg, ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"expected 'dotted\.key=value'"):
        apply_overrides(cfg, ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.lr: cannot set a sub-key of a float field"):
        apply_overrides(cfg, ["train.lr.x=1"])
    with pytest.raises(TypeError):
        apply_overrides(cfg, "train.lr=1")  # one string, not a list of them
