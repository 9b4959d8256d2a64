"""The lineage recorded in model.yaml: links followed through run folders, and broken links that end it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conla_training.exports.lineage import lineage, run_folder


def _run(root: Path, config: dict, status: str = "finished") -> Path:
    (root / "checkpoints" / "step_00000010").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "summary.json").write_text(json.dumps({"status": status, "step": 10, "target_steps": 10}))
    return root


def test_policy_pretrained_on_another_policy_then_a_missing_labels_sidecar(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    vla = _run(tmp_path / "vla", {"model": {"head": "latent"}, "data": {"labels": str(labels)}, "train": {}})
    action = _run(tmp_path / "action", {"init_from": str(vla), "model": {"head": "chunk"}, "data": {"root": "eps"}})
    policy = _run(tmp_path / "policy", {"init_from": str(action / "checkpoints"), "model": {"head": "bins"},
                                        "data": {"root": "demos"}, "train": {"batch_size": 8}})
    chain = lineage(policy / "checkpoints" / "step_00000010")
    assert [entry["stage"] for entry in chain] == ["policy", "policy", "vla", "labels"]
    assert chain[0]["head"] == "bins" and chain[0]["episodes"] == "demos" and chain[1]["episodes"] == "eps"
    assert "not found" in chain[-1]["note"]


def test_lapa_is_named_by_its_switches_and_a_missing_run_ends_the_chain(tmp_path: Path) -> None:
    off = {"action_contrast": False, "visual_contrast": False, "time_reversal": False}
    lam = _run(tmp_path / "lam", {"model": {"contrast": off}, "data": {"root": "videos", "labels": None}})
    assert lineage(lam)[0] | {"method": "LAPA", "videos": "videos"} == lineage(lam)[0]
    assert lineage(tmp_path / "gone") == [{"stage": "unknown", "path": str(tmp_path / "gone"),
                                           "note": "no run folder (config.yaml) found"}]
    assert run_folder(lam / "checkpoints" / "step_00000010") == lam
