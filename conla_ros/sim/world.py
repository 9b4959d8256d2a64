"""The simulated arm: Meta-World v3 (MuJoCo) MT10 tasks behind a small reset/step interface.

`SimWorld` owns one Meta-World env at a time and renders the `corner2` camera itself with a
`mujoco.Renderer` (not gymnasium's viewer), which lets it turn off what costs most on a CPU
renderer: offscreen multisampling (`model.vis.quality.offsamples = 0`), shadows and reflections
(`MjvScene.flags`). At 64×64 on one core that is ~140-220 frames per second against ~10-13 with
the defaults.

Camera: `corner2` at the position the Meta-World community uses (`CAMERA_POSITIONS`), so the
workspace fills the frame. The camera is rolled by ~180° (its image "up" points down in the
world), so the image is turned half a turn; flipping only the rows would leave it mirrored.

Seeding: Meta-World v3 randomises object and goal positions through `_get_state_rand_vec`; with
`seeded_rand_vec = True` and `_freeze_rand_vec = False` it draws them from the env's own
`np_random`, which `env.seed(seed)` re-creates. So `reset(task, seed)` seeds and resets, and the
same (task, seed) gives the same state and the same image bytes in any world, fresh or reused,
in any process. The goal is observable (`partially_observable = False`, as in Meta-World's MT
benchmarks), because the scripted expert policies read it from the state vector. The env is built
directly from its class, so gymnasium's passive env checker never wraps it.

One env per process: when a world opens an env (a new task), any env open in the process
(this world's or another's) is closed first, and the last one is closed at exit, before MuJoCo
terminates EGL. Envs left to the garbage collector in the wrong order render black frames (with
gymnasium's viewer) and print EGL errors at shutdown.
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Literal

import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import ENV_POLICY_MAP
from metaworld.sawyer_xyz_env import SawyerXYZEnv

from conla_ros.sim.domains import HumanDomainConfig, HumanEpisode, ModelAppearance
from conla_ros.sim.instructions import check_task

__all__ = ["CAMERA_POSITIONS", "CONTROL_RATE_HZ", "JOINT_NAMES", "Observation", "SimWorld", "WorldConfig"]

# Meta-World applies one action per frame_skip (5) physics steps of 2.5 ms: 12.5 ms, 80 Hz.
# gymnasium's MujocoEnv asserts render_fps == round(1 / dt), so this is the env's own rate;
# SimWorld checks it against env.dt when it opens an env.
CONTROL_RATE_HZ: float = float(SawyerXYZEnv.metadata["render_fps"])

# The Sawyer's 7 arm joints, then the two gripper finger slides (metres, from the open stop).
JOINT_NAMES: tuple[str, ...] = (
    "right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6",
    "r_close", "l_close",
)  # fmt: skip

# The camera position the Meta-World community uses for corner2 (TD-MPC, Diffusion Policy and
# most VLA evaluations): Meta-World's own puts the table in a quarter of the image, ~20 pixels
# across at 64×64; this one fills the frame with the workspace. Same orientation.
CAMERA_POSITIONS: dict[str, tuple[float, float, float]] = {"corner2": (0.75, 0.075, 0.7)}

_META_WORLD_HORIZON = 500  # Meta-World's max_path_length: its step() refuses to go beyond


@dataclass(frozen=True)
class WorldConfig:
    """How the simulated arm is rendered and how long an episode may last."""

    image_size: int = 64  # square camera image, pixels
    domain: Literal["robot", "human"] = "robot"
    # Episode limit in control steps (80 Hz). 200 gives the scripted expert room on every MT10 task
    # (successes take 40-100 steps, up to ~160 on peg-insert-side); Meta-World's own is 500.
    max_steps: int = 200
    fast_render: bool = True  # no multisampling, shadows or reflections (~15× faster on CPU)
    camera: str = "corner2"
    human: HumanDomainConfig = field(default_factory=HumanDomainConfig)  # used when domain == "human"

    def __post_init__(self) -> None:
        size = self.image_size
        if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 2048:
            raise ValueError(f"WorldConfig.image_size must be an int in [8, 2048], got {self.image_size!r}")
        if self.domain not in ("robot", "human"):
            raise ValueError(f"WorldConfig.domain must be 'robot' or 'human', got {self.domain!r}")
        if not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or self.max_steps < 1:
            raise ValueError(f"WorldConfig.max_steps must be a positive int, got {self.max_steps!r}")
        if not isinstance(self.fast_render, bool):
            raise ValueError(f"WorldConfig.fast_render must be a bool, got {self.fast_render!r}")
        if not isinstance(self.camera, str) or not self.camera:
            raise ValueError(f"WorldConfig.camera must be a camera name, got {self.camera!r}")
        if not isinstance(self.human, HumanDomainConfig):
            raise ValueError(f"WorldConfig.human must be a HumanDomainConfig, got {self.human!r}")


@dataclass(frozen=True)
class Observation:
    """What the world shows after a reset or a step.

    `gripper` is Meta-World's gripper opening: the distance between the two fingers divided by
    0.1 m, clipped to [0, 1] (0 closed, 1 fully open). `ee_position` is the hand body's position
    in metres, world frame (the same as `state[:3]`). `state` is Meta-World's 39-vector (hand,
    gripper, objects, previous frame, goal): privileged, for the scripted expert only.
    """

    image: np.ndarray  # (S, S, 3) uint8 RGB, upright
    ee_position: np.ndarray  # (3,) float64, m
    gripper: float  # [0, 1]
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # (9,) float64: 7 arm joints (rad), 2 finger slides (m)
    success: bool  # Meta-World's success flag for this step
    step: int  # control steps since reset
    state: np.ndarray  # (39,) float64, privileged


class SimWorld:
    """Meta-World MT10 tasks with a camera, proprioception, success and the scripted expert.

    Use as a context manager (or call `close()`); `reset(task, seed)` before stepping.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        self._env: SawyerXYZEnv | None = None
        self._env_task: str | None = None
        self._renderer: mujoco.Renderer | None = None
        self._pristine: ModelAppearance | None = None
        self._camera_id = -1
        self._upside_down = False
        self._joint_qpos: np.ndarray | None = None
        self._expert = None
        self._task: str | None = None
        self._seed: int | None = None
        self._step = 0
        self._succeeded = False
        self._state: np.ndarray | None = None
        self._appearance: HumanEpisode | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> SimWorld:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the env and its GL context; the world can be reset again afterwards."""
        global _open_world
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None
        self._env_task = None
        self._task = None
        if _open_world is not None and _open_world() is self:
            _open_world = None

    def _open(self, task: str) -> None:
        """Make the env of `task`, closing whatever env this process has open first."""
        global _open_world
        _close_open_world()
        self.close()
        env = ALL_V3_ENVIRONMENTS[f"{task}-v3"]()
        if abs(1.0 / env.dt - CONTROL_RATE_HZ) > 1e-6:
            raise RuntimeError(f"Meta-World's control rate changed: {1 / env.dt} Hz, expected {CONTROL_RATE_HZ}")
        # Goal observable (the expert reads it) and object/goal positions drawn from env.np_random.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # a cached_property sized for the above
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = max(_META_WORLD_HORIZON, self.config.max_steps)
        model = env.model
        try:
            self._camera_id = model.camera(self.config.camera).id
        except KeyError:
            names = [model.camera(i).name for i in range(model.ncam)]
            env.close()
            raise ValueError(f"unknown camera {self.config.camera!r}; cameras: {', '.join(names)}") from None
        if self.config.camera in CAMERA_POSITIONS:
            model.cam_pos[self._camera_id] = CAMERA_POSITIONS[self.config.camera]
        # A camera whose image "up" points down in the world (corner2: rolled ~180°) is turned.
        frame = np.zeros(9)
        mujoco.mju_quat2Mat(frame, model.cam_quat[self._camera_id])
        self._upside_down = bool(frame.reshape(3, 3)[2, 1] < 0)
        size = self.config.image_size
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        if self.config.fast_render:
            model.vis.quality.offsamples = 0  # read when the GL context is made: set it before
        try:
            self._renderer = mujoco.Renderer(model, height=size, width=size)
        except mujoco.FatalError as error:
            env.close()
            raise RuntimeError(
                f"MuJoCo could not make an offscreen GL context ({error}). Set MUJOCO_GL=egl (or osmesa) "
                f"before mujoco is first imported; importing any conla_ros.sim module first does it "
                f"(MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r} now)."
            ) from error
        _close_at_exit()
        if self.config.fast_render:
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._pristine = ModelAppearance(model)
        self._joint_qpos = np.array([model.jnt_qposadr[model.joint(n).id] for n in JOINT_NAMES])
        self._expert = ENV_POLICY_MAP[f"{task}-v3"]()
        self._env = env
        self._env_task = task
        _open_world = weakref.ref(self)

    # --- episode ------------------------------------------------------------------------------

    def reset(self, task: str, seed: int, *, domain: Literal["robot", "human"] | None = None) -> Observation:
        """Start an episode of `task` whose objects, goal (and human-domain look) come from `seed`.

        `domain` overrides `config.domain` for this episode, so one world can render the same
        scene in both domains (paired data); by default the config's domain is used.
        """
        task = check_task(task)  # `reach-v3` → `reach`
        domain = self.config.domain if domain is None else domain
        if domain not in ("robot", "human"):
            raise ValueError(f"domain must be 'robot' or 'human', got {domain!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if self._env is None or self._env_task != task:
            self._open(task)
        env = self._env
        assert env is not None and self._pristine is not None
        self._pristine.restore(env.model)  # undo the previous episode's human look, if any
        env.seed(int(seed))
        state, _ = env.reset()
        self._task, self._seed = task, int(seed)
        self._step, self._succeeded = 0, False
        self._appearance = None
        if domain == "human":
            self._appearance = HumanEpisode(env.model, self._camera_id, self.config.human, int(seed))
        return self._observe(state, success=False)

    def step(self, action: np.ndarray) -> Observation:
        """Apply one action (dx, dy, dz, gripper), each clipped to [-1, 1]; gripper > 0 closes."""
        if self._env is None or self._task is None:
            raise RuntimeError("call reset(task, seed) before step() (or the env was closed)")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,) (dx, dy, dz, gripper), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        if self._step >= self.config.max_steps:
            raise RuntimeError(f"the episode ended at max_steps={self.config.max_steps}: call reset()")
        state, _, _, _, info = self._env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        self._step += 1
        success = bool(info["success"])
        self._succeeded = self._succeeded or success
        return self._observe(state, success)

    def expert_action(self) -> np.ndarray:
        """The Meta-World scripted expert's action (4,) float64 for the current state."""
        if self._state is None or self._expert is None or self._task is None:
            raise RuntimeError("call reset(task, seed) before expert_action()")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            return np.asarray(self._expert.get_action(self._state), dtype=np.float64)

    def render(self) -> np.ndarray:
        """The camera image of the current state: (S, S, 3) uint8 RGB, upright."""
        if self._env is None or self._renderer is None:
            raise RuntimeError("no env is open: call reset(task, seed) first")
        if self._appearance is not None:
            self._appearance.before_render(self._env.model, self._step)
        renderer = self._renderer
        # Camera and light poses from the model (a human episode moves them); kinematics is current.
        mujoco.mj_camlight(self._env.model, self._env.data)
        renderer.update_scene(self._env.data, camera=self._camera_id)
        if self._appearance is not None:
            self._appearance.decorate(renderer.scene, self._step)
        image = renderer.render()
        if self._upside_down:
            # Turn half a turn (flipping only the rows, as is often done, would also mirror it).
            image = np.ascontiguousarray(image[::-1, ::-1])
        return image

    def _observe(self, state: np.ndarray, success: bool) -> Observation:
        assert self._env is not None and self._joint_qpos is not None
        self._state = np.array(state, dtype=np.float64)
        return Observation(
            image=self.render(),
            ee_position=self._state[:3].copy(),
            gripper=float(self._state[3]),
            joint_names=JOINT_NAMES,
            joint_positions=self._env.data.qpos[self._joint_qpos].astype(np.float64),
            success=success,
            step=self._step,
            state=self._state.copy(),
        )

    # --- properties ---------------------------------------------------------------------------

    @property
    def task(self) -> str | None:
        """The current episode's task (None before the first reset)."""
        return self._task

    @property
    def seed(self) -> int | None:
        """The current episode's seed (None before the first reset)."""
        return self._seed

    @property
    def step_count(self) -> int:
        """Control steps taken since the last reset."""
        return self._step

    @property
    def succeeded(self) -> bool:
        """Whether Meta-World reported success at any step of this episode."""
        return self._succeeded

    @property
    def done(self) -> bool:
        """The episode is over: success was reached, or max_steps were taken."""
        return self._succeeded or self._step >= self.config.max_steps

    @property
    def appearance(self) -> HumanEpisode | None:
        """The human-domain look of the current episode (None in the robot domain)."""
        return self._appearance

    @property
    def model(self) -> mujoco.MjModel:
        """The open env's MuJoCo model (for inspection; the world owns it)."""
        if self._env is None:
            raise RuntimeError("no env is open: call reset(task, seed) first")
        return self._env.model

    def render_settings(self) -> dict[str, int]:
        """The render settings in effect: offscreen samples, shadows and reflections (1 on, 0 off)."""
        if self._env is None or self._renderer is None:
            raise RuntimeError("no env is open: call reset(task, seed) first")
        flags = self._renderer.scene.flags
        return {
            "offsamples": int(self._env.model.vis.quality.offsamples),
            "shadows": int(flags[mujoco.mjtRndFlag.mjRND_SHADOW]),
            "reflections": int(flags[mujoco.mjtRndFlag.mjRND_REFLECTION]),
        }


# The world whose env is open in this process, if any (see the module docstring).
_open_world: weakref.ref[SimWorld] | None = None


def _close_open_world() -> None:
    world = _open_world() if _open_world is not None else None
    if world is not None:
        world.close()


_exit_hook_registered = False


def _close_at_exit() -> None:
    """Close the open env at exit, before MuJoCo's EGL module terminates the display.

    Registered after the first GL context exists: MuJoCo registers its `eglTerminate` then, and
    atexit runs handlers last-in first-out. Closing explicitly keeps EGL from printing errors
    while the interpreter tears down.
    """
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_close_open_world)
        _exit_hook_registered = True
