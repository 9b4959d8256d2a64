"""Atomic, self-describing checkpoints.

Layout: `<run_dir>/checkpoints/step_00001234/` holding
    checkpoint.pt      {"format", "step", "model", "model_class", "model_config", "run_config",
                        "optimizer", "scheduler", "data", "extra"} — the model rebuilds from it alone
    rng_rank<R>.pt     RNG states of process R (python, numpy, torch CPU, CUDA)
    config.yaml        the run config, for people

A checkpoint is written into `.tmp_step_…/` and renamed into place with `os.replace` only when
complete, so a crash leaves either the previous checkpoints or a complete new one (a stray
`.tmp_*` is ignored and cleaned up next time). All files load with `torch.load(weights_only=True)`:
RNG states are stored as tensors and plain Python values, never pickled objects.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_FILE",
    "checkpoint_dirs",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "set_rng_state",
]

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoint directories under `root` (a `checkpoints/` folder), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / CHECKPOINT_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    dirs = checkpoint_dirs(Path(run_dir) / CHECKPOINTS_DIR)
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint.pt from: the file itself, a step directory, or a run directory (its newest)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"{path}: no checkpoint (expected a checkpoint.pt, a step_* folder or a run folder)")
    return latest / CHECKPOINT_FILE


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a checkpoint (see the module docstring); `path` as for `resolve_checkpoint`."""
    payload = torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format')!r}")
    return payload


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (safe for weights_only loading)."""
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _fsync_dir_files(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def write_checkpoint(root: Path, step: int, payload: dict[str, Any] | None, rng_state: dict[str, Any],
                     rank: int, barrier, config_text: str | None = None, keep: int = 0) -> Path:
    """Write one checkpoint collectively: every rank calls this with the same `step`.

    Rank 0 passes the payload (others None); every rank saves its RNG state; rank 0 renames the
    finished folder into place and prunes to the newest `keep` (0: keep all). `barrier()` syncs
    the processes (a no-op in a single process). Returns the final folder.
    """
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stray in root.glob(".tmp_*"):
            shutil.rmtree(stray, ignore_errors=True)
        tmp.mkdir()
    barrier()
    torch.save(rng_state, tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        assert payload is not None
        payload = {"format": FORMAT, **payload}
        torch.save(payload, tmp / CHECKPOINT_FILE)
        if config_text is not None:
            (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
    barrier()
    if rank == 0:
        _fsync_dir_files(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep:
            for old in checkpoint_dirs(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_rng_state(checkpoint_dir: Path, rank: int) -> dict[str, Any] | None:
    """Rank `rank`'s RNG state of a checkpoint, or None if it has none (a different world size)."""
    path = checkpoint_dir / f"rng_rank{rank}.pt"
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True)
