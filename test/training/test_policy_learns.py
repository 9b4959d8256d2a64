"""The learner really learns: a tiny policy of the default recipe's kind (ResNet, proprio, random shift, EMA),
trained for under a minute on one easy task, succeeds where random actions never do, through the robot's
ONNX runtime and chunk executor (`conla eval sim --model`'s model_policy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.tiny_model import write_tiny_text_encoder

from conla_training.commands.train_policy import main as policy_main
from conla_training.exports.policy import export_policy

REPO = Path(__file__).resolve().parents[2]
TASK = "window-close"


@pytest.mark.slow
def test_a_tiny_policy_beats_random_by_a_clear_margin(tmp_path):
    from conla_ros.core.policy import RandomPolicy
    from conla_ros.eval.sim import evaluate, model_policy
    from conla_ros.sim.generate_episodes import generate_episodes
    from conla_ros.sim.world import WorldConfig

    episodes = tmp_path / "episodes"
    generate_episodes([TASK], 6, episodes, image_size=32, progress=False)
    encoder = write_tiny_text_encoder(tmp_path / "encoder")
    run = tmp_path / "run"
    assert policy_main(["--config", str(REPO / "config/policy_train_learning_test.yaml"), "--run-dir", str(run),
                        "--set", f"data.root={episodes}", "--set", f"data.text_encoder={encoder}"]) == 0
    export_policy(run, tmp_path / "model")
    world = WorldConfig(image_size=32, max_steps=150)
    learned = evaluate(model_policy(tmp_path / "model"), [TASK], 6, world, progress=False).mean_success
    floor = evaluate(RandomPolicy(), [TASK], 6, world, progress=False).mean_success
    assert floor == 0.0  # random actions never close the window in 150 steps
    assert learned >= 0.5, f"the tiny policy succeeded in only {learned:.0%} of held-out {TASK} episodes"
