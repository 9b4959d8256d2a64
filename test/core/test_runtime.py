"""The ONNX runtime policy on the tiny model directory: outputs, instruction cache, providers, bad directories."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from fixtures.tiny_model import make_tiny_model, tiny_spec

from conla_ros.core import runtime
from conla_ros.core.model_spec import MODEL_YAML, ModelLoadError, TensorSpec
from conla_ros.core.runtime import (
    InferenceError,
    ObservationError,
    OnnxPolicy,
    load_policy,
    resolve_providers,
)

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def policy(model_dir) -> OnnxPolicy:
    return load_policy(model_dir, threads=1)


@pytest.fixture
def copy_of(model_dir, tmp_path):
    """A fresh copy of the tiny model directory, to break."""
    def make() -> Path:
        return Path(shutil.copytree(model_dir, tmp_path / "model"))
    return make


def _obs(instruction: str = "open the drawer", image: np.ndarray = IMAGE, **extra) -> dict:
    return {"image": image, "instruction": instruction, **extra}


def test_infer_returns_a_chunk_in_robot_units(policy):
    out = policy.infer(_obs())
    actions = out["actions"]
    assert actions.shape == (4, 4) and actions.dtype == np.float64
    assert out["latency_ms"] > 0 and out["policy_ms"] > 0
    np.testing.assert_array_equal(policy.infer(_obs())["actions"], actions)  # deterministic


def test_actions_are_de_normalised_into_robot_units(tmp_path):
    low, high = (10.0, -200.0, 0.0, -1.0), (20.0, -100.0, 5.0, 1.0)
    policy = load_policy(make_tiny_model(tmp_path / "units", action_range=(low, high)))
    chunks = np.stack([policy.infer(_obs(image=RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8),
                                         instruction=text))["actions"]
                       for text in ("open the drawer", "push the puck", "close the window") for _ in range(5)])
    assert (chunks >= np.array(low)).all() and (chunks <= np.array(high)).all()  # robot units, not [-1, 1]
    normalized = policy.spec.action_space.normalize(chunks)
    assert np.abs(normalized).max() <= 1.0 and normalized.std(axis=(0, 1)).min() > 0.05


def test_info_for_diagnostics(policy):
    info = policy.info()
    assert info["model"] == "tiny" and info["provider"] == "CPUExecutionProvider"
    assert info["encoder_provider"] == "CPUExecutionProvider" and info["action_names"] == ["dx", "dy", "dz", "gripper"]
    assert info["chunk_length"] == 4 and info["control_rate_hz"] == 80.0
    assert hash(policy.spec) == hash(tiny_spec())  # specs are frozen and hashable


def test_image_and_instruction_both_matter(policy):
    base = policy.infer(_obs())["actions"]
    assert not np.allclose(policy.infer(_obs(image=255 - IMAGE))["actions"], base)
    assert not np.allclose(policy.infer(_obs("push the red block"))["actions"], base)


def test_instruction_embedding_computed_once_per_instruction(model_dir):
    policy = load_policy(model_dir, threads=1)
    runs = []
    original = policy.encoder._run
    policy.encoder._run = lambda texts: runs.append(list(texts)) or original(texts)
    flags = [policy.infer(_obs("open the drawer"))["instruction_cached"] for _ in range(5)]
    assert runs == [["open the drawer"]] and flags == [False, True, True, True, True]
    policy.infer(_obs("  open the drawer\n"))  # same after stripping: still cached
    policy.infer(_obs("close the window"))
    policy.infer(_obs("open the drawer"))
    assert runs == [["open the drawer"], ["close the window"]]
    assert policy.encoder.calls == 2 and policy.encoder.hits == 6


def test_a_shared_encoder_callable_can_be_injected(model_dir):
    calls = []

    def encoder(text: str) -> np.ndarray:
        calls.append(text)
        return np.full(384, 0.05, np.float32)

    policy = load_policy(model_dir, encoder=encoder)
    assert policy.infer(_obs("anything"))["actions"].shape == (4, 4)
    assert calls == ["anything"]


def test_proprio_input(tmp_path):
    policy = load_policy(make_tiny_model(tmp_path / "p", proprio_dim=3), threads=1)
    a = policy.infer(_obs(proprio=[0.0, 0.1, 0.2]))["actions"]
    b = policy.infer(_obs(proprio=np.array([1.0, -0.5, 0.2])))["actions"]
    assert not np.allclose(a, b)
    with pytest.raises(ObservationError, match=r"has no 'proprio'.*joint_0, joint_1, joint_2"):
        policy.infer(_obs())
    with pytest.raises(ObservationError, match="expected 3 values"):
        policy.infer(_obs(proprio=[0.0, 1.0]))
    with pytest.raises(ObservationError, match="non-finite"):
        policy.infer(_obs(proprio=[0.0, np.nan, 1.0]))


@pytest.mark.parametrize(("obs", "match"), [
    ({"instruction": "open"}, "no 'image'"),
    ({"image": IMAGE}, "no 'instruction'"),
    (_obs(image=IMAGE.astype(np.float32)), "image: expected an"),
    (_obs(image=np.zeros((0, 0, 3), np.uint8)), "image: expected an"),
    (_obs(image=IMAGE[..., :2]), "image: expected an"),
    (_obs(""), "instruction: instruction is empty"),
    (_obs(b"open"), "instruction must be a str"),
])
def test_bad_observations_raise_observation_error(policy, obs, match):
    with pytest.raises(ObservationError, match=match):
        policy.infer(obs)


def test_non_finite_model_output_is_never_returned(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="conla_ros.core.runtime"):
        policy = load_policy(make_tiny_model(tmp_path / "nan", nan_output=True))  # loads: a node must run it
    assert "non-finite actions on zero inputs at warm-up" in caplog.text
    with pytest.raises(InferenceError, match="non-finite"):
        policy.infer(_obs())


# --- Execution providers -------------------------------------------------------------------------


def test_auto_provider_on_this_machine_is_cpu_and_logged(model_dir, caplog):
    assert "CUDAExecutionProvider" not in ort.get_available_providers(), "this test expects a CPU-only build"
    with caplog.at_level(logging.INFO, logger="conla_ros.core.runtime"):
        policy = load_policy(model_dir, providers="auto")
    assert policy.provider == "CPUExecutionProvider"
    assert "loaded model 'tiny'" in caplog.text and "on CPUExecutionProvider" in caplog.text


def test_resolve_providers_orders_and_validates(caplog):
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", everything) == everything
    assert resolve_providers("auto", ["CPUExecutionProvider", "CUDAExecutionProvider"]) == everything[1:]
    assert resolve_providers(["cpu"], everything) == ["CPUExecutionProvider"]
    assert resolve_providers("cuda, cpu", everything) == everything[1:]
    with caplog.at_level(logging.WARNING, logger="conla_ros.core.runtime"):
        assert resolve_providers(["cuda", "cpu"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider is not available" in caplog.text
    with pytest.raises(ValueError, match="none of the requested"):
        resolve_providers(["tensorrt"], ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="did you mean 'CUDAExecutionProvider'"):
        resolve_providers(["CUDAExecutionProvder"], everything)
    with pytest.raises(ValueError, match="non-empty"):
        resolve_providers([], everything)


def test_gpu_session_failure_falls_back_to_cpu_with_a_log(model_dir, monkeypatch, caplog):
    real_session = ort.InferenceSession

    def session(path, sess_options=None, providers=None):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        if names[0] == "CUDAExecutionProvider":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real_session(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.INFO, logger="conla_ros.core.runtime"):
        policy = load_policy(model_dir, providers="auto")
    assert policy.provider == "CPUExecutionProvider"
    assert "could not create a session with CUDAExecutionProvider" in caplog.text
    assert "falling back to CPUExecutionProvider" in caplog.text


def test_unknown_provider_fails_at_load(model_dir):
    with pytest.raises(ModelLoadError, match="did you mean 'cuda'"):
        load_policy(model_dir, providers=["cdua"])


# --- Bad model directories: all fail at load, naming the file and the field -----------------------


def _rewrite_yaml(folder: Path, edit) -> Path:
    path = folder / MODEL_YAML
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_policy(tmp_path / "absent")


@pytest.mark.parametrize(("remove", "file", "field"), [
    ("model.yaml", "model.yaml", "file not found"),
    ("policy.onnx", "policy.onnx", "policy_file"),
    ("text_encoder.onnx", "text_encoder.onnx", "instruction_encoder.onnx_file"),
    ("tokenizer.json", "tokenizer.json", "instruction_encoder.tokenizer_file"),
])
def test_missing_files(copy_of, remove, file, field):
    folder = copy_of()
    (folder / remove).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert str(folder / file) in message and "file not found" in message and field in message


def test_missing_shared_encoder_cache_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CONLA_CACHE", str(tmp_path / "empty_cache"))
    folder = make_tiny_model(tmp_path / "m", encoder="cache")
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert str(tmp_path / "empty_cache" / "text_encoder" / "all-MiniLM-L6-v2" / "text_encoder.onnx") in message
    assert "instruction_encoder.onnx_file" in message and "conla export --text-encoder" in message


@pytest.mark.parametrize("mode", ["garbage", "truncated", "empty"])
@pytest.mark.parametrize("file", ["policy.onnx", "text_encoder.onnx"])
def test_corrupt_onnx(copy_of, file, mode):
    folder = copy_of()
    path = folder / file
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x08\x07 not an onnx model \xff" * 40, "truncated": data[: len(data) // 2],
                      "empty": b""}[mode])
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert str(path) in message
    assert ("policy_file" if file == "policy.onnx" else "instruction_encoder") in message


def test_corrupt_tokenizer(copy_of):
    folder = copy_of()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json: not a valid tokenizers file.*instruction_encoder"):
        load_policy(folder)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d.__setitem__("chunk_lenght", d.pop("chunk_length")), "chunk_lenght: unknown key; did you mean "
                                                                       "'chunk_length'?"),
    (lambda d: d["io"]["image"].__setitem__("name", "img"), "has no input 'img' (model.yaml: io.image.name); did "
                                                             "you mean 'image'?"),
    (lambda d: d["io"]["actions"].__setitem__("name", "action"), "has no output 'action' (model.yaml: "
                                                                  "io.actions.name)"),
    (lambda d: d["io"]["instruction"].__setitem__("name", "text"), "has no input 'text' (model.yaml: "
                                                                    "io.instruction.name)"),
])
def test_model_yaml_disagreeing_with_the_graph(copy_of, edit, expected):
    folder = _rewrite_yaml(copy_of(), edit)
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    assert expected in str(info.value)
    assert str(folder) in str(info.value)


def test_invalid_yaml_syntax(copy_of):
    folder = copy_of()
    (folder / MODEL_YAML).write_text("name: [unclosed\n")
    with pytest.raises(ModelLoadError, match=r"model\.yaml: line \d+, column \d+: invalid YAML"):
        load_policy(folder)


def test_image_size_disagreeing_with_the_graph(tmp_path):
    # A self-consistent model.yaml for 32×32 images next to a graph built for 16×16.
    folder = make_tiny_model(tmp_path / "m", size=16, spec=tiny_spec(size=32))
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert str(folder / "policy.onnx") in message and "input 'image' (model.yaml: io.image)" in message
    assert "axis 2 is 16 in the ONNX graph but 32 in model.yaml" in message


def test_chunk_length_disagreeing_with_the_graph(tmp_path):
    folder = make_tiny_model(tmp_path / "m", chunk_length=4, spec=tiny_spec(chunk_length=8))
    with pytest.raises(ModelLoadError, match=r"output 'actions' \(model.yaml: io.actions\): axis 1 is 4 in the ONNX "
                                             r"graph but 8"):
        load_policy(folder)


def test_graph_input_missing_from_model_yaml(tmp_path):
    folder = make_tiny_model(tmp_path / "m", proprio_dim=3, spec=tiny_spec(proprio_dim=0))
    with pytest.raises(ModelLoadError, match=r"graph inputs \['proprio'\] are not described in model.yaml io"):
        load_policy(folder)


def test_model_yaml_input_missing_from_graph(tmp_path):
    folder = make_tiny_model(tmp_path / "m", proprio_dim=0, spec=tiny_spec(proprio_dim=2))
    with pytest.raises(ModelLoadError, match=r"has no input 'proprio' \(model.yaml: io.proprio.name\)"):
        load_policy(folder)


def test_graph_returning_another_shape_than_it_declares_fails_at_load(tmp_path):
    folder = make_tiny_model(tmp_path / "m", chunk_length=4, run_shape=(2, 8))
    with pytest.raises(ModelLoadError, match=r"policy.onnx: output 'actions' has shape \[1, 2, 8\] when run, but "
                                             r"model.yaml .* says \[1, 4, 4\]"):
        load_policy(folder)
    assert load_policy(folder, warmup=False).spec.chunk_length == 4  # without the warm-up: caught at infer
    with pytest.raises(InferenceError, match=r"has shape \(1, 2, 8\)"):
        load_policy(folder, warmup=False).infer(_obs())


def test_encoder_probe_fingerprint_is_checked_at_load(tmp_path):
    from conla_ros.core.instruction_encoder import InstructionEncoder

    folder = make_tiny_model(tmp_path / "m")
    head = InstructionEncoder(folder).encode("open the drawer")[:8]
    spec = tiny_spec()
    good = replace(spec, instruction_encoder=replace(spec.instruction_encoder, probe_text="open the drawer",
                                                     probe_embedding=tuple(float(v) for v in head)))
    assert load_policy(make_tiny_model(tmp_path / "good", spec=good)).spec == good
    wrong = replace(good, instruction_encoder=replace(good.instruction_encoder,
                                                      probe_embedding=tuple(float(v) + 0.05 for v in head)))
    with pytest.raises(ModelLoadError, match=r"text_encoder.onnx: not the encoder this model was trained with.*"
                                             r"instruction_encoder.probe_embedding"):
        load_policy(make_tiny_model(tmp_path / "wrong", spec=wrong))


def test_model_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load_policy(tmp_path / "file")


def test_dynamic_batch_axis_in_model_yaml_is_accepted(tmp_path):
    spec = tiny_spec()
    spec = replace(spec, io=replace(spec.io, image=TensorSpec("image", ("batch", 3, 16, 16))))
    policy = load_policy(make_tiny_model(tmp_path / "m", spec=spec))
    assert policy.infer(_obs())["actions"].shape == (4, 4)


def test_runtime_module_has_no_torch_dependency():
    assert "torch" not in runtime.__dict__
