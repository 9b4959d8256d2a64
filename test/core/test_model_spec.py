"""model.yaml (`ModelSpec`): round trip, strict loading, cross-field validation, action normalisation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures.tiny_model import tiny_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from conla_ros.core.config import config_from_dict, config_to_dict
from conla_ros.core.model_spec import (
    MODEL_YAML,
    ActionSpace,
    ModelLoadError,
    ModelSpec,
    TensorSpec,
    load_model_spec,
    save_model_spec,
)
from conla_ros.core.preprocessing import ImagePreprocessing


def _write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / MODEL_YAML).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return tmp_path


def test_round_trip_through_the_file(tmp_path):
    spec = tiny_spec(proprio_dim=3)
    save_model_spec(spec, tmp_path)
    assert load_model_spec(tmp_path) == spec
    assert config_from_dict(ModelSpec, config_to_dict(spec)) == spec
    loaded = load_model_spec(tmp_path)
    assert loaded.action_dim == 4 and loaded.action_space.gripper_index == 3
    assert loaded.control_period_s == pytest.approx(1 / 80)


def test_missing_directory_and_file_name_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model_spec(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"model\.yaml: file not found"):
        load_model_spec(tmp_path)


@pytest.mark.parametrize(("path", "typo", "hint"), [
    ((), "chunk_lenght", "chunk_length"),
    (("action_space",), "nmaes", "names"),
    (("io", "image"), "shpe", "shape"),
    (("preprocessing",), "sizes", "size"),
    (("provenance",), "git_comit", "git_commit"),
])
def test_unknown_key_names_file_field_and_closest_key(tmp_path, path, typo, hint):
    data = config_to_dict(tiny_spec())
    node = data
    for key in path:
        node = node[key]
    node[typo] = node.pop(hint)
    _write(tmp_path, data)
    with pytest.raises(ModelLoadError) as info:
        load_model_spec(tmp_path)
    message = str(info.value)
    assert str(tmp_path / MODEL_YAML) in message
    assert ".".join((*path, typo)) in message
    assert f"did you mean {hint!r}" in message


def _edit(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("format_version", 2, "format_version 2 is not supported"),
    ("name", "  ", "name must be a non-empty str"),
    ("chunk_length", 0, "chunk_length must be an int >= 1, got 0"),
    ("control_rate_hz", -5, "control_rate_hz must be a number > 0, got -5"),
    ("policy_file", "sub/policy.onnx", "policy_file must be a file name"),
    ("action_space.high", [0.5, 1.0, -0.5, 1.0], "'dz': low -0.25 > high -0.5"),
    ("action_space.units", ["m", "m"], "units must be 4 strings"),
    ("action_space.low", [0, 0, 0], "low must be 4 numbers"),
    ("action_space.gripper", "claw", "gripper must be one of names"),
    ("action_space.names", ["dx", "dx", "dz", "gripper"], "duplicates ['dx']"),
    ("action_space.kind", "teleport", "expected one of"),
    ("io.image.shape", [1, 3, 32, 32], "io.image.shape is [1, 3, 32, 32], but preprocessing.size implies"),
    ("io.actions.shape", [1, 8, 4], "io.actions.shape is [1, 8, 4], but chunk_length and action_space.names"),
    ("io.instruction.shape", [1, 512], "instruction_encoder.dim implies"),
    ("io.image.shape", [2, 3, 16, 16], "batch axis must be 1 or a name"),
    ("io.image.shape", [1, 3, 16], "image.shape must have 4 axes"),
    ("io.actions.name", "image", "tensor names must be distinct"),
    ("io.image.dtype", "float16", "expected one of 'float32'"),
    ("io.proprio", {"name": "proprio", "shape": [1, 7]}, "io.proprio (set) and proprio (null)"),
    ("instruction_encoder.dim", 0, "dim must be a positive int"),
    ("instruction_encoder.onnx_file", "a/b.onnx", "onnx_file must be a file name"),
    ("provenance.created", "yesterday", "created must be an ISO 8601 date-time, got 'yesterday'"),
    ("instruction_encoder.probe_text", "open", "probe_text and probe_embedding must be both set or both empty"),
    ("instruction_encoder.probe_embedding", [0.1, 0.2], "probe_text and probe_embedding must be both set"),
])
def test_invalid_values_are_named(tmp_path, field, value, expected):
    _write(tmp_path, _edit(config_to_dict(tiny_spec()), field, value))
    with pytest.raises(ModelLoadError) as info:
        load_model_spec(tmp_path)
    assert expected in str(info.value)
    assert str(tmp_path / MODEL_YAML) in str(info.value)


def test_dynamic_batch_axis_and_proprio_consistency():
    spec = tiny_spec(proprio_dim=2)
    io = replace(spec.io, image=TensorSpec("image", ("batch", 3, 16, 16)))
    assert replace(spec, io=io).io.image.fixed(0) is None
    with pytest.raises(ValueError, match=r"io.proprio.shape is \[1, 5\], but proprio.dim implies"):
        replace(spec, io=replace(spec.io, proprio=TensorSpec("proprio", (1, 5))))
    with pytest.raises(ValueError, match="dim must equal the number of names"):
        replace(spec.proprio, dim=3)


def test_normalisation_maps_percentiles_to_unit_interval():
    space = tiny_spec().action_space
    low, high = np.array(space.low), np.array(space.high)
    np.testing.assert_allclose(space.normalize(low), -1.0)
    np.testing.assert_allclose(space.normalize(high), 1.0)
    np.testing.assert_allclose(space.denormalize(np.zeros(4)), (low + high) / 2)
    np.testing.assert_allclose(space.clip(high + 1.0), high)
    constant = ActionSpace(kind="joint_position", names=("j",), units=("rad",), low=(0.3,), high=(0.3,))
    assert np.isfinite(constant.normalize(np.array([0.3, 1.0]))).all()
    np.testing.assert_allclose(constant.denormalize(np.array([-1.0, 1.0])), 0.3, atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(0.01, 50), st.floats(-3, 3)), min_size=1, max_size=6))
def test_normalize_and_denormalize_are_inverse(dims):
    space = ActionSpace(kind="joint_velocity", names=tuple(f"j{i}" for i in range(len(dims))),
                        units=("rad/s",) * len(dims), low=tuple(lo for lo, _, _ in dims),
                        high=tuple(lo + width for lo, width, _ in dims))
    y = np.array([v for _, _, v in dims])
    np.testing.assert_allclose(space.normalize(space.denormalize(y)), y, atol=1e-9)


def test_encoder_directory_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("CONLA_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(encoder="cache").instruction_encoder
    assert spec.resolve(tmp_path / "m") == tmp_path / "cache" / "text_encoder" / "all-MiniLM-L6-v2"
    assert replace(spec, directory=".").resolve(tmp_path / "m") == tmp_path / "m" / "."
    assert replace(spec, directory="../enc").resolve(tmp_path / "m") == tmp_path / "m" / "../enc"
    assert replace(spec, directory="/opt/enc").resolve(tmp_path / "m") == Path("/opt/enc")


def test_preprocessing_is_the_shared_dataclass():
    assert isinstance(tiny_spec(size=24).preprocessing, ImagePreprocessing)


def test_the_documented_example_loads(tmp_path):
    import textwrap

    from conla_ros.core.model_spec import EXAMPLE_MODEL_YAML

    (tmp_path / MODEL_YAML).write_text(textwrap.dedent(EXAMPLE_MODEL_YAML), encoding="utf-8")
    spec = load_model_spec(tmp_path)
    assert spec.name == "mt10_conla_small" and spec.chunk_length == 8 and spec.action_dim == 4
    assert spec.instruction_encoder.directory is None and len(spec.instruction_encoder.probe_embedding) == 8
    assert spec.provenance.parity_max_abs_diff == pytest.approx(3.1e-6)
