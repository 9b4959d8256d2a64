"""The two visual domains of the benchmark: the robot as rendered, and a "human video" look-alike.

The robot domain is the Sawyer exactly as Meta-World renders it. The human-like domain shows the
same tasks with a visible embodiment and appearance gap, every part drawn from the episode's seed
and switchable on its own (`HumanDomainConfig`):

- hide_arm: the arm links and pedestal are hidden; only the gripper (the "hand") shows, in a skin
  tone, so the embodiment differs from the red Sawyer.
- recolour_scene: table, floor and walls lose their textures and get other colours.
- lighting: other light intensities, directions and ambient level.
- camera_jitter: the camera moves a few centimetres and turns a few degrees per episode.
- flicker: the background (a backdrop in front of the sky, and the floor) changes colour every step.
- distractor: a coloured ball drifts over the table every step.

The last two change the picture without being the action: a latent action model that reconstructs
appearance instead of motion pays for them. The distractor exists only in the rendered scene
(added to the `MjvScene` after `mjv_updateScene`), so it cannot collide with or push anything.

Everything the human domain changes in the `MjModel` is captured first by `ModelAppearance` and
restored at every reset, so a robot episode after a human one is bit-identical to a fresh one.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, fields

import mujoco
import numpy as np

__all__ = [
    "HumanDomainConfig",
    "HumanEpisode",
    "ModelAppearance",
    "hand_body_ids",
]

# Mixed into the episode seed so the appearance stream is independent of Meta-World's own
# randomisation (which uses the plain seed).
_APPEARANCE_SALT = 0x48554D41  # "HUMA"

# Skin tones (RGB, 0–1) for the "hand".
_SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.89, 0.67, 0.53],
        [0.78, 0.56, 0.42],
        [0.62, 0.43, 0.31],
        [0.45, 0.30, 0.21],
        [0.33, 0.22, 0.16],
    ]
)


@dataclass(frozen=True)
class HumanDomainConfig:
    """Which parts of the human-like appearance gap are on (all by default)."""

    hide_arm: bool = True
    recolour_scene: bool = True
    lighting: bool = True
    camera_jitter: bool = True
    flicker: bool = True
    distractor: bool = True
    # Camera jitter bounds: translation in metres, rotation in degrees (about a random axis).
    jitter_translation_m: float = 0.03
    jitter_rotation_deg: float = 3.0
    # Flicker: each background colour channel is scaled by 1 ± up to this fraction, anew every step.
    flicker_amplitude: float = 0.35
    distractor_radius_m: float = 0.035

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"HumanDomainConfig.{field.name} must be a bool, got {value!r}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"HumanDomainConfig.{field.name} must be a number >= 0, got {value!r}")
        if self.flicker_amplitude >= 1:
            raise ValueError(f"HumanDomainConfig.flicker_amplitude must be < 1, got {self.flicker_amplitude}")

    @classmethod
    def only(cls, *switches: str) -> HumanDomainConfig:
        """A config with only the named switches on, e.g. `HumanDomainConfig.only("flicker")`."""
        names = ("hide_arm", "recolour_scene", "lighting", "camera_jitter", "flicker", "distractor")
        unknown = [s for s in switches if s not in names]
        if unknown:
            raise ValueError(f"unknown switch(es) {unknown}; valid: {', '.join(names)}")
        return cls(**{name: name in switches for name in names})


class ModelAppearance:
    """A copy of every `MjModel` field that a domain may change, to put back exactly later."""

    _ARRAYS = (
        "geom_rgba", "geom_matid", "site_rgba", "mat_rgba", "mat_texid", "mat_emission", "mat_specular",
        "light_diffuse", "light_ambient", "light_specular", "light_pos", "light_dir",
        "cam_pos", "cam_quat",
    )  # fmt: skip
    _HEADLIGHT = ("ambient", "diffuse", "specular")

    def __init__(self, model: mujoco.MjModel) -> None:
        self._arrays = {name: getattr(model, name).copy() for name in self._ARRAYS}
        self._headlight = {name: getattr(model.vis.headlight, name).copy() for name in self._HEADLIGHT}

    def restore(self, model: mujoco.MjModel) -> None:
        """Write the captured values back into `model` (the same model or an identical one)."""
        for name, value in self._arrays.items():
            np.copyto(getattr(model, name), value)
        for name, value in self._headlight.items():
            setattr(model.vis.headlight, name, value)


def _subtree(model: mujoco.MjModel, root: int) -> set[int]:
    """Body ids of `root` and all its descendants."""
    bodies = {root}
    for body in range(root + 1, model.nbody):  # children always have larger ids than parents
        if int(model.body_parentid[body]) in bodies:
            bodies.add(body)
    return bodies


def hand_body_ids(model: mujoco.MjModel) -> set[int]:
    """The gripper's bodies: its mount ("right_hand"), the "hand" body, fingers and pads."""
    return _subtree(model, model.body("right_hand").id)


def _arm_body_ids(model: mujoco.MjModel) -> set[int]:
    """Bodies of the robot (pedestal, arm links, head) that are not part of the gripper."""
    return _subtree(model, model.body("base").id) - hand_body_ids(model)


def _arm_geom_ids(model: mujoco.MjModel) -> np.ndarray:
    arm = _arm_body_ids(model)
    return np.array([g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in arm], dtype=int)


def _arm_site_ids(model: mujoco.MjModel) -> np.ndarray:
    arm = _arm_body_ids(model)
    return np.array([s for s in range(model.nsite) if int(model.site_bodyid[s]) in arm], dtype=int)


def _hand_geom_ids(model: mujoco.MjModel) -> np.ndarray:
    hand = hand_body_ids(model)
    return np.array([g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in hand], dtype=int)


def _geoms_of_bodies(model: mujoco.MjModel, names: Sequence[str]) -> np.ndarray:
    ids = set()
    for name in names:
        try:
            ids.add(model.body(name).id)
        except KeyError:  # not every task's scene has every body
            continue
    return np.array([g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in ids], dtype=int)


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]):
    hue = rng.uniform(0.0, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value)))


def _set_geom_colour(model: mujoco.MjModel, geoms: np.ndarray, rgb: np.ndarray) -> None:
    """Plain colour for `geoms`: their material (and texture) is dropped, visible geoms only."""
    for g in geoms:
        if model.geom_rgba[g, 3] == 0 and model.geom_matid[g] < 0:
            continue  # invisible on purpose (collision helpers): keep it so
        model.geom_matid[g] = -1
        model.geom_rgba[g, :3] = rgb
        model.geom_rgba[g, 3] = 1.0


def _quat_from_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, axis / np.linalg.norm(axis), angle)
    return quat


class HumanEpisode:
    """The human-like appearance of one episode: applied to the model at reset, animated per step.

    Everything is drawn from `seed`, so the same seed gives the same look and the same flicker and
    distractor trajectory. Call `ModelAppearance.restore` before applying a new episode, and
    `mujoco.mj_camlight` before rendering (the camera and lights move in the model).
    """

    def __init__(self, model: mujoco.MjModel, camera_id: int, config: HumanDomainConfig, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, _APPEARANCE_SALT])
        # Draw every random quantity in a fixed order, whatever the switches: turning one switch
        # off must not change what the others look like.
        skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
        table = _random_colour(rng, (0.2, 0.8), (0.35, 0.95))
        floor = _random_colour(rng, (0.1, 0.7), (0.25, 0.9))
        walls = _random_colour(rng, (0.1, 0.8), (0.3, 0.95))
        sky = _random_colour(rng, (0.1, 0.6), (0.3, 0.9))
        light_gain = rng.uniform(0.6, 1.8, size=model.nlight)
        light_tint = rng.uniform(0.8, 1.0, size=3)
        light_turn = rng.normal(size=(model.nlight, 3)) * 0.35
        ambient = rng.uniform(0.15, 0.5)
        jitter_shift = rng.uniform(-1.0, 1.0, size=3) * config.jitter_translation_m
        jitter_axis = rng.normal(size=3)
        jitter_angle = np.deg2rad(rng.uniform(-1.0, 1.0) * config.jitter_rotation_deg)
        self._distractor_rgb = _random_colour(rng, (0.7, 1.0), (0.7, 1.0))
        # A Lissajous path over the table, above the objects (table top at z = 0).
        self._path_centre = np.array([rng.uniform(-0.15, 0.15), rng.uniform(0.55, 0.75), rng.uniform(0.1, 0.2)])
        self._path_amplitude = np.array([rng.uniform(0.15, 0.3), rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.08)])
        self._path_rate = rng.uniform(0.03, 0.08, size=3)  # radians per step: ~1-2 cm per step
        self._path_phase = rng.uniform(0.0, 2 * np.pi, size=3)
        self._flicker_seed = int(rng.integers(2**31))

        self._floor = model.geom("floor").id
        if config.hide_arm:
            arm = _arm_geom_ids(model)
            model.geom_rgba[arm, 3] = 0.0  # MuJoCo skips alpha-0 geoms without a material
            model.geom_matid[arm] = -1
            model.site_rgba[_arm_site_ids(model), 3] = 0.0  # the arm's marker dots too
            _set_geom_colour(model, _hand_geom_ids(model), skin)
        if config.recolour_scene:
            _set_geom_colour(model, _geoms_of_bodies(model, ["tablelink"]), table)
            _set_geom_colour(model, _geoms_of_bodies(model, ["RetainingWall"]), walls)
            _set_geom_colour(model, np.array([self._floor]), floor)
        if config.lighting:
            model.light_diffuse[:] = np.clip(model.light_diffuse * light_gain[:, None] * light_tint, 0.0, 1.0)
            turned = model.light_dir + light_turn
            model.light_dir[:] = turned / np.linalg.norm(turned, axis=1, keepdims=True)
            model.vis.headlight.ambient = np.full(3, ambient)
            model.vis.headlight.diffuse = np.full(3, 0.6 - ambient / 2)
        if config.camera_jitter:
            model.cam_pos[camera_id] += jitter_shift
            turn = _quat_from_axis_angle(jitter_axis, jitter_angle)
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, turn, model.cam_quat[camera_id].copy())
            model.cam_quat[camera_id] = quat
        # The background: a backdrop in front of the grey skybox (recoloured, or sky grey so the
        # flicker has a colour to modulate), and the floor around the table.
        self._backdrop = config.recolour_scene or config.flicker
        self._sky_rgb = sky if config.recolour_scene else np.full(3, 0.45)
        self._floor_mat = int(model.geom_matid[self._floor])
        if self._floor_mat >= 0:  # still textured (recolouring off): the flicker tints the texture
            self._floor_rgb = np.full(3, 0.8)
        else:
            self._floor_rgb = model.geom_rgba[self._floor, :3].copy()

    def distractor_position(self, step: int) -> np.ndarray:
        """World position (m) of the distractor ball at `step` (a smooth Lissajous path over the table)."""
        return self._path_centre + self._path_amplitude * np.sin(self._path_rate * step + self._path_phase)

    def _flicker_gain(self, step: int) -> np.ndarray:
        """Per-channel colour gain of the background at `step` (1 when flicker is off)."""
        if not self.config.flicker:
            return np.ones(3)
        noise = np.random.default_rng([self._flicker_seed, step]).uniform(-1.0, 1.0, 3)
        return 1.0 + self.config.flicker_amplitude * noise

    def before_render(self, model: mujoco.MjModel, step: int) -> None:
        """Per-step model changes: the floor's colour flicker."""
        if not self.config.flicker:
            return
        colour = np.clip(self._floor_rgb * self._flicker_gain(step), 0.0, 1.0)
        if self._floor_mat >= 0:
            model.mat_rgba[self._floor_mat, :3] = colour
        else:
            model.geom_rgba[self._floor, :3] = colour

    def decorate(self, scene: mujoco.MjvScene, step: int) -> None:
        """Per-step scene additions, visual only (never in the physics): backdrop and distractor ball."""
        if self._backdrop:
            # A large thin box facing the camera 6 m away, in front of the skybox.
            cam = scene.camera[0]
            forward, up = np.array(cam.forward), np.array(cam.up)
            right = np.cross(forward, up)
            frame = np.column_stack([right, up, -forward])  # box z axis towards the camera
            rgb = np.clip(self._sky_rgb * self._flicker_gain(step), 0.0, 1.0)
            _add_scene_geom(scene, mujoco.mjtGeom.mjGEOM_BOX, np.array([10.0, 10.0, 0.01]),
                            np.array(cam.pos) + 6.0 * forward, frame, rgb, emission=0.6)
        if self.config.distractor:
            radius = self.config.distractor_radius_m
            _add_scene_geom(scene, mujoco.mjtGeom.mjGEOM_SPHERE, np.full(3, radius),
                            self.distractor_position(step), np.eye(3), self._distractor_rgb)


def _add_scene_geom(scene: mujoco.MjvScene, kind: int, size: np.ndarray, pos: np.ndarray, frame: np.ndarray,
                    rgb: np.ndarray, emission: float = 0.0) -> None:
    """Append a decorative geom to `scene` (rendered, but not part of the model or the physics)."""
    if scene.ngeom >= scene.maxgeom:
        return
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, type=kind, size=size, pos=pos, mat=frame.flatten(),
                        rgba=np.append(rgb, 1.0).astype(np.float32))
    geom.emission = emission
    scene.ngeom += 1
