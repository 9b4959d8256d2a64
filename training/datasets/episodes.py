"""Robot episodes (rosbag2) → (image, instruction, proprio, action chunk) samples for finetuning.

Alignment (DESIGN.md: "training aligns them by timestamp"): image k is paired with the commands that
followed it, `EpisodeData.next_command_index()` — the first command stamped at or after the image —
and the H − 1 after that: chunk = commands[c : c + H]. Near the end of an episode the chunk is padded
with its last command and `action_mask` marks the padding (False), so the loss ignores it. An image
with no command after it is not a sample. Proprio = the joint positions in force at the image stamp
(the last /joint_states at or before it; the first one before any), in the bag's joint order.

Instruction: the instruction in force at the image stamp (`EpisodeData.instruction_at`); its
embedding is computed once per distinct text (`instruction_embeddings`).

Statistics (METHOD.md stage 3), from all commands of the training episodes: per dimension the 1st and
99th percentiles (`action_low`/`action_high`), `num_bins` equal-frequency bins (interior edges = the
quantiles; a bin's centre = the mean of the training values that fall into it, the edge midpoint for
an empty bin, so a gripper that is only ever ±1 decodes to exactly ±1), and the proprio mean/std.

The whole set is kept in memory as uint8 frames (64×64 MT10: ~12 kB a frame) and preprocessed per
sample with `conla_ros.core.preprocessing.preprocess_image`, the function the robot node calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_image

__all__ = ["EpisodeDataConfig", "EpisodeDataset", "action_statistics", "collate_samples"]


@dataclass(frozen=True)
class EpisodeDataConfig:
    """`data:` of a policy run config."""

    root: Path = Path("data/episodes_robot")  # a folder of rosbag2 episodes
    max_episodes: int = 0  # use the first N episodes (sorted by name); 0: all
    only_successful: bool = False  # skip episodes whose metadata says success: false
    text_encoder: str | None = None  # folder with text_encoder.onnx + tokenizer.json; null: the shared cache
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.max_episodes < 0 or self.num_workers < 0:
            raise ValueError(f"max_episodes and num_workers must be >= 0, got {self.max_episodes}, "
                             f"{self.num_workers}")


def _percentile_bins(values: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) → interior edges (NB-1,), centres (NB,) of equal-frequency bins."""
    edges = np.quantile(values, np.linspace(0.0, 1.0, num_bins + 1))  # (NB+1,)
    interior = edges[1:-1]
    index = np.searchsorted(interior, values, side="right")  # == torch.bucketize(right=True)
    sums = np.bincount(index, weights=values, minlength=num_bins)
    counts = np.bincount(index, minlength=num_bins)
    centres = np.where(counts > 0, sums / np.maximum(counts, 1), (edges[:-1] + edges[1:]) / 2)
    return interior, centres


def action_statistics(commands: np.ndarray, num_bins: int, proprio: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The model's statistics buffers (see VLA.set_statistics) from (N, A) commands and (M, P) proprio."""
    commands = np.asarray(commands, dtype=np.float64)
    stats = {"action_low": np.percentile(commands, 1, axis=0), "action_high": np.percentile(commands, 99, axis=0)}
    bins = [_percentile_bins(commands[:, d], num_bins) for d in range(commands.shape[1])]
    stats["bin_edges"] = np.stack([b[0] for b in bins])
    stats["bin_centres"] = np.stack([b[1] for b in bins])
    if proprio is not None and proprio.size:
        stats["proprio_mean"] = proprio.mean(0)
        stats["proprio_std"] = np.maximum(proprio.std(0), 1e-6)
    return stats


class EpisodeDataset(Dataset):
    """All samples of a folder of episodes. Items are keyed (epoch, index) as PairBatchSampler yields them."""

    def __init__(self, config: EpisodeDataConfig, spec: ImagePreprocessing, chunk_length: int,
                 use_proprio: bool) -> None:
        from conla_ros.episodes.reader import load_episode, scan_episodes

        self.config, self.spec, self.chunk_length, self.use_proprio = config, spec, chunk_length, use_proprio
        root = Path(config.root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: episodes folder not found")
        scan = scan_episodes(root)
        paths = sorted(scan.complete)
        self.skipped: list[tuple[str, str]] = [(str(p), "partial episode") for p in scan.partial]
        self.skipped += [(str(p), reason) for p, reason in scan.corrupt]
        if config.max_episodes:
            paths = paths[: config.max_episodes]
        self.episodes, self.index = [], []  # index: (episode, image, first command)
        self.joint_names: tuple[str, ...] = ()
        self.control_rate_hz: float | None = None
        for path in paths:
            try:
                episode = load_episode(path)
            except Exception as error:  # EpisodeReadError or a rosbags error
                self.skipped.append((str(path), str(error)))
                continue
            if config.only_successful and episode.metadata.get("success") is False:
                continue
            if use_proprio:
                if not len(episode.joint_stamps):
                    self.skipped.append((str(path), "no /joint_states (the model takes proprio)"))
                    continue
                if self.joint_names and episode.joint_names != self.joint_names:
                    self.skipped.append((str(path), f"joint names {episode.joint_names} differ from "
                                                    f"{self.joint_names}"))
                    continue
                self.joint_names = episode.joint_names
            rate = episode.metadata.get("control_rate_hz")
            if self.control_rate_hz is None and isinstance(rate, (int, float)):
                self.control_rate_hz = float(rate)
            e = len(self.episodes)
            self.episodes.append(episode)
            for k, c in enumerate(episode.next_command_index()):
                if c < len(episode.commands):
                    self.index.append((e, k, int(c)))
        if not self.index:
            raise ValueError(f"{root}: no usable samples in {len(paths)} episodes")
        self.instructions = sorted({self._instruction(e, k) for e, k, _ in self.index})
        self.embeddings: dict[str, np.ndarray] = {}

    def _instruction(self, e: int, k: int) -> str:
        episode = self.episodes[e]
        return episode.instruction_at(int(episode.image_stamps[k]))

    def _proprio(self, e: int, k: int) -> np.ndarray:
        episode = self.episodes[e]
        j = np.searchsorted(episode.joint_stamps, episode.image_stamps[k], side="right") - 1
        return episode.joint_positions[max(int(j), 0)].astype(np.float32)

    @property
    def epoch_length(self) -> int:
        return len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def paths(self) -> list[str]:
        return [str(e.path) for e in self.episodes]

    @property
    def action_dim(self) -> int:
        return int(self.episodes[0].commands.shape[1])

    @property
    def proprio_dim(self) -> int:
        return len(self.joint_names) if self.use_proprio else 0

    def statistics(self, num_bins: int) -> dict[str, np.ndarray]:
        commands = np.concatenate([e.commands for e in self.episodes])
        proprio = np.concatenate([e.joint_positions for e in self.episodes]) if self.use_proprio else None
        return action_statistics(commands, num_bins, proprio)

    def set_embeddings(self, embeddings: dict[str, np.ndarray]) -> None:
        missing = [t for t in self.instructions if t not in embeddings]
        if missing:
            raise ValueError(f"no embedding for instructions {missing}")
        self.embeddings = {t: np.asarray(embeddings[t], np.float32) for t in self.instructions}

    def sample(self, i: int) -> dict:
        """Sample i as numpy arrays (for parity checks and tools)."""
        e, k, c = self.index[i]
        episode = self.episodes[e]
        chunk = episode.commands[c : c + self.chunk_length]  # (h, A), h ≤ H
        valid = len(chunk)
        if valid < self.chunk_length:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.chunk_length - valid, 0)])
        mask = np.arange(self.chunk_length) < valid
        out = {"image": preprocess_image(episode.images[k], self.spec),  # (3, S, S)
               "instruction": self.embeddings[self._instruction(e, k)],  # (D,)
               "actions": chunk.astype(np.float32), "action_mask": mask}  # (H, A), (H,)
        if self.use_proprio:
            out["proprio"] = self._proprio(e, k)  # (P,)
        return out

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        i = key[1] if isinstance(key, tuple) else key
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.sample(i).items()}


def collate_samples(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
