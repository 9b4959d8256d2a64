"""Robot-episode samples, `conla train policy` (chunk and bins heads, scratch and from a pretrained VLA) and
`conla train vla` (latent pretraining on videos + `conla label` output), on tiny real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny_model import write_tiny_text_encoder

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_image
from conla_ros.episodes.reader import load_episode
from conla_training.commands.train_policy import main as policy_main
from conla_training.commands.train_vla import main as vla_main
from conla_training.datasets.episodes import EpisodeDataConfig, EpisodeDataset
from conla_training.datasets.latent_labels import LatentDataConfig, LatentLabelDataset
from conla_training.engine.checkpoint import load_checkpoint
from conla_training.trainers.vla import load_vla

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    from conla_ros.sim.generate_episodes import generate_episodes

    root = tmp_path_factory.mktemp("episodes")
    generate_episodes(["reach", "push"], 1, root, max_steps=12, progress=False)
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A tiny real sentence encoder with the exported encoder's interface (fast; the real one is tested elsewhere)."""
    return write_tiny_text_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def latent_labels(clean_video_root, tmp_path_factory) -> Path:
    """`conla label`-format lines for the clean tiny videos (random codes: the pipeline, not the LAM, is tested)."""
    rng = np.random.default_rng(0)
    lines = []
    for row in map(json.loads, (clean_video_root / "labels.jsonl").read_text().splitlines()):
        lines.append({**row, "path": str(clean_video_root / "videos" / f"{row['id']}.mp4"), "frames": 10,
                      "frame_gap": 2, "stride": 1, "codes": rng.integers(0, 8, (8, 4)).tolist()})
    lines[0]["instruction"] = ""  # falls back to the action category label
    out = tmp_path_factory.mktemp("labels") / "labels.jsonl"
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def _policy(config: str, episodes: Path, encoder: Path, run_dir: Path, *extra: str) -> int:
    return policy_main(["--config", str(REPO / "config" / config), "--run-dir", str(run_dir),
                        "--set", f"data.root={episodes}", "--set", f"data.text_encoder={encoder}", *extra])


@pytest.fixture(scope="module")
def pretrained(latent_labels, encoder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vla_run")
    assert vla_main(["--config", str(REPO / "config" / "vla_tiny.yaml"), "--run-dir", str(run),
                     "--set", f"data.labels={latent_labels}", "--set", f"data.text_encoder={encoder}",
                     "--set", "train.steps=4"]) == 0
    return run


def test_samples_are_the_image_and_the_commands_that_followed(episodes):
    spec = ImagePreprocessing(size=16)
    data = EpisodeDataset(EpisodeDataConfig(root=episodes), spec, chunk_length=4, use_proprio=True)
    data.set_embeddings({t: np.full(384, i, np.float32) for i, t in enumerate(data.instructions)})
    assert len(data.episodes) == 2 and data.proprio_dim == 9 and data.action_dim == 4
    episode = load_episode(data.episodes[0].path)
    following = episode.next_command_index()
    first = [i for i, (e, _, _) in enumerate(data.index) if e == 0]
    assert len(first) == int((following < len(episode.commands)).sum())  # the last image has no command after it
    for i in first:
        _, k, c = data.index[i]
        assert c == following[k]
        sample = data.sample(i)
        np.testing.assert_array_equal(sample["image"], preprocess_image(episode.images[k], spec))
        valid = int(sample["action_mask"].sum())
        np.testing.assert_allclose(sample["actions"][:valid], episode.commands[c : c + valid], rtol=1e-6)
        np.testing.assert_array_equal(sample["actions"][valid:], np.repeat(sample["actions"][valid - 1 : valid],
                                                                         4 - valid, 0))  # padding repeats the last
        assert valid == min(4, len(episode.commands) - c)
        j = np.searchsorted(episode.joint_stamps, episode.image_stamps[k], side="right") - 1
        np.testing.assert_allclose(sample["proprio"], episode.joint_positions[max(j, 0)], rtol=1e-6)
    assert sum(data.sample(i)["action_mask"].all() for i in range(len(data))) < len(data)  # ends are padded


def test_policy_chunk_from_scratch_saves_statistics_and_resumes(episodes, encoder, tmp_path):
    run = tmp_path / "run"
    assert _policy("policy_train_tiny.yaml", episodes, encoder, run, "--set", "train.steps=3") == 0
    model, payload = load_vla(run)
    stats = payload["extra"]["statistics"]
    commands = np.concatenate([load_episode(p).commands for p in sorted(episodes.iterdir())])
    np.testing.assert_allclose(model.action_low.numpy(), np.percentile(commands, 1, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action_high"], np.percentile(commands, 99, axis=0), rtol=1e-6)
    assert model.config.proprio_dim == 9 and payload["extra"]["joint_names"][0]
    assert payload["extra"]["text_encoder"] == str(encoder)
    # Continue to step 5 with --resume; without it the run folder is refused (exit 2).
    assert _policy("policy_train_tiny.yaml", episodes, encoder, run, "--set", "train.steps=5") == 2
    assert _policy("policy_train_tiny.yaml", episodes, encoder, run, "--set", "train.steps=5", "--resume") == 0
    assert load_checkpoint(run)["step"] == 5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and np.isfinite(summary["last_scalars"]["loss/l1"])


def test_policy_bins_head(episodes, encoder, tmp_path):
    assert _policy("policy_train_tiny.yaml", episodes, encoder, tmp_path / "bins", "--set", "model.head=bins",
                   "--set", "use_proprio=false") == 0
    model, _ = load_vla(tmp_path / "bins")
    assert model.config.head == "bins" and model.config.proprio_dim == 0
    assert model.bin_centres.shape == (4, 16)
    commands = np.concatenate([load_episode(p).commands for p in sorted(episodes.iterdir())])
    centres = model.bin_centres.numpy()  # per dimension: ascending, each the mean of training values in its bin
    assert (np.diff(centres, axis=1) >= -1e-6).all()
    assert (centres.min(1) >= commands.min(0) - 1e-5).all() and (centres.max(1) <= commands.max(0) + 1e-5).all()


def test_vla_pretraining_on_latent_labels(pretrained, latent_labels):
    model, payload = load_vla(pretrained)
    assert model.config.head == "latent" and payload["step"] == 4
    summary = json.loads((pretrained / "summary.json").read_text())
    assert summary["status"] == "finished" and "metrics/latent_accuracy" in summary["last_scalars"]
    data = LatentLabelDataset(LatentDataConfig(labels=latent_labels), ImagePreprocessing(size=16))
    assert len(data) == 8 * 8 and "move left" in data.instructions  # the empty instruction → its label
    data.set_embeddings({t: np.zeros(384, np.float32) for t in data.instructions})
    item = data[(0, 5)]
    assert item["image"].shape == (3, 16, 16) and item["latents"].shape == (4,)


def test_policy_from_pretrained_vla_loads_the_backbone(pretrained, episodes, encoder, tmp_path):
    run = tmp_path / "ft"
    # A different backbone in the policy config is overridden by the pretrained one (and reported).
    assert _policy("policy_train_tiny.yaml", episodes, encoder, run, "--set", f"init_from={pretrained}",
                   "--set", "model.vision_width=32", "--set", "train.steps=1", "--set", "train.lr=1e-9") == 0
    policy, _ = load_vla(run)
    base, _ = load_vla(pretrained)
    assert policy.config.vision_width == base.config.vision_width == 16
    torch.testing.assert_close(policy.vision.state_dict(), base.vision.state_dict(), atol=1e-6, rtol=0)
    assert policy.proprio_proj is not None and base.proprio_proj is None  # a new input starts fresh


def test_bad_config_is_exit_2_and_names_the_closest_key(episodes, encoder, tmp_path, capsys):
    assert _policy("policy_train_tiny.yaml", episodes, encoder, tmp_path / "x", "--set", "model.hed=bins") == 2
    assert "head" in capsys.readouterr().err
    assert _policy("policy_train_tiny.yaml", tmp_path / "missing", encoder, tmp_path / "y") == 2


def test_policy_with_augmentation_and_weight_average_resumes_exactly(episodes, encoder, tmp_path):
    """The recipe's switches: random shift + instruction noise + EMA; the average is what load_vla returns."""
    args = ("--set", "augment.random_shift=2", "--set", "augment.instruction_noise=0.05",
            "--set", "train.ema_decay=0.9", "--set", "train.checkpoint_every=2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _policy("policy_train_tiny.yaml", episodes, encoder, straight, *args, "--set", "train.steps=4") == 0
    assert _policy("policy_train_tiny.yaml", episodes, encoder, resumed, *args, "--set", "train.steps=2") == 0
    assert _policy("policy_train_tiny.yaml", episodes, encoder, resumed, *args, "--set", "train.steps=4",
                   "--resume") == 0
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert set(a["ema"]) == set(a["model"])
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])
        torch.testing.assert_close(a["ema"][key], b["ema"][key])
    model, _ = load_vla(straight)
    torch.testing.assert_close(model.state_dict()["queries"], a["ema"]["queries"])
    assert not torch.equal(a["ema"]["queries"], a["model"]["queries"])
