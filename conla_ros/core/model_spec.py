"""`model.yaml`: what an exported model directory says about itself (docs/architecture.md, "model.yaml").

An exported model is a directory `models/<name>/`:

    policy.onnx    image (1, 3, S, S) float32 [preprocessed by `preprocessing`],
                   instruction embedding (1, D) float32 [the instruction encoder's output],
                   optional proprio (1, P) float32 [robot units, in `proprio.names` order]
                   → actions (1, H, A) float32 in robot units (the graph de-normalises)
    model.yaml     this schema (`ModelSpec`), loaded with `conla_ros.core.config` (strict: an
                   unknown key names the closest valid one)
    text_encoder.onnx + tokenizer.json   the instruction encoder, or a reference to the shared
                   cache (`instruction_encoder.directory: null`) or another folder

Example (a 4-d end-effector delta + gripper policy, chunk of 8, 80 Hz; `EXAMPLE_MODEL_YAML`,
which a test loads)::

    format_version: 1
    name: mt10_conla_small
    preprocessing: {size: 64, crop_fraction: 1.0, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
                    interpolation: area}
    action_space:
      kind: ee_delta
      names: [dx, dy, dz, gripper]
      units: [cm/step, cm/step, cm/step, "1"]
      low: [-0.92, -0.95, -0.81, -1.0]       # 1st percentile of the training actions
      high: [0.97, 0.93, 0.88, 1.0]          # 99th percentile
      gripper: gripper
    chunk_length: 8
    control_rate_hz: 80.0
    execution: {replan_every: 4, temporal_ensembling: false, ensemble_decay: 0.01, blend_ticks: 3}
    proprio: null
    io:
      image: {name: image, shape: [1, 3, 64, 64], dtype: float32}
      instruction: {name: instruction_embedding, shape: [1, 384], dtype: float32}
      actions: {name: actions, shape: [1, 8, 4], dtype: float32}
      proprio: null
    instruction_encoder:
      name: all-MiniLM-L6-v2
      dim: 384
      directory: null                        # the shared cache; "." = files in this directory
      onnx_file: text_encoder.onnx
      tokenizer_file: tokenizer.json
      probe_text: pick up the red block
      probe_embedding: [-0.0509, 0.0067, -0.0588, 0.0368, 0.0364, 0.03, 0.0895, -0.0265]
    provenance:
      created: "2026-11-23T16:00:00+00:00"
      git_commit: ef83da2c0ffee
      data: [data/episodes/mt10_robot, data/videos/mt10_human]
      config: {head: chunk, chunk_length: 8, loss: l1}
      checkpoint: runs/policy/step_002000
      parity_max_abs_diff: 3.1e-06
      versions: {torch: 2.13.0, onnxruntime: 1.32.0}
    policy_file: policy.onnx

The action statistics (`low`/`high`, per dimension, the 1st/99th percentiles of the training
actions; docs/method.md stage 3) define the model's normalisation a_norm = 2 (a − low)/(high − low) − 1.
policy.onnx already outputs robot units; the statistics travel for reference, for training code
(`ActionSpace.normalize`/`denormalize` is the one transform both sides use) and for optional
clipping. Cross-field rules (tensor shapes agree with the preprocessing size, the encoder width,
the proprio size, H and A) are checked in `ModelSpec.__post_init__`, with the bad value named.

`execution` (optional) is how the chunks were meant to be executed: re-planning interval, temporal
ensembling, splice blending (`conla_ros.core.chunking.ChunkingConfig`). The policy node's
parameters override it; `conla eval sim` uses it as is; null means re-plan every half chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from conla_ros.core.chunking import ChunkingConfig
from conla_ros.core.config import ConfigError, load_config, save_config
from conla_ros.core.preprocessing import ImagePreprocessing

__all__ = [
    "EXAMPLE_MODEL_YAML",
    "FORMAT_VERSION",
    "MODEL_YAML",
    "POLICY_ONNX",
    "PROBE_TOLERANCE",
    "ActionSpace",
    "InstructionEncoderSpec",
    "ModelIO",
    "ModelLoadError",
    "ModelSpec",
    "ProprioSpec",
    "Provenance",
    "TensorSpec",
    "load_model_spec",
    "save_model_spec",
]

FORMAT_VERSION = 1
MODEL_YAML = "model.yaml"
POLICY_ONNX = "policy.onnx"
EXAMPLE_MODEL_YAML = __doc__.split("which a test loads)::\n\n", 1)[1].split("\n\n", 1)[0]
PROBE_TOLERANCE = 1e-3  # fp32 exports of one encoder agree to ~1e-6; another encoder differs by ~1e-1
_NORM_EPS = 1e-8  # a constant dimension (high == low) normalises to −1 instead of dividing by zero


class ModelLoadError(ValueError):
    """A model directory that cannot be used; the message names the file and the field."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{what} must be a non-empty list of names, got {value!r}")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what} must hold non-empty strings, got {list(value)!r}")
    if len(set(value)) != len(value):
        dupes = sorted({v for v in value if list(value).count(v) > 1})
        raise ValueError(f"{what} must be unique, got duplicates {dupes}")
    return tuple(value)


def _floats(value: object, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"{what} must be {n} numbers (one per dimension), got {value!r}")
    if not all(_is_number(v) and math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be finite numbers, got {list(value)!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX input or output: name, shape (ints; a str names a dynamic axis), element type."""

    name: str
    shape: tuple[int | str, ...]
    dtype: Literal["float32"] = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.shape, (tuple, list)) or not self.shape:
            raise ValueError(f"shape must be a non-empty list, got {self.shape!r}")
        for dim in self.shape:
            ok = (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0) or (isinstance(dim, str) and dim)
            if not ok:
                raise ValueError(f"shape of {self.name!r} must hold positive ints or axis names, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype != "float32":
            raise ValueError(f"dtype of {self.name!r} must be 'float32', got {self.dtype!r}")

    def fixed(self, axis: int) -> int | None:
        """The size of `axis` when it is fixed, else None."""
        dim = self.shape[axis]
        return dim if isinstance(dim, int) else None


@dataclass(frozen=True)
class ActionSpace:
    """The action vector: one entry per dimension, in robot units.

    Attributes:
        kind: what the vector commands: 'ee_delta' (end-effector displacement per step, MoveIt
            Servo convention, + gripper), 'joint_position' or 'joint_velocity'.
        names: dimension names, e.g. (dx, dy, dz, gripper) or the joint names.
        units: one unit string per dimension (free text: 'cm/step', 'rad', '1').
        low, high: the normalisation statistics: 1st and 99th percentile of the training actions
            per dimension (high ≥ low; equal for a dimension that never changed).
        gripper: the name of the gripper dimension (−1 open … +1 closed), or None.
    """

    kind: Literal["ee_delta", "joint_position", "joint_velocity"]
    names: tuple[str, ...]
    units: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    gripper: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ee_delta", "joint_position", "joint_velocity"):
            raise ValueError(f"kind must be 'ee_delta', 'joint_position' or 'joint_velocity', got {self.kind!r}")
        names = _names(self.names, "names")
        object.__setattr__(self, "names", names)
        n = len(names)
        if not isinstance(self.units, (tuple, list)) or len(self.units) != n or not all(
                isinstance(u, str) for u in self.units):
            raise ValueError(f"units must be {n} strings (one per name in {list(names)}), got {self.units!r}")
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "low", _floats(self.low, n, "low"))
        object.__setattr__(self, "high", _floats(self.high, n, "high"))
        for name, lo, hi in zip(names, self.low, self.high, strict=True):
            if hi < lo:
                raise ValueError(f"high must be >= low in every dimension, got {name!r}: low {lo} > high {hi}")
        if self.gripper is not None and self.gripper not in names:
            raise ValueError(f"gripper must be one of names {list(names)} or null, got {self.gripper!r}")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def gripper_index(self) -> int | None:
        return None if self.gripper is None else self.names.index(self.gripper)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Robot units → [−1, 1] at the 1st/99th percentiles (float64; values beyond are not clipped)."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        return 2.0 * (np.asarray(actions, dtype=np.float64) - low) / np.maximum(high - low, _NORM_EPS) - 1.0

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        """[−1, 1] → robot units (float64); the inverse of `normalize`."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        return (np.asarray(normalized, dtype=np.float64) + 1.0) / 2.0 * np.maximum(high - low, _NORM_EPS) + low

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """Clip to [low, high] per dimension (float64). Note: 2 % of training actions lie outside."""
        return np.clip(np.asarray(actions, dtype=np.float64), self.low, self.high)


@dataclass(frozen=True)
class ProprioSpec:
    """The optional proprioception input: joint names (as /joint_states names them), in input order."""

    names: tuple[str, ...]
    dim: int
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = _names(self.names, "names")
        object.__setattr__(self, "names", names)
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim != len(names):
            raise ValueError(f"dim must equal the number of names ({len(names)}), got {self.dim!r}")
        if self.units and (len(self.units) != len(names) or not all(isinstance(u, str) for u in self.units)):
            raise ValueError(f"units must be empty or {len(names)} strings, got {self.units!r}")
        object.__setattr__(self, "units", tuple(self.units))


@dataclass(frozen=True)
class ModelIO:
    """policy.onnx's tensors. Shapes: image (1, 3, S, S), instruction (1, D), proprio (1, P), actions (1, H, A)."""

    image: TensorSpec = TensorSpec("image", (1, 3, 64, 64))
    instruction: TensorSpec = TensorSpec("instruction_embedding", (1, 384))
    actions: TensorSpec = TensorSpec("actions", (1, 8, 4))
    proprio: TensorSpec | None = None

    def __post_init__(self) -> None:
        ranks = {"image": 4, "instruction": 2, "actions": 3, "proprio": 2}
        names: list[str] = []
        for key, rank in ranks.items():
            spec = getattr(self, key)
            if spec is None:
                continue
            if len(spec.shape) != rank:
                raise ValueError(f"{key}.shape must have {rank} axes, got {list(spec.shape)}")
            names.append(spec.name)
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names must be distinct, got {names}")

    def inputs(self) -> dict[str, TensorSpec]:
        """The input tensors by role ('image', 'instruction', 'proprio' when present)."""
        out = {"image": self.image, "instruction": self.instruction}
        if self.proprio is not None:
            out["proprio"] = self.proprio
        return out


@dataclass(frozen=True)
class InstructionEncoderSpec:
    """Where the instruction encoder lives and what it outputs.

    Attributes:
        name: the encoder (cache folder name), 'all-MiniLM-L6-v2'.
        dim: embedding width.
        directory: folder holding the two files: null → the shared cache
            (`conla_ros.core.instruction_encoder.text_encoder_dir(name)`), '.' → the model
            directory itself, a relative path → relative to the model directory, or absolute.
        onnx_file, tokenizer_file: file names inside that folder.
        probe_text, probe_embedding: optional fingerprint: the first values of the embedding of
            `probe_text` that the model was trained with. Checked at load (abs tolerance
            `PROBE_TOLERANCE`), so a different encoder in the cache fails loudly instead of
            feeding the policy embeddings it has never seen.
    """

    name: str = "all-MiniLM-L6-v2"
    dim: int = 384
    directory: str | None = None
    onnx_file: str = "text_encoder.onnx"
    tokenizer_file: str = "tokenizer.json"
    probe_text: str | None = None
    probe_embedding: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive int, got {self.dim!r}")
        if self.directory is not None and (not isinstance(self.directory, str) or not self.directory):
            raise ValueError(f"directory must be a non-empty path or null, got {self.directory!r}")
        for key in ("onnx_file", "tokenizer_file"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value or "/" in value:
                raise ValueError(f"{key} must be a file name, got {value!r}")
        if self.probe_text is not None and (not isinstance(self.probe_text, str) or not self.probe_text.strip()):
            raise ValueError(f"probe_text must be a non-empty str or null, got {self.probe_text!r}")
        probe = tuple(self.probe_embedding)
        if (self.probe_text is None) != (not probe):
            raise ValueError("probe_text and probe_embedding must be both set or both empty")
        if probe:
            object.__setattr__(self, "probe_embedding", _floats(probe, len(probe), "probe_embedding"))
            if len(probe) > self.dim:
                raise ValueError(f"probe_embedding has {len(probe)} values, more than dim {self.dim}")

    def resolve(self, model_dir: str | Path) -> Path:
        """The folder that holds the encoder files, for a model in `model_dir`."""
        if self.directory is None:
            from conla_ros.core.instruction_encoder import text_encoder_dir

            return text_encoder_dir(self.name)
        path = Path(self.directory).expanduser()
        return path if path.is_absolute() else Path(model_dir) / path


@dataclass(frozen=True)
class Provenance:
    """Where the model came from: training data, the training config, code version, time of export."""

    created: str  # ISO 8601, e.g. 2026-11-23T16:00:00+00:00
    git_commit: str | None = None
    data: tuple[str, ...] = ()  # datasets (folders, or names) the model was trained on
    config: dict[str, Any] = field(default_factory=dict)  # the training config, verbatim
    checkpoint: str | None = None
    parity_max_abs_diff: float | None = None  # onnxruntime vs torch at export
    versions: dict[str, str] = field(default_factory=dict)
    # The stages behind the checkpoint, newest first (policy, vla, labels, lam), from their run folders.
    lineage: tuple[dict[str, Any], ...] = ()
    recipe: tuple[str, ...] = ()  # the commands that made the data and the model, as the user gave them

    def __post_init__(self) -> None:
        try:
            datetime.fromisoformat(str(self.created))
        except ValueError:
            raise ValueError(f"created must be an ISO 8601 date-time, got {self.created!r}") from None
        object.__setattr__(self, "data", tuple(self.data))
        object.__setattr__(self, "lineage", tuple(self.lineage))
        object.__setattr__(self, "recipe", tuple(self.recipe))
        if self.parity_max_abs_diff is not None and not (
                _is_number(self.parity_max_abs_diff) and self.parity_max_abs_diff >= 0):
            raise ValueError(f"parity_max_abs_diff must be a number >= 0 or null, got {self.parity_max_abs_diff!r}")

    def __hash__(self) -> int:  # the config dict would make the generated hash fail
        return hash((self.created, self.git_commit, self.data, self.checkpoint))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """model.yaml. See the module docstring for the file and an example."""

    format_version: int = FORMAT_VERSION
    name: str
    preprocessing: ImagePreprocessing
    action_space: ActionSpace
    chunk_length: int  # H: actions per chunk
    control_rate_hz: float  # the rate the chunk's steps were recorded at (one action per tick)
    io: ModelIO
    execution: ChunkingConfig | None = None  # how chunks become ticks; null: re-plan every half chunk
    instruction_encoder: InstructionEncoderSpec = InstructionEncoderSpec()
    proprio: ProprioSpec | None = None
    provenance: Provenance
    policy_file: str = POLICY_ONNX

    def __post_init__(self) -> None:
        if isinstance(self.format_version, bool) or not isinstance(self.format_version, int):
            raise ValueError(f"format_version must be an int, got {self.format_version!r}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not supported by this runtime "
                             f"(it reads format_version {FORMAT_VERSION})")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        if isinstance(self.chunk_length, bool) or not isinstance(self.chunk_length, int) or self.chunk_length < 1:
            raise ValueError(f"chunk_length must be an int >= 1, got {self.chunk_length!r}")
        if not _is_number(self.control_rate_hz) or not math.isfinite(self.control_rate_hz) or \
                self.control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be a number > 0, got {self.control_rate_hz!r}")
        object.__setattr__(self, "control_rate_hz", float(self.control_rate_hz))
        if not isinstance(self.policy_file, str) or not self.policy_file or "/" in self.policy_file:
            raise ValueError(f"policy_file must be a file name, got {self.policy_file!r}")
        if self.execution is not None and self.execution.replan_every > self.chunk_length:
            raise ValueError(f"execution.replan_every={self.execution.replan_every} must be <= chunk_length "
                             f"{self.chunk_length}")
        self._check_shapes()

    def _check_shapes(self) -> None:
        io, size = self.io, self.preprocessing.size
        expected = {
            "image": (io.image, (None, 3, size, size), "preprocessing.size"),
            "instruction": (io.instruction, (None, self.instruction_encoder.dim), "instruction_encoder.dim"),
            "actions": (io.actions, (None, self.chunk_length, self.action_space.dim),
                        "chunk_length and action_space.names"),
        }
        if (io.proprio is None) != (self.proprio is None):
            raise ValueError(f"io.proprio ({'set' if io.proprio else 'null'}) and proprio "
                             f"({'set' if self.proprio else 'null'}) must be both set or both null")
        if self.proprio is not None and io.proprio is not None:
            expected["proprio"] = (io.proprio, (None, self.proprio.dim), "proprio.dim")
        for key, (spec, shape, source) in expected.items():
            batch = spec.shape[0]
            if isinstance(batch, int) and batch != 1:
                raise ValueError(f"io.{key}.shape: batch axis must be 1 or a name, got {list(spec.shape)}")
            for axis, want in enumerate(shape):
                if want is not None and spec.shape[axis] != want:
                    want_shape = ["batch" if w is None else w for w in shape]
                    raise ValueError(f"io.{key}.shape is {list(spec.shape)}, but {source} implies {want_shape}")

    @property
    def action_dim(self) -> int:
        return self.action_space.dim

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz


def load_model_spec(model_dir: str | Path) -> ModelSpec:
    """Read `model_dir/model.yaml`; raises `ModelLoadError` naming the file and field."""
    path = Path(model_dir) / MODEL_YAML
    if not Path(model_dir).is_dir():
        what = "is not a directory" if Path(model_dir).exists() else "model directory not found"
        raise ModelLoadError(f"{model_dir}: {what}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found (every model directory needs {MODEL_YAML})")
    try:
        return load_config(ModelSpec, path)
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from exc


def save_model_spec(spec: ModelSpec, model_dir: str | Path) -> Path:
    """Write `model_dir/model.yaml` atomically; returns its path."""
    path = Path(model_dir) / MODEL_YAML
    save_config(spec, path)
    return path
