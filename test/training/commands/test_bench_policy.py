"""`conla bench policy`: onnxruntime and torch eager rows on a really exported model, ONNX only without a checkpoint."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures.tiny_model import make_tiny_model, tiny_spec, write_tiny_text_encoder

import conla_training.commands.bench_policy as bench
from conla_ros.core.model_spec import load_model_spec

REPO = Path(__file__).resolve().parents[3]


def _args(model: Path, **extra) -> argparse.Namespace:
    """The parsed command line, as `conla bench policy --model MODEL` with few iterations."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--iterations", "5", "--warmup", "1", "--size", "96x64"])
    for key, value in extra.items():
        setattr(args, key, value)
    return args


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny policy trained 2 steps with `conla train policy` and exported with `conla export --checkpoint`."""
    from conla_ros.sim.generate_episodes import generate_episodes
    from conla_training.commands.train_policy import main as policy_main
    from conla_training.exports.policy import export_policy

    root = tmp_path_factory.mktemp("bench_policy")
    episodes = root / "episodes"
    generate_episodes(["reach"], 2, episodes, max_steps=10, progress=False)
    encoder = write_tiny_text_encoder(root / "encoder")
    run = root / "run"
    assert policy_main(["--config", str(REPO / "config" / "policy_train_tiny.yaml"), "--run-dir", str(run),
                        "--set", f"data.root={episodes}", "--set", f"data.text_encoder={encoder}",
                        "--set", "train.steps=2"]) == 0
    out = root / "models" / "tiny"
    export_policy(run, out, parity_samples=1)
    return out


def test_both_libraries_are_timed_on_a_real_export(exported, capsys):
    assert bench.run(_args(exported)) == 0
    out = capsys.readouterr().out
    for row in ("onnxruntime session.run", "torch eager predict_actions", "runtime infer() 96x64→16"):
        assert sum(line.strip().startswith(row) for line in out.splitlines()) == 2, (row, out)  # 1 and 2 threads
    assert "onnxruntime/torch eager p50, 1 thread:" in out and "onnxruntime/torch eager p50, 2 threads:" in out
    assert "outputs agree: max |onnxruntime − torch|" in out
    assert "sizes: policy.onnx" in out and "checkpoint.pt" in out and "goal (onnxruntime p50 ≤ 3 ms" in out
    assert "could not be measured" not in out


def test_json_report(exported, capsys):
    assert bench.run(_args(exported, json=True, threads="2")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch_eager"] is True and report["torch_unavailable_reason"] is None
    rows = {(r["row"], r["threads"]) for r in report["results"]}
    assert rows == {("onnxruntime", 2), ("torch eager", 2), ("runtime infer()", 2)}
    assert all(r["n"] == 5 and 0 < r["p50_ms"] <= r["p99_ms"] for r in report["results"])
    (ratio,) = report["ratios"]
    assert ratio["threads"] == 2 and ratio["speedup"] == pytest.approx(1 / ratio["onnx_over_torch"])
    assert report["max_abs_diff_onnx_torch"] <= 1e-4  # the same model on both sides
    sizes = report["sizes"]
    assert sizes["policy.onnx"] == (exported / "policy.onnx").stat().st_size
    assert sizes["text_encoder"] == (exported / "text_encoder.onnx").stat().st_size
    assert sizes["checkpoint"] == Path(report["checkpoint"]).stat().st_size
    assert report["goal"]["met"] in (True, False)  # information only: no timing assertion


def test_without_a_checkpoint_only_onnx_is_timed(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny")  # fixture model: provenance.checkpoint is null
    assert bench.run(_args(model)) == 0
    out = capsys.readouterr().out
    assert sum(line.strip().startswith("onnxruntime session.run") for line in out.splitlines()) == 2
    assert "torch eager predict_actions" not in out
    assert "torch eager could not be measured: model.yaml provenance.checkpoint is empty" in out
    assert "speed-up not checked" in out


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    spec = tiny_spec()
    spec = replace(spec, provenance=replace(spec.provenance, checkpoint=f"{tmp_path}/gone/run (step 20)"))
    model = make_tiny_model(tmp_path / "tiny", spec=spec)
    assert bench.run(_args(model, json=True)) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["torch_eager"] and {r["row"] for r in report["results"]} == {"onnxruntime", "runtime infer()"}
    assert f"checkpoint not found: {tmp_path}/gone/run" in report["torch_unavailable_reason"]
    assert report["sizes"]["checkpoint"] is None and report["goal"]["speedup_met"] is None


def test_a_bad_model_directory_exits_1(tmp_path, capsys):
    assert bench.run(_args(tmp_path / "nothing")) == 1
    assert "model directory not found" in capsys.readouterr().err


def test_find_checkpoint_prefers_the_exported_step(tmp_path):
    run = tmp_path / "run"
    for step in (20, 40):
        (run / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
        (run / "checkpoints" / f"step_{step:08d}" / "checkpoint.pt").write_bytes(b"x")
    assert bench.find_checkpoint(f"{run} (step 20)", tmp_path)[0] == run / "checkpoints/step_00000020/checkpoint.pt"
    path, note = bench.find_checkpoint(f"{run} (step 30)", tmp_path)
    assert path == run / "checkpoints/step_00000040/checkpoint.pt" and "newest, step 40" in note
    assert bench.find_checkpoint("run (step 20)", tmp_path)[0] is not None  # relative to the model directory
    assert bench.find_checkpoint(str(run / "checkpoints/step_00000040"), tmp_path)[0].name == "checkpoint.pt"
    assert bench.find_checkpoint(None, tmp_path) == (None, "model.yaml provenance.checkpoint is empty")


def test_the_module_does_not_import_torch():
    code = "import sys, conla_training.commands.bench_policy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_the_export_records_a_checkpoint_the_bench_finds(exported):
    path, _ = bench.find_checkpoint(load_model_spec(exported).provenance.checkpoint, exported)
    assert path is not None and path.name == "checkpoint.pt"
