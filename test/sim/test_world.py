"""SimWorld: shapes, determinism, episode limits, one env per process, render settings."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="the simulation needs the 'sim' extra (metaworld, mujoco)")

from conla_ros.sim.instructions import MT10_TASKS
from conla_ros.sim.world import CONTROL_RATE_HZ, JOINT_NAMES, SimWorld, WorldConfig


def test_reset_and_step_shapes_and_dtypes(world):
    obs = world.reset("push", 0)
    for o in (obs, world.step(np.array([0.1, 0.0, 0.0, 0.0]))):
        assert o.image.shape == (64, 64, 3) and o.image.dtype == np.uint8
        assert o.ee_position.shape == (3,) and o.ee_position.dtype == np.float64
        assert isinstance(o.gripper, float) and 0.0 <= o.gripper <= 1.0
        assert o.joint_names == JOINT_NAMES and len(JOINT_NAMES) == 9
        assert o.joint_positions.shape == (9,) and o.joint_positions.dtype == np.float64
        assert isinstance(o.success, bool)
        assert o.state.shape == (39,) and o.state.dtype == np.float64
        np.testing.assert_array_equal(o.ee_position, o.state[:3])
        assert o.image.flags["C_CONTIGUOUS"]
    assert obs.step == 0 and o.step == 1
    assert world.task == "push" and world.seed == 0 and world.step_count == 1


def test_image_size_is_configurable():
    with SimWorld(WorldConfig(image_size=96)) as sim:
        assert sim.reset("reach", 0).image.shape == (96, 96, 3)


def test_control_rate_is_the_env_rate(world):
    world.reset("reach", 0)
    assert CONTROL_RATE_HZ == 80.0


def test_image_is_upright(world):
    """corner2 renders upside down; the world turns it: red arm upper left, wooden table below."""
    image = world.reset("reach", 0).image.astype(int)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    red = (r > 100) & (r > 2 * g) & (r > 2 * b)  # the Sawyer
    ys, xs = np.nonzero(red)
    assert red.sum() > 100
    assert xs.mean() < 32 and ys.mean() < 32  # upper left: the arm reaches in from the robot's base
    brown = (r > g) & (g > b) & (r - b > 25) & ~red  # the wooden table top
    assert brown[32:].sum() > 3 * brown[:32].sum()
    sky = image[:6].std(axis=2) < 4  # grey skybox across the top rows
    assert sky.mean() > 0.8


def test_same_task_and_seed_give_identical_bytes():
    with SimWorld() as first:
        a = first.reset("pick-place", 7)
        a_steps = [first.step(first.expert_action()).image.tobytes() for _ in range(3)]
        first.reset("reach", 1)  # something else in between
        b = first.reset("pick-place", 7)
    with SimWorld() as second:
        c = second.reset("pick-place", 7)
        c_steps = [second.step(second.expert_action()).image.tobytes() for _ in range(3)]
    assert a.image.tobytes() == b.image.tobytes() == c.image.tobytes()
    assert a_steps == c_steps
    np.testing.assert_array_equal(a.state, c.state)


def test_different_seeds_give_different_initial_states(world):
    states = [world.reset("push", seed).state for seed in range(4)]
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            assert not np.allclose(states[i], states[j])


def test_bad_actions_raise(world):
    world.reset("reach", 0)
    with pytest.raises(ValueError, match="finite"):
        world.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        world.step(np.zeros(3))


def test_actions_are_clipped(world):
    world.reset("reach", 0)
    big = world.step(np.array([50.0, 0.0, 0.0, 0.0])).state
    world.reset("reach", 0)
    one = world.step(np.array([1.0, 0.0, 0.0, 0.0])).state
    np.testing.assert_array_equal(big, one)


def test_max_steps_ends_the_episode():
    with SimWorld(WorldConfig(max_steps=5)) as sim:
        sim.reset("reach", 0)
        for _ in range(5):
            assert not sim.done
            obs = sim.step(np.zeros(4))
        assert sim.done and obs.step == 5 and not sim.succeeded
        with pytest.raises(RuntimeError, match="max_steps"):
            sim.step(np.zeros(4))
        assert sim.reset("reach", 0).step == 0 and not sim.done


def test_expert_solves_reach_and_done_latches_success(world):
    world.reset("reach", 3)
    action = world.expert_action()
    assert action.shape == (4,) and action.dtype == np.float64
    while not world.done:
        world.step(world.expert_action())
    assert world.succeeded and world.step_count < world.config.max_steps


def test_step_before_reset_raises():
    with SimWorld() as sim, pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros(4))


def test_meta_world_task_name_is_the_same_task(world):
    a = world.reset("pick-place", 7)
    b = world.reset("pick-place-v3", 7)
    assert world.task == "pick-place" and np.array_equal(a.image, b.image) and np.array_equal(a.state, b.state)


def test_unknown_task_and_bad_seed_raise(world):
    with pytest.raises(ValueError, match="'push'"):
        world.reset("psh", 0)
    with pytest.raises(ValueError, match="seed"):
        world.reset("push", -1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 4}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"domain": "cartoon"}, "domain"),
        ({"max_steps": 0}, "max_steps"),
        ({"fast_render": "yes"}, "fast_render"),
        ({"camera": ""}, "camera"),
    ],
)
def test_config_names_the_bad_value(kwargs, name):
    with pytest.raises(ValueError, match=name):
        WorldConfig(**kwargs)


def test_unknown_camera_is_named():
    with SimWorld(WorldConfig(camera="ceiling")) as sim, pytest.raises(ValueError, match="corner2"):
        sim.reset("reach", 0)


def test_tasks_in_sequence_render_non_black():
    """One env at a time: A, B, A again all render real images (an old env must not blank a new one)."""
    with SimWorld() as sim:
        for task in ("reach", "door-open", "reach", "window-close"):
            assert sim.reset(task, 0).image.mean() > 40
            assert sim.step(np.zeros(4)).image.mean() > 40


def test_a_second_world_closes_the_first_worlds_env():
    with SimWorld() as first, SimWorld() as second:
        first.reset("reach", 0)
        second.reset("push", 0)  # the process's one env is now the second world's
        with pytest.raises(RuntimeError, match="reset"):
            first.step(np.zeros(4))
        assert first.reset("reach", 0).image.mean() > 40  # reopens
        with pytest.raises(RuntimeError, match="reset"):
            second.step(np.zeros(4))


def _fps(sim: SimWorld, frames: int = 100) -> float:
    sim.reset("pick-place", 0)
    sim.render()
    start = time.perf_counter()
    for _ in range(frames):
        sim.render()
    return frames / (time.perf_counter() - start)


def test_fast_render_changes_the_render_settings(capsys):
    with SimWorld(WorldConfig(fast_render=False)) as slow:
        slow.reset("reach", 0)
        assert slow.render_settings() == {"offsamples": 4, "shadows": 1, "reflections": 1}
        slow_fps = _fps(slow, 10)
    with SimWorld() as fast:
        fast.reset("reach", 0)
        assert fast.render_settings() == {"offsamples": 0, "shadows": 0, "reflections": 0}
        fast_fps = _fps(fast)
    with capsys.disabled():  # a figure to read, not to assert: timings flake
        print(f"\n64x64 render: default {slow_fps:.0f} FPS, fast {fast_fps:.0f} FPS")


def test_all_mt10_tasks_reset(world):
    for task in MT10_TASKS:
        obs = world.reset(task, 0)
        assert obs.image.mean() > 40 and np.all(np.isfinite(obs.state))
