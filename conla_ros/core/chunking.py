"""Action chunks → one action per control tick: re-planning, temporal ensembling, jump-free splices.

The policy predicts a chunk of H actions from one observation; `chunk[0]` is the action for the
tick at which the observation was taken, `chunk[k]` for k ticks later. The control loop runs at
the model's control rate and must never wait for the model, so inference runs elsewhere (another
thread in the node) and its chunk arrives some ticks after its observation. `ChunkExecutor`:

- **Ticks.** `executor.tick` is the index of the next control tick; `step()` executes it and
  advances. The caller notes `obs_tick = executor.tick` when it takes the observation for an
  inference and hands the chunk back with `add_chunk(actions, obs_tick)` at whatever tick it
  arrives; the chunk is aligned by `obs_tick`, so a chunk arriving L ticks late contributes
  `actions[L:]` (the first L were for ticks already past). A chunk entirely in the past is
  dropped (`dropped_stale`); one older than the newest accepted chunk is dropped too.
- **Re-planning every n.** `needs_chunk()` is True when no chunk was accepted yet, or when
  `replan_every` ticks have passed since the newest chunk's observation, i.e. n of its actions
  have been (or would have been) executed. The executor keeps playing the current chunk until the
  next one arrives; it tracks no "request in flight" (a failed inference just leaves
  `needs_chunk()` True, and the caller retries).
- **Which chunks act.** Without ensembling, the newest chunk that covers the tick. With
  `temporal_ensembling`, every chunk covering the tick, averaged with ACT's weights
  w_i = exp(−m·i), i = 0 for the oldest prediction (m = `ensemble_decay`; m > 0 trusts older
  predictions more, as ACT does with m = 0.01; m < 0 favours newer ones).
- **No jump at a splice (the choice: offset blending).** A splice is any tick t_s at which the
  set of acting chunks changes: a chunk arrives, an ensembled chunk runs out, or the executor
  resumes after starving. The executor predicts where the old plan would be now (its last action
  moved by the old chunks' own step from t_s − 1 to t_s; no step when they ran out or it was
  starving), takes the offset δ = that − plan_new(t_s), and lets δ decay linearly to zero:
  out(t_s + k) = plan_new(t_s + k) + δ·(1 − (k + 1)/(B + 1)), B = `blend_ticks`. Every step during
  the blend is one plan's own step plus δ/(B + 1): the gap between the old and the new plan is
  spread over B + 1 ticks instead of taken at once, and a new plan that continues the old one
  (δ = 0) is followed exactly, with no artefact. A splice during a blend takes a new δ from the
  actual last output, so overlapping splices need no bookkeeping. B = 0 switches at once.
  Why not a cross-fade between old and new chunks: the old chunk may run out during the fade (it
  would have to be held, which lags a moving arm), and nested fades need a stack of sources; the
  offset form needs neither and gives the same bound. (Like any blend that carries the old plan's
  velocity, it can pass the chunks' range by a few steps' worth; the node's limits clip.)
  Ensembling alone does not remove the jump (a new chunk gets its full ensemble weight at once,
  an old chunk's weight vanishes when it runs out), so the blending applies in both modes.
- **Starvation.** When no chunk covers the tick (the next chunk is late by more than
  H − n ticks), `step()` reports `starved=True` and, with `on_starvation='hold'`, repeats the
  last action output; with 'none' it returns `action=None` and the
  caller decides (for velocity-like outputs such as ee_twist, holding the last action keeps the
  arm moving: the node should send zero motion and hold the gripper instead).

`ChunkedPolicy` wraps any policy with `infer(obs) -> {'actions': (H, A)}` and `reset()`
(`conla_ros.core.policy.Policy`) into one that returns one action per call (synchronous: it runs
inference on the calling thread when a chunk is needed), for evaluation loops. Pure numpy,
deterministic; `ChunkExecutor`'s methods are thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["ChunkExecutor", "ChunkedPolicy", "ChunkingConfig", "ExecutorStep", "default_chunking"]


@dataclass(frozen=True)
class ChunkingConfig:
    """How chunks become per-tick actions (see the module docstring).

    Attributes:
        replan_every: n, ticks between observations that start a new chunk (1 ≤ n ≤ H).
        temporal_ensembling: average every chunk covering a tick (ACT) instead of using the newest.
        ensemble_decay: m in w_i = exp(−m·i), i = 0 for the oldest prediction.
        blend_ticks: B, a splice's offset decays to zero over B + 1 ticks (0: switch at once).
        on_starvation: 'hold' repeats the last action when no chunk covers the tick; 'none' returns None.
    """

    replan_every: int = 4
    temporal_ensembling: bool = False
    ensemble_decay: float = 0.01
    blend_ticks: int = 3
    on_starvation: Literal["hold", "none"] = "hold"

    def __post_init__(self) -> None:
        if isinstance(self.replan_every, bool) or not isinstance(self.replan_every, int) or self.replan_every < 1:
            raise ValueError(f"replan_every must be an int >= 1, got {self.replan_every!r}")
        if not isinstance(self.temporal_ensembling, bool):
            raise ValueError(f"temporal_ensembling must be a bool, got {self.temporal_ensembling!r}")
        if isinstance(self.ensemble_decay, bool) or not isinstance(self.ensemble_decay, (int, float)) or \
                not math.isfinite(self.ensemble_decay):
            raise ValueError(f"ensemble_decay must be a finite number, got {self.ensemble_decay!r}")
        if isinstance(self.blend_ticks, bool) or not isinstance(self.blend_ticks, int) or self.blend_ticks < 0:
            raise ValueError(f"blend_ticks must be an int >= 0, got {self.blend_ticks!r}")
        if self.on_starvation not in ("hold", "none"):
            raise ValueError(f"on_starvation must be 'hold' or 'none', got {self.on_starvation!r}")


def default_chunking(chunk_length: int, execution: ChunkingConfig | None = None) -> ChunkingConfig:
    """How a model's chunks are executed, everywhere: the model's own `execution` (model.yaml), else
    re-planning every half chunk, no ensembling. policy_node and `conla eval sim` both start here,
    so the robot and the evaluation run a policy the same way."""
    if execution is not None:
        if execution.replan_every > chunk_length:
            raise ValueError(f"execution.replan_every={execution.replan_every} must be <= the chunk length "
                             f"{chunk_length}")
        return execution
    return ChunkingConfig(replan_every=max(1, chunk_length // 2))


@dataclass(frozen=True)
class ExecutorStep:
    """The result of one control tick.

    Attributes:
        tick: the tick executed.
        action: (A,) float64, or None (before the first chunk, or starved with on_starvation='none').
        starved: no chunk covered this tick (the action, if any, is held).
        chunks: how many chunks acted on this tick (0 when starved).
        blending: a splice's offset is still being blended out.
    """

    tick: int
    action: np.ndarray | None
    starved: bool
    chunks: int
    blending: bool


@dataclass(frozen=True, eq=False)  # compared by identity (holds an array)
class _Chunk:
    obs_tick: int
    actions: np.ndarray  # (H, A) float64, read-only

    @property
    def end(self) -> int:  # first tick it no longer covers
        return self.obs_tick + len(self.actions)

    def at(self, tick: int) -> np.ndarray:
        """Its action for `tick`; past its end, its last action (held)."""
        return self.actions[min(max(tick - self.obs_tick, 0), len(self.actions) - 1)]


class ChunkExecutor:
    """Plays action chunks one tick at a time (module docstring). Thread-safe."""

    def __init__(self, config: ChunkingConfig, chunk_length: int, action_dim: int) -> None:
        if chunk_length < 1 or action_dim < 1:
            raise ValueError(f"chunk_length and action_dim must be >= 1, got {chunk_length}, {action_dim}")
        if config.replan_every > chunk_length:
            raise ValueError(f"replan_every must be <= the chunk length {chunk_length}, got {config.replan_every}")
        self.config = config
        self.chunk_length = chunk_length
        self.action_dim = action_dim
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget all chunks and counters; the next tick is 0."""
        with self._lock:
            self._tick = 0
            self._chunks: list[_Chunk] = []  # accepted, oldest first; pruned when they run out
            self._newest_obs: int | None = None
            self._acting_set: tuple[_Chunk, ...] = ()  # the chunks that made the last action
            self._weights = np.ones(0)
            self._offset: np.ndarray | None = None  # δ of the splice being smoothed
            self._splice_tick = 0
            self._last: np.ndarray | None = None  # the last action output (or held)
            self.accepted = 0
            self.dropped_stale = 0
            self.starved_ticks = 0

    @property
    def tick(self) -> int:
        """The index of the next tick `step()` will execute (note it as the observation's tick)."""
        return self._tick

    def needs_chunk(self) -> bool:
        """True when an inference should start now (no chunk yet, or n ticks since the newest's observation)."""
        with self._lock:
            return self._newest_obs is None or self._tick - self._newest_obs >= self.config.replan_every

    def ticks_left(self) -> int:
        """Ticks from now that the newest chunk still covers (0: starving or no chunk)."""
        with self._lock:
            return max(0, self._chunks[-1].end - self._tick) if self._chunks else 0

    def add_chunk(self, actions: np.ndarray, obs_tick: int) -> bool:
        """Hand over a chunk computed from the observation taken at `obs_tick`; False if dropped as stale.

        Raises ValueError for a chunk of the wrong shape or with non-finite values, or an
        `obs_tick` in the future.
        """
        actions = np.array(actions, dtype=np.float64)  # a copy: the caller may reuse its buffer
        if actions.shape != (self.chunk_length, self.action_dim):
            raise ValueError(f"chunk must have shape ({self.chunk_length}, {self.action_dim}), got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("chunk has non-finite values")
        actions.flags.writeable = False
        with self._lock:
            if isinstance(obs_tick, bool) or not isinstance(obs_tick, (int, np.integer)) or obs_tick > self._tick:
                raise ValueError(f"obs_tick must be an int <= the current tick {self._tick}, got {obs_tick!r}")
            obs_tick = int(obs_tick)
            stale = obs_tick + self.chunk_length <= self._tick
            older = self._newest_obs is not None and obs_tick < self._newest_obs
            if stale or older:
                self.dropped_stale += 1
                return False
            if self._newest_obs == obs_tick:  # the same observation again: the new result replaces it
                self._chunks = [c for c in self._chunks if c.obs_tick != obs_tick]
            self._chunks.append(_Chunk(obs_tick, actions))
            self._newest_obs = obs_tick
            self.accepted += 1
            return True

    def _acting(self, tick: int) -> tuple[_Chunk, ...]:
        covering = [c for c in self._chunks if c.obs_tick <= tick < c.end]
        if not covering:
            return ()
        if not self.config.temporal_ensembling:
            return (covering[-1],)
        return tuple(covering)

    @staticmethod
    def _plan(chunks: tuple[_Chunk, ...], weights: np.ndarray, tick: int) -> np.ndarray:
        """The weighted average of the chunks' actions for `tick` (each clamped to its own range)."""
        if len(chunks) == 1:
            return chunks[0].at(tick)
        return sum(w * c.at(tick) for w, c in zip(weights, chunks, strict=True)) / weights.sum()

    def _old_step(self, tick: int) -> np.ndarray:
        """The step from tick − 1 to tick of the acting chunks that cover both (0 when none do: hold)."""
        kept = [(w, c) for w, c in zip(self._weights, self._acting_set, strict=True)
                if c.obs_tick <= tick - 1 and tick < c.end]
        if not kept:
            return np.zeros(self.action_dim)
        weights = np.array([w for w, _ in kept])
        chunks = tuple(c for _, c in kept)
        return self._plan(chunks, weights, tick) - self._plan(chunks, weights, tick - 1)

    def step(self) -> ExecutorStep:
        """Execute the current tick: its action (or None) and whether it was starved."""
        with self._lock:
            tick = self._tick
            self._tick += 1
            self._chunks = [c for c in self._chunks if c.end > tick]  # drop chunks that ran out
            acting = self._acting(tick)
            if not acting:
                self._acting_set, self._weights = (), np.ones(0)  # resuming is a splice from the held action
                if self._last is None:  # before the first chunk
                    return ExecutorStep(tick, None, starved=False, chunks=0, blending=False)
                self.starved_ticks += 1
                action = None if self.config.on_starvation == "none" else self._last.copy()
                return ExecutorStep(tick, action, starved=True, chunks=0, blending=False)
            if acting != self._acting_set:  # a splice: a chunk joined or left, or the executor resumed
                weights = np.exp(-float(self.config.ensemble_decay) * np.arange(len(acting)))
                if self._last is not None and self.config.blend_ticks > 0:
                    # Where the old plan would go now: the last action moved by the old plan's own step.
                    expected = self._last + self._old_step(tick)
                    self._offset = expected - self._plan(acting, weights, tick)
                    self._splice_tick = tick
                else:
                    self._offset = None
                self._acting_set, self._weights = acting, weights
            action = self._plan(acting, self._weights, tick)
            blending = False
            if self._offset is not None:
                remaining = 1.0 - (tick - self._splice_tick + 1) / (self.config.blend_ticks + 1)
                if remaining > 0.0:
                    action = action + remaining * self._offset
                    blending = True
                else:
                    self._offset = None
            action = np.array(action, dtype=np.float64)
            self._last = action
            return ExecutorStep(tick, action.copy(), starved=False, chunks=len(acting), blending=blending)


class ChunkedPolicy:
    """One action per `infer` call from a chunk policy, through a `ChunkExecutor` (synchronous).

    A policy itself (`conla_ros.core.policy.Policy`), stacked on one: `infer(obs)` runs the wrapped
    policy when the executor needs a chunk (observation tick = now), then executes one tick:
    {'actions': (A,) float64, 'tick', 'starved', 'latency_ms' (of the inference, 0.0 when none
    ran)}. `reset()` resets the executor and the wrapped policy. `name` is the wrapped policy's
    unless given.
    """

    def __init__(self, policy: Any, config: ChunkingConfig, chunk_length: int, action_dim: int,
                 name: str | None = None) -> None:
        self.policy = policy
        self.executor = ChunkExecutor(config, chunk_length, action_dim)
        self.name = name if name is not None else getattr(policy, "name", type(policy).__name__)

    @property
    def config(self) -> ChunkingConfig:
        """How the chunks are executed."""
        return self.executor.config

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The action for this tick, inferring a new chunk first when one is due."""
        latency = 0.0
        if self.executor.needs_chunk():
            result = self.policy.infer(obs)
            self.executor.add_chunk(result["actions"], self.executor.tick)
            latency = float(result.get("latency_ms", 0.0))
        step = self.executor.step()
        return {"actions": step.action, "tick": step.tick, "starved": step.starved, "latency_ms": latency}

    def reset(self) -> None:
        """Forget the chunks and reset the wrapped policy."""
        self.executor.reset()
        self.policy.reset()
