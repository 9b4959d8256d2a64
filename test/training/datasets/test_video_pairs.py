"""Frame-pair data: the three source formats, exact preprocessing, deterministic sharded sampling, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_images
from conla_training.datasets.video_pairs import (
    ClipReadError,
    DataConfig,
    FramePairDataset,
    PairBatchSampler,
    collate_pairs,
    list_clips,
    read_video,
    ssv2_category,
)

SPEC = ImagePreprocessing(size=32, mean=(0, 0, 0), std=(1, 1, 1))


def _dataset(root: Path, **kwargs) -> tuple[FramePairDataset, list]:
    config = DataConfig(root=root, frame_gap=kwargs.pop("frame_gap", 2), cache_mb=kwargs.pop("cache_mb", 64))
    return FramePairDataset.from_config(config, SPEC, **kwargs)


def test_videos_format_lists_clips_labels_and_missing_files(clean_video_root, tmp_path):
    clips, missing = list_clips(DataConfig(root=clean_video_root))
    assert len(clips) == 8 and missing == []
    assert {c.label for c in clips} == {"move left", "move right", "move up", "move down"}
    labels = (clean_video_root / "labels.jsonl").read_text() + json.dumps({"id": "gone", "label": "x"}) + "\n"
    (tmp_path / "labels.jsonl").write_text(labels)
    clips, missing = list_clips(DataConfig(root=clean_video_root, labels=tmp_path / "labels.jsonl"))
    assert len(clips) == 8 and [name for name, _ in missing] == ["gone"]


def test_videos_without_labels_file_are_unlabelled(clean_video_root, tmp_path):
    (tmp_path / "videos").mkdir()
    for path in sorted((clean_video_root / "videos").glob("*.mp4"))[:3]:
        (tmp_path / "videos" / path.name).write_bytes(path.read_bytes())
    dataset, _ = _dataset(tmp_path)
    assert len(dataset.clips) == 3 and dataset.label_names == [] and dataset[(0, 0)]["label"] == -1


def test_ssv2_category():
    assert ssv2_category("Pushing [something] from left to right") == "Pushing something from left to right"
    assert ssv2_category("Putting [something] next to [something]") == "Putting something next to something"


def test_ssv2_format_reads_label_json_and_webm(tmp_path, moving_square):
    entries = []
    for i, (template, direction) in enumerate([("Pushing [something] from left to right", (1, 0)),
                                              ("Pushing [something] from right to left", (-1, 0))]):
        frames = moving_square(direction, (200, 30, 30), frames=6, size=40)
        writer = cv2.VideoWriter(str(tmp_path / f"{100 + i}.webm"), cv2.VideoWriter_fourcc(*"VP80"), 12.0, (40, 40))
        assert writer.isOpened()
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        entries.append({"id": str(100 + i), "label": "pushing a cup from left to right", "template": template,
                        "placeholders": ["a cup"]})
    entries.append({"id": "999", "template": "Dropping [something]"})  # no file
    (tmp_path / "train.json").write_text(json.dumps(entries))
    config = DataConfig(format="ssv2", root=tmp_path, labels=tmp_path / "train.json", frame_gap=2)
    dataset, missing = FramePairDataset.from_config(config, SPEC)
    assert [name for name, _ in missing] == ["999"]
    assert dataset.label_names == ["Pushing something from left to right", "Pushing something from right to left"]
    sample = dataset[(0, 1)]
    assert sample["o_t"].shape == (3, 32, 32) and sample["label"] == 1 and sample["skipped"] == []


def test_ssv2_format_needs_a_label_file():
    with pytest.raises(ValueError, match="labels"):
        DataConfig(format="ssv2", root=Path("x"))


def test_pair_equals_preprocessing_the_raw_frames(clean_video_root):
    dataset, _ = _dataset(clean_video_root, seed=3)
    sample = dataset[(0, 5)]
    raw = read_video(dataset.clips[5].path)
    expected = torch.from_numpy(preprocess_images(raw, SPEC))  # (T, 3, 32, 32)
    matches = [t for t in range(len(raw) - 2) if torch.equal(expected[t], sample["o_t"])]
    assert matches, "o_t is not exactly one preprocessed frame"
    assert torch.equal(expected[matches[0] + 2], sample["o_tk"])
    assert float(sample["o_t"].min()) >= 0.0 and float(sample["o_t"].max()) <= 1.0


def test_samples_are_deterministic_and_cache_independent(clean_video_root):
    a, _ = _dataset(clean_video_root, seed=1)
    b, _ = _dataset(clean_video_root, seed=1, cache_mb=0)
    for key in [(0, 0), (0, 7), (3, 2)]:
        x, y = a[key], b[key]
        assert torch.equal(x["o_t"], y["o_t"]) and torch.equal(x["o_tk"], y["o_tk"]) and x["label"] == y["label"]
    c, _ = _dataset(clean_video_root, seed=2)
    assert any(not torch.equal(a[(0, k)]["o_t"], c[(0, k)]["o_t"]) for k in range(8))


def test_second_pair_for_visual_contrast_without_reversal(clean_video_root):
    dataset, _ = _dataset(clean_video_root, second_pair=True)
    sample = dataset[(0, 0)]
    assert {"o_t2", "o_tk2"} <= set(sample) and sample["o_t2"].shape == (3, 32, 32)
    batch = collate_pairs([dataset[(0, k)] for k in range(4)])
    assert batch["o_t2"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,)


def test_corrupt_file_is_skipped_with_its_name_and_the_item_falls_back(video_root):
    dataset, _ = _dataset(video_root)
    bad = next(i for i, c in enumerate(dataset.clips) if c.name.startswith("garbage"))
    with pytest.raises(ClipReadError):
        dataset.frames(bad)
    sample = dataset[(0, bad)]
    assert [Path(name).name for name, _ in sample["skipped"]] == ["garbage_000.mp4"]
    assert sample["clip"] == (bad + 1) % len(dataset.clips)


def test_too_short_clip_is_skipped(tmp_path, mp4_writer, moving_square):
    mp4_writer(tmp_path / "videos" / "short.mp4", moving_square((1, 0), (255, 0, 0), frames=2))
    mp4_writer(tmp_path / "videos" / "long.mp4", moving_square((1, 0), (255, 0, 0), frames=8))
    dataset, _ = _dataset(tmp_path, frame_gap=4)
    short = [c.name for c in dataset.clips].index("short")
    sample = dataset[(0, short)]
    assert "fewer than frame_gap" in sample["skipped"][0][1]


def test_batch_sampler_shards_and_resumes():
    whole = PairBatchSampler(10, 4, seed=5)
    ranks = [PairBatchSampler(10, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    for b in range(6):  # spans several epochs of 10 items
        assert ranks[0].keys(b) + ranks[1].keys(b) == whole.keys(b)
    stream = [key for b in range(5) for key in whole.keys(b)]
    assert sorted(k[1] for k in stream[:10]) == list(range(10))  # an epoch is a permutation
    assert {k[0] for k in stream[:10]} == {0} and {k[0] for k in stream[10:20]} == {1}
    resumed = iter(PairBatchSampler(10, 4, seed=5, start=3))
    assert next(resumed) == whole.keys(3) and next(resumed) == whole.keys(4)
    with pytest.raises(ValueError, match="multiple"):
        PairBatchSampler(10, 5, world_size=2)


def test_episodes_format_reads_the_camera_topic(tmp_path):
    writer_module = pytest.importorskip("conla_ros.episodes.writer")
    for i, task in enumerate(["reach", "push"]):
        with writer_module.EpisodeWriter(tmp_path / f"{task}_{i}", metadata={"task": task, "seed": i}) as writer:
            writer.add_instruction(0, f"{task} it")
            for k in range(6):
                image = np.zeros((24, 24, 3), dtype=np.uint8)
                image[:, :, 0] = 40 * k
                writer.add_image(1_000_000 * (k + 1), image)
                writer.add_action(1_000_000 * (k + 1) + 1, [0.0, 0.0, 0.0, 0.0])
    (tmp_path / "broken").mkdir()
    config = DataConfig(format="episodes", root=tmp_path, frame_gap=2)
    dataset, _ = FramePairDataset.from_config(config, SPEC)
    assert sorted(c.name for c in dataset.clips) == ["push_1", "reach_0"]
    assert dataset.label_names == ["push", "reach"]
    sample = dataset[(0, 0)]
    assert sample["o_t"].shape == (3, 32, 32)
    # Frame k has red = 40k; the pair is 2 frames apart.
    assert float(sample["o_tk"][0, 0, 0] - sample["o_t"][0, 0, 0]) == pytest.approx(80 / 255, abs=1e-6)


def test_labelled_pairs_targets_and_deterministic_batches():
    from types import SimpleNamespace

    from conla_ros.core.preprocessing import ImagePreprocessing
    from conla_training.datasets.video_pairs import LabelledPairs

    rng = np.random.default_rng(0)
    episodes = [SimpleNamespace(images=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8),
                                commands=rng.uniform(-1, 1, (11, 4))) for _ in range(2)]
    spec = ImagePreprocessing(size=16, crop_fraction=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    pairs = LabelledPairs(episodes, spec, frame_gap=3, seed=5, batch_size=4)
    assert len(pairs) == 2 * 9 and pairs.action_dim == 4  # t in 0..8: t + 3 <= 11 commands
    e, t = pairs.index[5]
    np.testing.assert_allclose(pairs.targets[5], episodes[e].commands[t : t + 3].mean(0), rtol=1e-6)
    o_t, o_tk, action = pairs.batch(7)
    assert o_t.shape == o_tk.shape == (4, 3, 16, 16) and action.shape == (4, 4)
    again = pairs.batch(7)
    assert torch.equal(o_t, again[0]) and torch.equal(action, again[2])
    assert not torch.equal(action, pairs.batch(8)[2])
    with pytest.raises(ValueError, match="no labelled pair"):
        LabelledPairs(episodes, spec, frame_gap=20)
