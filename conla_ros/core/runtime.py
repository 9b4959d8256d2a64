"""The ONNX policy at run time: a model directory → `infer(obs) -> dict`, with no torch.

    policy = load_policy("models/mt10_conla_small", providers="auto", threads=2)
    out = policy.infer({"image": rgb_uint8_hxwx3, "instruction": "open the drawer"})
    out["actions"]     # (H, A) float64, robot units (model.yaml action_space), action 0 = now
    out["latency_ms"]  # the whole call: preprocessing + instruction embedding (cached) + policy.onnx

This is the policy interface of `conla_ros.core.policy` (`infer(obs) -> dict`, `reset()`);
`chunking.ChunkedPolicy` stacks on it. Observation keys are the `OBS_*` constants, result keys
the `OUT_*` constants.

Loading checks everything it can, so that a bad model directory fails at load and not on the
first camera frame: the directory and each file (model.yaml, policy.onnx, the instruction
encoder's two files) exist, model.yaml is valid (`conla_ros.core.config`: unknown keys name the
closest valid key), policy.onnx parses, and its input/output names, ranks, fixed sizes and
element types agree with model.yaml `io`, the graph runs once on zero inputs and returns (1, H, A)
(`warmup`), and the instruction encoder reproduces model.yaml's probe embedding when it has one.
Every such failure raises `ModelLoadError` with the file and the model.yaml field in the message.

Execution providers (`providers=`):
    "auto"       TensorRT → CUDA → CPU, the first that onnxruntime has and that creates a session;
                 a GPU provider whose session creation fails is logged and the next one is tried.
    a list       exactly those, in that order (short names 'tensorrt', 'cuda', 'cpu' or the
                 onnxruntime names); unknown names are refused with the closest valid one, names
                 this onnxruntime build lacks are logged and skipped, and none left is an error.
The provider actually used (onnxruntime may quietly fall back) is `policy.provider`, and logged.
TensorRT engines are cached under `$CONLA_CACHE/tensorrt/<model name>/`: building one takes
minutes, and happens at load (the warm-up run), not on the first camera frame. (Untested here:
this machine has no GPU; the CPU path and the fall-back logic are tested.)
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conla_ros.core.instruction_encoder import EncoderLoadError, InstructionEncoder, cache_root
from conla_ros.core.model_spec import (
    MODEL_YAML,
    PROBE_TOLERANCE,
    ModelLoadError,
    ModelSpec,
    TensorSpec,
    load_model_spec,
)
from conla_ros.core.policy import OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO, OUT_ACTIONS, OUT_LATENCY_MS
from conla_ros.core.preprocessing import preprocess_image

__all__ = [
    "OBS_IMAGE",
    "OBS_INSTRUCTION",
    "OBS_PROPRIO",
    "OUT_ACTIONS",
    "OUT_LATENCY_MS",
    "PROVIDER_ORDER",
    "InferenceError",
    "ModelLoadError",
    "ObservationError",
    "OnnxPolicy",
    "load_policy",
    "resolve_providers",
]

LOG = logging.getLogger(__name__)

OUT_POLICY_MS = "policy_ms"  # float: policy.onnx alone
OUT_ENCODER_CACHED = "instruction_cached"  # bool: the embedding came from the cache

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ALIASES = {"tensorrt": PROVIDER_ORDER[0], "trt": PROVIDER_ORDER[0], "cuda": PROVIDER_ORDER[1],
            "cpu": PROVIDER_ORDER[2]}
_ONNX_TYPES = {"float32": "tensor(float)"}


class ObservationError(ValueError):
    """An observation the policy cannot use (missing key, wrong shape/type, non-finite proprio)."""


class InferenceError(RuntimeError):
    """policy.onnx ran but its output is unusable (wrong shape or non-finite values)."""


def resolve_providers(providers: str | Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The onnxruntime provider names to try, in order, for a `providers` setting (see the module docstring)."""
    import onnxruntime as ort

    available = list(available if available is not None else ort.get_available_providers())
    if isinstance(providers, str):
        if providers.strip().lower() != "auto":
            providers = [p for p in providers.replace(",", " ").split() if p]
        else:
            chosen = [p for p in PROVIDER_ORDER if p in available]
            return chosen or ["CPUExecutionProvider"]
    if not providers:
        raise ValueError("providers must be 'auto' or a non-empty list")
    valid = sorted({*_ALIASES, *PROVIDER_ORDER, *available})
    chosen: list[str] = []
    for raw in providers:
        name = _ALIASES.get(str(raw).strip().lower(), str(raw).strip())
        if name not in PROVIDER_ORDER and name not in available:
            close = difflib.get_close_matches(str(raw), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown execution provider {raw!r}{hint} (valid: 'auto', {', '.join(valid)})")
        if name not in available:
            LOG.warning("execution provider %s is not available in this onnxruntime build (available: %s); "
                        "skipping it", name, ", ".join(available))
            continue
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"none of the requested execution providers {list(providers)} is available "
                         f"(available: {', '.join(available)})")
    return chosen


def _provider_options(name: str, spec: ModelSpec) -> dict[str, Any]:
    if name == "TensorrtExecutionProvider":
        engine_cache = cache_root() / "tensorrt" / spec.name
        engine_cache.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_cache),
                "trt_timing_cache_enable": True}
    return {}


def _create_session(path: Path, spec: ModelSpec, candidates: list[str], threads: int | None) -> Any:
    """An InferenceSession on the first candidate provider that works (CPU appended to GPU providers)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    failures: list[str] = []
    for index, name in enumerate(candidates):
        # The providers after it take the nodes it cannot run (TensorRT → CUDA → CPU).
        chain = candidates[index:]
        try:
            session = ort.InferenceSession(str(path), sess_options=options,
                                           providers=[(p, _provider_options(p, spec)) for p in chain])
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if _is_model_error(text):
                raise ModelLoadError(f"{path}: not a valid ONNX model (model.yaml: policy_file): {text}") from exc
            failures.append(f"{name}: {text}")
            if index + 1 < len(candidates):
                LOG.warning("%s: could not create a session with %s (%s); falling back to %s",
                            path.name, name, text, candidates[index + 1])
            continue
        got = session.get_providers()[0]
        if got != name:
            LOG.warning("%s: asked for %s but onnxruntime gave %s", path.name, name, got)
        return session
    raise ModelLoadError(f"{path}: no execution provider could run it: {'; '.join(failures)}")


def _is_model_error(text: str) -> bool:
    markers = ("INVALID_PROTOBUF", "Protobuf parsing failed", "INVALID_GRAPH", "Load model from", "ModelProto")
    return any(m in text for m in markers)


def _check_tensor(path: Path, kind: str, field: str, want: TensorSpec, got: Any) -> None:
    where = f"{path}: {kind} {want.name!r} (model.yaml: {field})"
    if got.type != _ONNX_TYPES[want.dtype]:
        raise ModelLoadError(f"{where}: element type is {got.type}, model.yaml says {want.dtype}")
    shape = list(got.shape)
    if len(shape) != len(want.shape):
        raise ModelLoadError(f"{where}: shape is {shape} ({len(shape)} axes), model.yaml says {list(want.shape)}")
    for axis, (g, w) in enumerate(zip(shape, want.shape, strict=True)):
        if isinstance(g, int) and isinstance(w, int) and g != w:
            raise ModelLoadError(f"{where}: axis {axis} is {g} in the ONNX graph but {w} in model.yaml "
                                 f"(ONNX shape {shape}, model.yaml shape {list(want.shape)})")


def _check_io(path: Path, spec: ModelSpec, session: Any) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = spec.io.inputs()
    for role, tensor in expected.items():
        if tensor.name not in inputs:
            close = difflib.get_close_matches(tensor.name, list(inputs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ModelLoadError(f"{path}: has no input {tensor.name!r} (model.yaml: io.{role}.name){hint} "
                                 f"(graph inputs: {sorted(inputs)})")
        _check_tensor(path, "input", f"io.{role}", tensor, inputs[tensor.name])
    extra = sorted(set(inputs) - {t.name for t in expected.values()})
    if extra:
        raise ModelLoadError(f"{path}: graph inputs {extra} are not described in model.yaml io "
                             f"(io.proprio missing?)")
    actions = spec.io.actions
    if actions.name not in outputs:
        close = difflib.get_close_matches(actions.name, list(outputs), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelLoadError(f"{path}: has no output {actions.name!r} (model.yaml: io.actions.name){hint} "
                             f"(graph outputs: {sorted(outputs)})")
    _check_tensor(path, "output", "io.actions", actions, outputs[actions.name])


def _warm_up(path: Path, spec: ModelSpec, session: Any) -> None:
    """One run on zero inputs: the graph must run and give (1, H, A)."""
    feeds = {}
    for tensor in spec.io.inputs().values():
        shape = [1 if not isinstance(d, int) else d for d in tensor.shape]
        feeds[tensor.name] = np.zeros(shape, dtype=np.float32)
    try:
        (out,) = session.run([spec.io.actions.name], feeds)
    except Exception as exc:  # onnxruntime's own exception types
        raise ModelLoadError(f"{path}: the graph fails to run on zero inputs (model.yaml: io): {exc}") from exc
    expected = (1, spec.chunk_length, spec.action_dim)
    if tuple(np.shape(out)) != expected:
        raise ModelLoadError(f"{path}: output {spec.io.actions.name!r} has shape {list(np.shape(out))} when run, but "
                             f"model.yaml (io.actions, chunk_length, action_space) says {list(expected)}")
    if not np.isfinite(out).all():
        LOG.warning("%s: non-finite actions on zero inputs at warm-up; inference will refuse such outputs", path)


class OnnxPolicy:
    """A loaded model directory; see `load_policy`. Not thread-safe: call `infer` from one thread."""

    def __init__(self, model_dir: Path, spec: ModelSpec, session: Any, encoder: Callable[[str], np.ndarray]) -> None:
        self.model_dir = model_dir
        self.spec = spec
        self.session = session
        self.encoder = encoder
        self.provider: str = session.get_providers()[0]
        io = spec.io
        self._image_name = io.image.name
        self._instruction_name = io.instruction.name
        self._proprio_name = io.proprio.name if io.proprio is not None else None
        self._actions_name = io.actions.name
        self._expected = (spec.chunk_length, spec.action_dim)
        self.inferences = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def embed(self, instruction: str) -> np.ndarray:
        """(1, D) float32 embedding of `instruction` (the encoder caches per distinct instruction)."""
        if not isinstance(instruction, str):
            raise ObservationError(f"{OBS_INSTRUCTION} must be a str, got {type(instruction).__name__}")
        try:
            embedding = self.encoder(instruction)
        except ValueError as exc:
            raise ObservationError(f"{OBS_INSTRUCTION}: {exc}") from exc
        return np.asarray(embedding, dtype=np.float32).reshape(1, -1)

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """{'image', 'instruction'[, 'proprio']} → {'actions': (H, A) float64, 'latency_ms', ...}.

        Raises `ObservationError` for an unusable observation and `InferenceError` when the model's
        output has the wrong shape or a non-finite value (never returned as actions).
        """
        start = time.perf_counter()
        for key in (OBS_IMAGE, OBS_INSTRUCTION):
            if key not in obs:
                raise ObservationError(f"observation has no {key!r} (keys: {sorted(obs)})")
        try:
            image = preprocess_image(obs[OBS_IMAGE], self.spec.preprocessing)[None]  # (1, 3, S, S)
        except ValueError as exc:
            raise ObservationError(f"{OBS_IMAGE}: {exc}") from exc
        calls_before = getattr(self.encoder, "calls", None)
        feeds = {self._image_name: image, self._instruction_name: self.embed(obs[OBS_INSTRUCTION])}
        cached = calls_before is not None and getattr(self.encoder, "calls", None) == calls_before
        if self._proprio_name is not None:
            feeds[self._proprio_name] = self._proprio(obs.get(OBS_PROPRIO))
        policy_start = time.perf_counter()
        (raw,) = self.session.run([self._actions_name], feeds)
        policy_ms = (time.perf_counter() - policy_start) * 1e3
        raw = np.asarray(raw)
        if raw.shape != (1, *self._expected):
            raise InferenceError(f"{self.spec.policy_file}: output {self._actions_name!r} has shape {raw.shape}, "
                                 f"expected (1, {self._expected[0]}, {self._expected[1]})")
        actions = raw[0].astype(np.float64)  # (H, A)
        if not np.isfinite(actions).all():
            bad = int((~np.isfinite(actions)).sum())
            raise InferenceError(f"{self.spec.policy_file}: output {self._actions_name!r} has {bad} non-finite "
                                 f"values")
        self.inferences += 1
        return {
            OUT_ACTIONS: actions,
            OUT_LATENCY_MS: (time.perf_counter() - start) * 1e3,
            OUT_POLICY_MS: policy_ms,
            OUT_ENCODER_CACHED: cached,
        }

    def _proprio(self, value: Any) -> np.ndarray:
        assert self.spec.proprio is not None
        dim = self.spec.proprio.dim
        if value is None:
            raise ObservationError(f"observation has no {OBS_PROPRIO!r}, and this model needs {dim} values "
                                   f"({', '.join(self.spec.proprio.names)})")
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ObservationError(f"{OBS_PROPRIO}: not numeric: {exc}") from exc
        if array.size != dim:
            raise ObservationError(f"{OBS_PROPRIO}: expected {dim} values, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ObservationError(f"{OBS_PROPRIO}: non-finite values {array.ravel().tolist()}")
        return array.reshape(1, dim)

    def reset(self) -> None:
        """Nothing to reset: the policy is stateless (the embedding cache is not episode state)."""

    def info(self) -> dict[str, Any]:
        """What a diagnostics message reports about the loaded model."""
        spec = self.spec
        return {
            "model": spec.name,
            "model_dir": str(self.model_dir),
            "provider": self.provider,
            "encoder_provider": getattr(self.encoder, "provider", "external"),
            "chunk_length": spec.chunk_length,
            "action_names": list(spec.action_space.names),
            "control_rate_hz": spec.control_rate_hz,
            "git_commit": spec.provenance.git_commit,
            "created": spec.provenance.created,
        }

    def __repr__(self) -> str:
        return f"OnnxPolicy({self.spec.name!r}, provider={self.provider}, H={self._expected[0]}, A={self._expected[1]})"


def load_policy(
    model_dir: str | Path,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    *,
    encoder: Callable[[str], np.ndarray] | None = None,
    encoder_threads: int | None = 1,
    warmup: bool = True,
) -> OnnxPolicy:
    """Load and check a model directory; raises `ModelLoadError` naming the file and field.

    Args:
        model_dir: the exported model directory (policy.onnx + model.yaml + encoder or reference).
        providers: 'auto' or a list of execution providers (module docstring).
        threads: onnxruntime intra-op threads for policy.onnx (None: onnxruntime's default, one per core).
        encoder: an instruction → (D,) embedding callable to use instead of the model's encoder
            (tests; a node sharing one encoder between models).
        encoder_threads: intra-op threads of the instruction encoder (it runs once per instruction).
        warmup: run policy.onnx once on zero inputs at load, so that a graph that loads but cannot
            run (or returns the wrong shape) fails here, and the first camera frame does not pay
            for first-run allocations (or a TensorRT engine build).
    """
    model_dir = Path(model_dir)
    spec = load_model_spec(model_dir)
    yaml_path = model_dir / MODEL_YAML
    policy_path = model_dir / spec.policy_file
    if not policy_path.is_file():
        raise ModelLoadError(f"{policy_path}: file not found (model.yaml: policy_file = {spec.policy_file!r})")
    if encoder is None:
        enc = spec.instruction_encoder
        folder = enc.resolve(model_dir)
        where = ("the shared cache; run `conla export --text-encoder` once to create it"
                 if enc.directory is None else f"directory = {enc.directory!r}")
        for key in ("onnx_file", "tokenizer_file"):
            path = folder / getattr(enc, key)
            if not path.is_file():
                raise ModelLoadError(f"{path}: file not found (model.yaml: instruction_encoder.{key}, {where})")
        try:
            encoder = InstructionEncoder(folder, dim=enc.dim, onnx_file=enc.onnx_file,
                                         tokenizer_file=enc.tokenizer_file, threads=encoder_threads)
        except EncoderLoadError as exc:
            raise ModelLoadError(f"{exc} (model.yaml: instruction_encoder, {where})") from exc
        if enc.probe_text is not None:
            got = encoder.encode_batch([enc.probe_text])[0, : len(enc.probe_embedding)]
            diff = float(np.abs(got - np.asarray(enc.probe_embedding)).max())
            if not diff <= PROBE_TOLERANCE:
                raise ModelLoadError(
                    f"{folder / enc.onnx_file}: not the encoder this model was trained with: its embedding of "
                    f"{enc.probe_text!r} differs by {diff:.3g} (> {PROBE_TOLERANCE:g}) from model.yaml "
                    f"instruction_encoder.probe_embedding ({where})")
    try:
        candidates = resolve_providers(providers)
    except ValueError as exc:
        raise ModelLoadError(f"{yaml_path.parent}: providers setting: {exc}") from exc
    session = _create_session(policy_path, spec, candidates, threads)
    _check_io(policy_path, spec, session)
    if warmup:
        _warm_up(policy_path, spec, session)
        if isinstance(encoder, InstructionEncoder):
            encoder.warmup()
    policy = OnnxPolicy(model_dir, spec, session, encoder)
    LOG.info("loaded model %r from %s on %s (asked: %s; candidates: %s)", spec.name, model_dir, policy.provider,
             providers if isinstance(providers, str) else ", ".join(providers), ", ".join(candidates))
    return policy
