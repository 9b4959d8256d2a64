"""`conla demo`'s closed-loop stage: which model it runs, and what it says is still missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.tiny_model import make_tiny_model

from conla_ros import demo


def test_the_closed_loop_stage_comes_after_training() -> None:
    names = [stage.name for stage in demo.STAGES]
    assert names[-1].startswith("closed loop through ROS 2") and names[-2].startswith("training pipeline")


def test_the_committed_default_model_is_used_when_present(tmp_path: Path) -> None:
    default = make_tiny_model(tmp_path / "models" / "mt10_small")
    make_tiny_model(tmp_path / "out" / demo.TOY_MODEL)
    model, line = demo.closed_loop_model(tmp_path / "out", default=default)
    assert model == default and "committed default model" in line
    assert demo.not_built_yet(default) == []


def test_without_the_default_model_the_toy_model_runs_and_the_demo_says_so(tmp_path: Path) -> None:
    default = tmp_path / "models" / "mt10_small"  # not there
    toy = make_tiny_model(tmp_path / "out" / demo.TOY_MODEL)
    model, line = demo.closed_loop_model(tmp_path / "out", default=default)
    assert model == toy
    assert "toy model" in line and str(default) in line and "normally it is committed" in line
    assert demo.not_built_yet(default) == [
        "the default model models/mt10_small (trained by the project's own pipeline; the closed-loop stage "
        "ran the toy model instead)"]


def test_no_model_at_all_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no model to run"):
        demo.closed_loop_model(tmp_path / "out", default=tmp_path / "missing")


def test_a_model_carrying_its_encoder_needs_no_export(tmp_path: Path) -> None:
    assert demo._ensure_text_encoder(make_tiny_model(tmp_path / "tiny")) == []  # encoder files in the model folder


def test_a_model_referencing_the_cache_exports_the_encoder_when_it_is_missing(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONLA_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(demo, "_conla", lambda *argv: calls.append(argv))
    lines = demo._ensure_text_encoder(make_tiny_model(tmp_path / "ref", encoder="cache"))
    assert calls == [("export", "--text-encoder")] and str(tmp_path / "cache") in lines[0]
