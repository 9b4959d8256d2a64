"""Frame pairs (o_t, o_{t+k}) from action-free videos or robot episodes, for the latent action model.

Sources (`DataConfig.format`):
  - "videos": the layout of docs/architecture.md, `ROOT/videos/<id>.mp4` + `ROOT/labels.jsonl` with lines
    `{"id", "label", "instruction"}` (`labels` overrides the file; `.webm`/`.avi`/`.mkv` are tried
    when there is no `.mp4`). Without a labels file every `videos/*.mp4` is used, unlabelled.
  - "ssv2": Something-Something v2 as distributed: `labels` is its JSON list (train.json /
    validation.json) of `{"id", "label", "template", "placeholders"}` and ROOT holds `<id>.webm`.
    The action category is the template with its brackets removed ("Pushing [something] from
    left to right" → "Pushing something from left to right"); entries without a template (the
    test split) are unlabelled.
  - "episodes": rosbag2 episode directories under ROOT (conla_ros.episodes.reader); frames are the
    camera topic, the category is the episode's `task`.
Unlabelled clips get label −1 (SupCon leaves them out).

Sampling (deterministic, so a resumed run sees exactly the batches it would have seen): the
stream of items is the concatenation of epochs; epoch e is a permutation, seeded by (seed, e), of
`samples_per_clip` × clips items; item i stands for clip i mod clips, and its frame pair (t uniform
in [0, T − 1 − k]) is drawn from a generator seeded by (seed, e, i). Global batch b is stream items
[b·B, (b+1)·B); rank r of R takes the r-th B/R slice. The data position of a run is therefore just
the number of global batches consumed, and resuming skips no decoding.

Frames: decoded whole (OpenCV for video files, BGR → RGB), centre-cropped and resized once with
conla_ros.core.preprocessing (the function the robot node uses) and kept as uint8 in a per-worker
LRU cache of `cache_mb`; a pair is normalised from the cache with the same function, so the result
equals preprocessing the raw frames (the uint8 round trip is exact with mean 0, std 1).

A clip that cannot be used (missing, unreadable, corrupt, fewer than k + 1 frames) is skipped: the
item falls back, deterministically, to the next clip in index order, and the sample carries
`(name, reason)` in "skipped" so the trainer can report each file once and count it.

Augmentation (off by default): `brightness_jitter` scales both frames of a pair by the same
random factor in [1 − j, 1 + j]. Nothing that changes geometry: a flip would change the action.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_images
from conla_training.datasets.clips import (
    Clip,
    ClipReadError,
    DataConfig,
    list_clips,
    read_frames,
    read_video,
    ssv2_category,
)

__all__ = [
    "Clip",
    "ClipReadError",
    "DataConfig",
    "FramePairDataset",
    "LabelledPairs",
    "PairBatchSampler",
    "collate_pairs",
    "list_clips",
    "read_video",
    "ssv2_category",
]

log = logging.getLogger(__name__)

class FramePairDataset(Dataset):
    """Items are (epoch, item) keys from `PairBatchSampler`; returns a dict of tensors (see `__getitem__`)."""

    def __init__(
        self,
        clips: Sequence[Clip],
        spec: ImagePreprocessing,
        frame_gap: int,
        *,
        seed: int = 0,
        samples_per_clip: int = 1,
        second_pair: bool = False,
        cache_mb: int = 512,
        brightness_jitter: float = 0.0,
        label_names: Sequence[str] | None = None,
    ) -> None:
        self.clips = list(clips)
        self.spec = spec
        self.frame_gap = frame_gap
        self.seed = seed
        self.samples_per_clip = samples_per_clip
        self.second_pair = second_pair
        self.cache_bytes = cache_mb * 2**20
        self.brightness_jitter = brightness_jitter
        names = sorted({c.label for c in self.clips if c.label is not None}) if label_names is None else label_names
        self.label_names: list[str] = list(names)
        index = {name: i for i, name in enumerate(self.label_names)}
        self.label_ids = [index.get(c.label, -1) if c.label is not None else -1 for c in self.clips]
        # Stage 1 of preprocessing (crop + resize) is cached as uint8; stage 2 normalises.
        self._resize_spec = dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self._normalise_spec = dataclasses.replace(spec, crop_fraction=1.0)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_used = 0
        self._bad: dict[int, str] = {}  # clip index → reason, per worker

    @classmethod
    def from_config(cls, config: DataConfig, spec: ImagePreprocessing, *, seed: int = 0,
                    second_pair: bool = False) -> tuple[FramePairDataset, list[tuple[str, str]]]:
        """The data set of `config` and the listed clips whose files are missing."""
        clips, missing = list_clips(config)
        dataset = cls(clips, spec, config.frame_gap, seed=seed, samples_per_clip=config.samples_per_clip,
                      second_pair=second_pair, cache_mb=config.cache_mb,
                      brightness_jitter=config.brightness_jitter)
        return dataset, missing

    @property
    def epoch_length(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def __len__(self) -> int:
        return self.epoch_length

    def frames(self, clip_index: int) -> np.ndarray:
        """(T, S, S, 3) uint8: the clip's frames cropped and resized; ClipReadError if unusable."""
        if clip_index in self._bad:
            raise ClipReadError(self._bad[clip_index])
        cached = self._cache.get(clip_index)
        if cached is not None:
            self._cache.move_to_end(clip_index)
            return cached
        try:
            raw = read_frames(self.clips[clip_index])
            if len(raw) < self.frame_gap + 1:
                raise ClipReadError(f"{len(raw)} frames, fewer than frame_gap + 1 = {self.frame_gap + 1}")
            unit = preprocess_images(raw, self._resize_spec)  # (T, 3, S, S) in [0, 1]
            frames = np.rint(unit.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)  # (T, S, S, 3)
        except ClipReadError as error:
            self._bad[clip_index] = str(error)
            raise
        except Exception as error:  # a decoder or shape error from an odd file: unusable, not fatal
            self._bad[clip_index] = f"{type(error).__name__}: {error}"
            raise ClipReadError(self._bad[clip_index]) from None
        if frames.nbytes <= self.cache_bytes:
            self._cache[clip_index] = frames
            self._cache_used += frames.nbytes
            while self._cache_used > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= old.nbytes
        return frames

    def _pair(self, frames: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = int(rng.integers(0, len(frames) - self.frame_gap))
        pair = preprocess_images(frames[[t, t + self.frame_gap]], self._normalise_spec)  # (2, 3, S, S)
        if self.brightness_jitter:
            pair = np.clip(pair * rng.uniform(1 - self.brightness_jitter, 1 + self.brightness_jitter), 0.0, 1.0)
        tensor = torch.from_numpy(np.ascontiguousarray(pair, dtype=np.float32))
        return tensor[0], tensor[1]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        """{"o_t", "o_tk": (3, S, S) float32, "label": int, "clip": int, ["o_t2", "o_tk2"],
        "skipped": [(name, why)]}."""
        epoch, item = key
        n = len(self.clips)
        skipped: list[tuple[str, str]] = []
        for attempt in range(n):
            clip_index = (item + attempt) % n
            try:
                frames = self.frames(clip_index)
            except ClipReadError as error:
                skipped.append((str(self.clips[clip_index].path), str(error)))
                continue
            rng = np.random.default_rng((self.seed, epoch, item, attempt))
            o_t, o_tk = self._pair(frames, rng)
            sample = {"o_t": o_t, "o_tk": o_tk, "label": self.label_ids[clip_index], "clip": clip_index,
                      "skipped": skipped}
            if self.second_pair:
                sample["o_t2"], sample["o_tk2"] = self._pair(frames, rng)
            return sample
        raise RuntimeError(f"none of the {n} clips could be read; last problems: {skipped[-3:]}")


def collate_pairs(samples: list[dict]) -> dict:
    """Stack the tensors of a list of samples; concatenate their "skipped" lists."""
    batch: dict = {key: torch.stack([s[key] for s in samples]) for key in ("o_t", "o_tk", "o_t2", "o_tk2")
                   if key in samples[0]}
    batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)
    batch["clip"] = torch.tensor([s["clip"] for s in samples], dtype=torch.long)
    batch["skipped"] = [entry for s in samples for entry in s["skipped"]]
    return batch


class PairBatchSampler:
    """Endless, deterministic batches of (epoch, item) keys for one rank, starting at global batch `start`.

    Global batch b holds items [b·B, (b+1)·B) of the epoch-concatenated stream; this rank takes
    slice [rank·B/R, (rank+1)·B/R) of it.
    """

    def __init__(self, epoch_length: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start: int = 0) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the number of processes {world_size}")
        self.epoch_length, self.batch_size = epoch_length, batch_size
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start
        self.local = batch_size // world_size
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two epochs
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng((self.seed, epoch, 0x5EED)).permutation(self.epoch_length)
        return self._perms[epoch]

    def keys(self, batch: int) -> list[tuple[int, int]]:
        """This rank's keys of global batch `batch`."""
        first = batch * self.batch_size + self.rank * self.local
        keys = []
        for position in range(first, first + self.local):
            epoch, offset = divmod(position, self.epoch_length)
            keys.append((epoch, int(self._perm(epoch)[offset])))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start
        while True:
            yield self.keys(batch)
            batch += 1


class LabelledPairs:
    """Labelled robot frame pairs for the LAM's action head (an extension, see LAMConfig.action_head_dim).

    Every pair (o_t, o_{t+k}) of every episode (rosbag2, with commands) whose window [t, t + k) is
    covered by commands, with the probe target of `conla eval lam`: the mean command over that
    window. Held in memory as uint8 (a few demos are a few MB). `batch(step)` draws `batch_size`
    pairs uniformly from a generator seeded by (seed, step), so a resumed run sees the same pairs.
    """

    def __init__(self, episodes: Sequence, spec: ImagePreprocessing, frame_gap: int, *, seed: int = 0,
                 batch_size: int = 16) -> None:
        self.spec, self.frame_gap, self.seed, self.batch_size = spec, frame_gap, seed, batch_size
        self._normalise_spec = dataclasses.replace(spec, crop_fraction=1.0)
        resize_spec = dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.frames: list[np.ndarray] = []
        index, targets = [], []
        for e, episode in enumerate(episodes):
            commands = np.asarray(episode.commands, dtype=np.float64)  # (C, A): command t follows image t
            unit = preprocess_images(episode.images, resize_spec)  # (T, 3, S, S)
            self.frames.append(np.rint(unit.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8))
            for t in range(len(unit) - frame_gap):
                if t + frame_gap <= len(commands):
                    index.append((e, t))
                    targets.append(commands[t : t + frame_gap].mean(0))
        if not index:
            raise ValueError(f"no labelled pair with frame_gap {frame_gap} in {len(episodes)} episode(s)")
        self.index = np.asarray(index, dtype=np.int64)  # (P, 2) episode, t
        self.targets = np.asarray(targets, dtype=np.float32)  # (P, A)

    @classmethod
    def from_folder(cls, root, spec: ImagePreprocessing, frame_gap: int, *, seed: int = 0, batch_size: int = 16,
                    max_episodes: int = 0) -> LabelledPairs:
        from conla_ros.episodes.reader import list_episodes, load_episode

        paths = list_episodes(root)
        if max_episodes:
            paths = paths[:max_episodes]
        if not paths:
            raise ValueError(f"no robot episodes under {root}")
        return cls([load_episode(p) for p in paths], spec, frame_gap, seed=seed, batch_size=batch_size)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def action_dim(self) -> int:
        return self.targets.shape[1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(o_t (M, 3, S, S), o_tk, action (M, A)) float32 for optimiser step `step`."""
        rng = np.random.default_rng((self.seed, step, 0xAC7))
        pick = rng.integers(0, len(self.index), self.batch_size)
        pairs = [self.frames[e][[t, t + self.frame_gap]] for e, t in self.index[pick]]
        unit = preprocess_images(np.concatenate(pairs), self._normalise_spec)  # (2M, 3, S, S)
        tensor = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32)).unflatten(0, (-1, 2))
        return tensor[:, 0], tensor[:, 1], torch.from_numpy(self.targets[pick])
