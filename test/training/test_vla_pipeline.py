"""The whole offline pipeline on tiny data, with the real all-MiniLM-L6-v2 instruction encoder:
videos → LAM → `conla label` → `conla train vla` → `conla train policy` (init_from) → `conla export
--checkpoint` → the torch-free runtime, and the exported policy driving the simulated arm for a few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures.tiny_model import exported_minilm

from conla_ros.core.config import apply_overrides, load_config
from conla_ros.core.runtime import load_policy
from conla_training.commands.export import main as export_main
from conla_training.commands.label import main as label_main
from conla_training.commands.train_policy import main as policy_main
from conla_training.commands.train_vla import main as vla_main
from conla_training.trainers.lam import LAMRunConfig, train_lam

REPO = Path(__file__).resolve().parents[2]


def test_videos_to_runtime(clean_video_root, tmp_path_factory, tmp_path):
    from conla_ros.sim.generate_episodes import generate_episodes

    encoder = exported_minilm(tmp_path_factory)
    lam_run = tmp_path / "lam"
    lam_config = apply_overrides(load_config(LAMRunConfig, REPO / "config" / "lam_tiny.yaml"),
                                 [f"data.root={clean_video_root}", f"train.run_dir={lam_run}", "train.steps=3",
                                  "train.sample_every=0"])
    assert train_lam(lam_config) == 0
    labels = tmp_path / "labels.jsonl"
    assert label_main(["--lam", str(lam_run), "--videos", str(clean_video_root), "--out", str(labels),
                       "--no-progress"]) == 0

    vla_run = tmp_path / "vla"
    assert vla_main(["--config", str(REPO / "config" / "vla_tiny.yaml"), "--run-dir", str(vla_run),
                     "--set", f"data.labels={labels}", "--set", f"data.text_encoder={encoder}"]) == 0

    episodes = tmp_path / "episodes"
    generate_episodes(["reach", "push"], 1, episodes, max_steps=12, progress=False)
    policy_run = tmp_path / "policy"
    assert policy_main(["--config", str(REPO / "config" / "policy_train_tiny.yaml"), "--run-dir", str(policy_run),
                        "--set", f"init_from={vla_run}", "--set", f"data.root={episodes}",
                        "--set", f"data.text_encoder={encoder}"]) == 0

    out = tmp_path / "models" / "tiny"
    recipe = tmp_path / "recipe.sh"
    recipe.write_text("# the tiny pipeline\n\nconla train lam --config config/lam_tiny.yaml\n")
    assert export_main(["--checkpoint", str(policy_run), "--out", str(out), "--episodes", str(episodes),
                        "--parity-samples", "4", "--recipe", str(recipe)]) == 0
    policy = load_policy(out, providers="cpu")
    assert policy.spec.instruction_encoder.probe_text  # the real encoder's fingerprint travels with the model
    # The whole data recipe is in model.yaml: every stage back to the LAM's videos, and the commands given.
    provenance = policy.spec.provenance
    assert [stage["stage"] for stage in provenance.lineage] == ["policy", "vla", "labels", "lam"]
    assert provenance.lineage[0]["episodes"] == str(episodes) and provenance.lineage[-1]["videos"] == str(
        clean_video_root)
    assert provenance.lineage[-1]["method"] in ("ConLA", "LAPA") and provenance.lineage[1]["status"] == "finished"
    assert provenance.recipe == ("# the tiny pipeline", "conla train lam --config config/lam_tiny.yaml")

    from conla_ros.sim.world import SimWorld

    world = SimWorld()
    obs = world.reset("reach", 1_000_001)
    for _ in range(3):
        actions = policy.infer({"image": obs.image, "instruction": "reach the goal", "proprio": obs.joint_positions})
        assert actions["actions"].shape == (4, 4) and np.isfinite(actions["actions"]).all()
        obs = world.step(actions["actions"][0])
    world.close()
