"""Where a trained policy came from, stage by stage, for the provenance in model.yaml.

A finetuned policy points at its pretrained VLA (`init_from`), the VLA at its latent-label file
(`data.labels`), the label file's sidecar (`<labels>.meta.json`) at the latent action model and
the videos it labelled, and the LAM run at its training videos. `lineage(run)` follows those
links from the run folders' own `config.yaml` / `summary.json`, so an exported model records its
whole data recipe without anyone writing it down by hand. A link that cannot be followed (a run
folder that was deleted, a labels file from elsewhere) ends the chain with a note instead of
failing the export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["lineage", "run_folder"]

_MAX_DEPTH = 8  # policy <- policy (ActionVLA) <- vla <- labels <- lam: far more than any real chain


def run_folder(path: Path | str) -> Path | None:
    """The training run folder holding `path` (a run, a step folder or a checkpoint file), or None."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if (candidate / "config.yaml").is_file():
            return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def _summary(run: Path) -> dict[str, Any]:
    try:
        data = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    keep = ("status", "step", "target_steps", "elapsed_s", "device", "world_size")
    return {key: data[key] for key in keep if key in data}


def _stage(run: Path) -> tuple[dict[str, Any], Path | None]:
    """One run's entry and the path it was built from (None: the chain ends here)."""
    config = _read_yaml(run / "config.yaml")
    model, data, train = config.get("model", {}), config.get("data", {}), config.get("train", {})
    entry: dict[str, Any] = {"run": str(run), **_summary(run)}
    if "init_from" in config:  # `conla train policy`
        entry.update(stage="policy", head=model.get("head"), episodes=data.get("root"),
                     batch_size=train.get("batch_size"), init_from=config.get("init_from"))
        return entry, None if config.get("init_from") is None else Path(config["init_from"])
    if "contrast" in model:  # `conla train lam`
        switches = {k: model["contrast"].get(k) for k in ("action_contrast", "visual_contrast", "time_reversal")}
        entry.update(stage="lam", method="ConLA" if any(switches.values()) else "LAPA", contrast=switches,
                     videos=data.get("root"), batch_size=train.get("batch_size"))
        return entry, None
    if data.get("labels"):  # `conla train vla`
        entry.update(stage="vla", labels=data["labels"], batch_size=train.get("batch_size"))
        return entry, Path(data["labels"])
    entry.update(stage="unknown")
    return entry, None


def _labels_stage(labels: Path) -> tuple[dict[str, Any], Path | None]:
    meta_path = labels.with_name(labels.name + ".meta.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {"stage": "labels", "file": str(labels), "note": f"{meta_path} not found: the chain ends here"}, None
    entry = {"stage": "labels", "file": str(labels),
             **{k: meta[k] for k in ("lam", "lam_step", "backend", "videos", "format", "clips", "pairs",
                                     "frame_gap") if k in meta}}
    return entry, Path(meta["lam"]) if meta.get("lam") else None


def lineage(checkpoint: Path | str) -> list[dict[str, Any]]:
    """The stages behind a checkpoint, newest first: policy, [pretrained policy | vla, labels, lam]."""
    chain: list[dict[str, Any]] = []
    link: Path | None = Path(checkpoint)
    while link is not None and len(chain) < _MAX_DEPTH:
        if link.suffix == ".jsonl":
            entry, link = _labels_stage(link)
        else:
            run = run_folder(link)
            if run is None:
                chain.append({"stage": "unknown", "path": str(link), "note": "no run folder (config.yaml) found"})
                break
            entry, link = _stage(run)
        chain.append({"stage": entry.pop("stage"), **entry})  # the stage first: model.yaml reads better
    return chain
