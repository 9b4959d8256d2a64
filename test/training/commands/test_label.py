"""`conla label` (torch and ONNX backends) and `conla export --lam` (ONNX + parity) on a tiny trained LAM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conla_ros.core.config import apply_overrides, load_config
from conla_training.commands.label import main as label_main
from conla_training.exports.lam import LAM_META, LAM_ONNX, export_lam
from conla_training.trainers.lam import LAMRunConfig, train_lam

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained_run(tiny_config_path, video_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("lam_run")
    config = apply_overrides(load_config(LAMRunConfig, tiny_config_path),
                             [f"data.root={video_root}", f"train.run_dir={run_dir}", "train.steps=3",
                              "train.sample_every=0"])
    assert train_lam(config) == 0
    return run_dir


@pytest.fixture(scope="module")
def exported(trained_run, video_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "lam"
    meta = export_lam(trained_run, out, videos=video_root, parity_pairs=32)
    assert meta["parity"]["identical"] == meta["parity"]["pairs"] > 32  # synthetic + real pairs
    return out


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_with_torch_checkpoint(trained_run, video_root, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert label_main(["--lam", str(trained_run), "--videos", str(video_root), "--out", str(out),
                       "--no-progress"]) == 0
    lines = _read(out)
    assert len(lines) == 8  # the garbage clip is skipped
    first = lines[0]
    assert first["frame_gap"] == 2 and first["frames"] == 10 and len(first["codes"]) == 10 - 2
    assert all(len(c) == 4 and all(0 <= x < 8 for x in c) for line in lines for c in line["codes"])
    assert {line["label"] for line in lines} == {"move left", "move right", "move up", "move down"}
    meta = json.loads((tmp_path / "labels.jsonl.meta.json").read_text())
    assert meta["pairs"] == 64 and meta["skipped_count"] == 1 and meta["backend"] == "torch"
    assert list(meta["skipped"]) == [str(video_root / "videos" / "garbage_000.mp4")]


def test_label_stride_and_gap(trained_run, video_root, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert label_main(["--lam", str(trained_run), "--videos", str(video_root), "--out", str(out), "--no-progress",
                       "--stride", "3", "--frame-gap", "4"]) == 0
    first = _read(out)[0]
    assert first["frame_gap"] == 4 and first["stride"] == 3 and len(first["codes"]) == len(range(0, 10 - 4, 3))


def test_export_writes_onnx_and_metadata(exported):
    assert (exported / LAM_ONNX).is_file()
    meta = yaml.safe_load((exported / LAM_META).read_text())
    assert meta["num_codes"] == 8 and meta["num_tokens"] == 4 and meta["frame_gap"] == 2
    assert meta["preprocessing"]["size"] == 32 and meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    assert meta["provenance"]["step"] == 3 and meta["provenance"]["model_config"]["width"] == 32
    assert not exported.with_name(exported.name + ".tmp").exists()


def test_label_from_onnx_without_torch_gives_the_same_codes(trained_run, exported, video_root, tmp_path):
    torch_out, onnx_out = tmp_path / "torch.jsonl", tmp_path / "onnx.jsonl"
    assert label_main(["--lam", str(trained_run), "--videos", str(video_root), "--out", str(torch_out),
                       "--no-progress"]) == 0
    code = ("import sys; sys.modules['torch'] = None  # any torch import now fails\n"
            "from conla_training.commands.label import main\n"
            f"sys.exit(main(['--lam', {str(exported)!r}, '--videos', {str(video_root)!r}, '--out', "
            f"{str(onnx_out)!r}, '--no-progress']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line["codes"] for line in _read(onnx_out)] == [line["codes"] for line in _read(torch_out)]
    assert json.loads((tmp_path / "onnx.jsonl.meta.json").read_text())["backend"] == "onnx"
