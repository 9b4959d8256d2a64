"""Robot episodes (rosbag2) → (image, instruction, proprio, action chunk) samples for finetuning.

Alignment by timestamp (docs/architecture.md, "Robot episodes"): image k is paired with the commands that
followed it, `EpisodeData.next_command_index()` — the first command stamped at or after the image —
and the H − 1 after that: chunk = commands[c : c + H]. Near the end of an episode the chunk is padded
with its last command and `action_mask` marks the padding (False), so the loss ignores it. An image
with no command after it is not a sample. Proprio = the joint positions in force at the image stamp
(the last /joint_states at or before it; the first one before any), in the bag's joint order.

Instruction: the instruction in force at the image stamp (`EpisodeData.instruction_at`); its
embedding is computed once per distinct text (`instruction_embeddings`).

Statistics (docs/method.md, stage 3), from all commands of the training episodes: per dimension the 1st and
99th percentiles (`action_low`/`action_high`), `num_bins` equal-frequency bins (interior edges = the
quantiles; a bin's centre = the mean of the training values that fall into it, the edge midpoint for
an empty bin, so a gripper that is only ever ±1 decodes to exactly ±1), and the proprio mean/std.

Contract (`conla_ros.episodes.contract.EpisodeContract`, `dataset.contract`): the action of the
episodes (kind, names, units, gripper; limits: the declared ones, else the observed min/max), their
control rate and the proprio names. The first usable episode sets it; an episode whose action, rate
or joint names differ is skipped and listed in `skipped` with the reason. The control rate is the
episode metadata's `control_rate_hz`: an episode without one is an error naming it (a rate guessed
from the stamps of a teleop recording would differ from episode to episode; set the recorder's
`control_rate_hz` parameter instead). The trainer saves the contract in the checkpoint and the
export copies it into model.yaml.

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
from conla_ros.episodes.contract import EpisodeContract

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
        first: EpisodeContract | None = None  # the first usable episode's contract (declared limits)
        for path in paths:
            try:
                episode = load_episode(path)
            except Exception as error:  # EpisodeReadError or a rosbags error
                self.skipped.append((str(path), str(error)))
                continue
            if config.only_successful and episode.metadata.get("success") is False:
                continue
            if use_proprio and not (len(episode.joint_stamps) and episode.joint_names):
                self.skipped.append((str(path), "no named /joint_states (the model takes proprio)"))
                continue
            contract, reason = self._episode_contract(episode)
            if contract is not None and first is not None:
                reason = _difference(contract, first)
            if contract is None or reason:
                self.skipped.append((str(path), str(reason)))
                continue
            first = contract
            self.joint_names = contract.proprio_names
            self.control_rate_hz = contract.control_rate_hz
            e = len(self.episodes)
            self.episodes.append(episode)
            for k, c in enumerate(episode.next_command_index()):
                if c < len(episode.commands):
                    self.index.append((e, k, int(c)))
        if not self.index or first is None:
            raise ValueError(f"{root}: no usable samples in {len(paths)} episodes")
        action = first.action
        if action.low is None:  # nothing declared: the observed range of the kept episodes
            commands = np.concatenate([e.commands for e in self.episodes])
            action = action.with_limits(commands.min(0), commands.max(0))
        self.contract = EpisodeContract(action=action, control_rate_hz=first.control_rate_hz,
                                        proprio_names=first.proprio_names)
        self.instructions = sorted({self._instruction(e, k) for e, k, _ in self.index})
        self.embeddings: dict[str, np.ndarray] = {}

    def _episode_contract(self, episode) -> tuple[EpisodeContract | None, str | None]:
        """(the contract of one episode, None), or (None, why it has none). A missing rate is a ValueError naming it."""
        rate = episode.metadata.get("control_rate_hz")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{episode.path}: its metadata has no valid control_rate_hz (got {rate!r}), the rate "
                             f"its commands were sent at; record it (the recorder node's control_rate_hz "
                             f"parameter) or remove the episode from {self.config.root}")
        names = episode.joint_names if self.use_proprio else ()
        try:
            return EpisodeContract(action=episode.action, control_rate_hz=float(rate), proprio_names=names), None
        except ValueError as error:  # e.g. duplicate joint names in /joint_states
            return None, str(error)

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
        """Values per action: the contract's dimensions."""
        return self.contract.action.dim

    @property
    def proprio_dim(self) -> int:
        return len(self.contract.proprio_names)

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


def _difference(contract: EpisodeContract, first: EpisodeContract) -> str | None:
    """Why an episode's contract does not fit the dataset's (the first episode's), or None."""
    mine, theirs = contract.action, first.action
    fields = [f for f in ("kind", "names", "units", "gripper", "low", "high") if getattr(mine, f) != getattr(theirs, f)]
    if fields:
        diffs = "; ".join(f"{f} {getattr(mine, f)!r} instead of {getattr(theirs, f)!r}" for f in fields)
        return f"action differs from the first episode's ({first.action.describe()}): {diffs}"
    if contract.control_rate_hz != first.control_rate_hz:
        return f"control rate {contract.control_rate_hz:g} Hz differs from {first.control_rate_hz:g} Hz"
    if contract.proprio_names != first.proprio_names:
        return f"joint names {contract.proprio_names} differ from {first.proprio_names}"
    return None


def collate_samples(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
