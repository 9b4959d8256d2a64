"""The policy's real-time control loop without ROS: scheduling, chunks, safety gates, stale inputs, enable/e-stop.

`conla_ros.nodes.policy_node` is a thin rclpy wrapper around `ControlLoop`: its callbacks check a
message's fields and hand the input over (`on_frame`, `set_instruction`, `on_proprio`, ...), an
inference thread serves `wait_request()` / `complete()` / `fail()`, and a control thread runs
`run(stop)`, which calls `tick(now)` on a steady schedule. Everything here takes the time as an
argument (seconds of a monotonic clock), so a test drives the loop with a fake clock, tick by tick.

Per tick (`tick(now)`):

1. **Gates.** A command goes out only when the loop is enabled, not e-stopped, has a valid
   instruction, a frame younger than `stale_image_timeout`, proprioception younger than
   `joint_states_timeout` (when the model takes it), the arm's position (joint-position modes with
   a rate limit, which starts from it) and a good last inference. When a gate closes the loop stops
   (below) and reports the state: disabled, waiting, stale or fault.
2. **Chunks.** `ChunkExecutor` plays the current chunk; every `replan_every` ticks it needs the
   next one. The inference starts on a fresh frame: at once when a frame arrives while a chunk is
   due (`on_frame`), or at the tick when the newest frame is a fraction of a tick old, or when the
   next frame (at the camera's measured rate) could not be inferred before the current chunk runs
   out. A chunk is aligned to the tick its frame arrived at (action 0 belongs to that frame).
3. **Safety.** The executor's action is made finite, clipped to the limits and rate-limited
   (`SafetyFilter`); a joint_trajectory plan is the rest of the chunk, each point limited after
   the one before.

Stopping: every stop (a gate closing, `estop`, `disable`, `shutdown`) sends the output's stop
message once, if a motion command went out since the last stop, and forgets the chunks, so the
loop resumes from a fresh inference. What the stop message is depends on the output
(`CommandSink.publish_stop(hold)`): `hold` is where the arm should stay (the measured joint
positions, else the last command) for position outputs, None for velocity-like ones. The e-stop
acts in the caller's thread: its stop message goes out before the next tick.

Scheduling (`run`): absolute deadlines, so no drift; a tick more than half a period late counts as
missed and the schedule restarts from then instead of bursting. A fresh chunk does not wait for
its slot: the loop wakes when it arrives and runs the next tick at once (`early_ticks`), then keeps
to the schedule, so the rate stays the configured one. Thread-safe: one lock orders every input,
tick and stop message.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from conla_ros.core.chunking import ChunkExecutor, ChunkingConfig
from conla_ros.core.safety import CommandLimits, LatencyWindow, RateMeter, SafetyFilter

__all__ = ["STATES", "CommandSink", "ControlLoop", "InferenceRequest", "LoopConfig"]

STATES = ("disabled", "waiting", "running", "stale", "fault")
# A frame that arrived less than this many ticks ago is fresh enough to start an inference at a tick;
# an older one is passed over for the next frame while that can still come in time (next_frame_in_time).
FRESH_FRAME_TICKS = 0.25


class CommandSink(Protocol):
    """Where commands go (policy_io.CommandOutput in the node, a recorder in tests)."""

    def publish(self, command: np.ndarray, plan: np.ndarray | None = None) -> None:
        """This tick's safe command (A,); `plan` (K, A): the points of a joint_trajectory."""

    def publish_stop(self, hold: np.ndarray | None = None) -> bool:
        """The stop message once; `hold` (A,): the position to hold (position outputs). False: none sent."""


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs to know about the model, the output and the parameters.

    Attributes:
        period_s: control period (1 / control rate).
        chunk_length, action_dim: the model's H and A.
        chunking: how chunks become per-tick actions.
        limits: command limits (live-changeable through `set_limits`).
        velocity_like: the command is a velocity (ee twist, joint velocities): it ramps from rest and
            stops at zero; otherwise a position, which ramps from and holds the measured position.
        plan: publish the rest of the chunk as a plan (joint_trajectory).
        proprio: the model takes proprioception (`on_proprio`), which must be fresh.
        needs_position: a joint-position output: `on_measured` gives where the arm is.
        stale_image_timeout, joint_states_timeout: seconds after which an input is stale.
        instruction_source, joint_states_source: names used in the reasons (the topics).
    """

    period_s: float
    chunk_length: int
    action_dim: int
    chunking: ChunkingConfig
    limits: CommandLimits
    velocity_like: bool
    plan: bool = False
    proprio: bool = False
    needs_position: bool = False
    stale_image_timeout: float = 0.5
    joint_states_timeout: float = 0.5
    instruction_source: str = "instruction"
    joint_states_source: str = "joint_states"

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s!r}")
        if self.chunking.replan_every > self.chunk_length:
            raise ValueError(f"replan_every={self.chunking.replan_every} must be <= the chunk length "
                             f"{self.chunk_length}")
        if self.limits.dim != self.action_dim:
            raise ValueError(f"limits have {self.limits.dim} dimensions, the action {self.action_dim}")


@dataclass(frozen=True)
class InferenceRequest:
    """One inference to run: the frame (opaque: the caller converts it), instruction, proprio; and where
    its chunk belongs (`obs_tick`, of loop epoch `epoch`: a request from before a stop is discarded)."""

    epoch: int
    obs_tick: int
    frame: Any
    stamp_ns: int
    instruction: str
    proprio: np.ndarray | None


class ControlLoop:
    """The control loop (module docstring). `output` receives commands and stop messages."""

    def __init__(self, config: LoopConfig, output: CommandSink, *, enabled: bool = False,
                 log: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.output = output
        self._log = log or (lambda level, text: None)
        self.chunks = ChunkExecutor(config.chunking, config.chunk_length, config.action_dim)
        self.safety = SafetyFilter(config.limits)
        if config.velocity_like:
            self.safety.reset(np.zeros(config.action_dim))  # the first command ramps up from rest
        self.stale_image_timeout = config.stale_image_timeout
        self.joint_states_timeout = config.joint_states_timeout

        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # the inference thread waits on it
        self.chunk_arrived = threading.Event()  # wakes `run` early for a fresh chunk
        self._enabled = bool(enabled)
        self._estop = False
        self._instruction: str | None = None
        self._frame: Any = None  # the newest frame, not converted yet
        self._frame_seq = 0
        self._frame_time: float | None = None
        self._frame_stamp_ns = 0
        self._used_seq = 0  # sequence number of the last frame an inference took
        self._proprio: np.ndarray | None = None
        self._proprio_time: float | None = None
        self._proprio_reason = "no joint states yet"
        self._measured: np.ndarray | None = None  # (A,) measured positions, NaN where unknown
        self._fault: str | None = None
        self._epoch = 0
        self._latest_chunk: tuple[int, int, np.ndarray] | None = None  # (epoch, obs_tick, actions)
        self._commanding = False
        self._closing = False
        self._state, self._reason = "disabled", "starting"
        self._request: InferenceRequest | None = None
        self._busy = False
        self.recent_inference_s = 0.0  # a slowly forgotten maximum: how long the next inference may take
        self._fresh_stamp_ns: int | None = None  # stamp of the frame of a chunk no command used yet
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.inference_ms = LatencyWindow(5000)
        self.image_to_command_ms = LatencyWindow(5000)
        self.camera_rate = RateMeter(2.0)
        self.tick_rate = RateMeter(2.0)

    # --- inputs ---------------------------------------------------------------------------------------

    def on_frame(self, frame: Any, now: float, stamp_ns: int = 0) -> None:
        """A valid camera frame (checked by the caller) arrived at `now`; starts an inference if one is due."""
        with self._lock:
            if self._frame is not None and self._frame_seq > self._used_seq:
                self.counters["dropped_frames"] += 1  # replaced before an inference took it
            self._frame, self._frame_time, self._frame_stamp_ns = frame, now, stamp_ns
            self._frame_seq += 1
            self.camera_rate.mark(now)
            if self._health(now)[0] == "running" and (self._fault is not None or self.chunks.needs_chunk()):
                self._request_inference(now)

    def set_instruction(self, text: str) -> bool:
        """A valid instruction (checked by the caller); True when it changed (the old task's chunks are dropped)."""
        with self._lock:
            if text == self._instruction:
                return False
            self._instruction = text
            self._forget_chunks()
            return True

    def clear_instruction(self) -> bool:
        """A refused instruction: stop (not go on with the old task); True when there was one."""
        with self._lock:
            had = self._instruction is not None
            self._instruction = None
            self._halt("instruction refused")
            self._forget_chunks()
            return had

    def on_proprio(self, values: np.ndarray | None, now: float, reason: str = "") -> None:
        """Proprioception in the model's order, or None with the reason it was refused."""
        with self._lock:
            if values is None:
                self._proprio_reason = reason
            else:
                self._proprio, self._proprio_time = np.asarray(values, dtype=np.float64), now

    def on_measured(self, positions: np.ndarray) -> None:
        """(A,) measured positions of the arm's joints in action order (NaN: not a joint, e.g. the gripper)."""
        with self._lock:
            self._measured = np.asarray(positions, dtype=np.float64).copy()

    def reject(self, reason: str) -> int:
        """Count a refused input by reason; returns the count so far."""
        with self._lock:
            self.rejected[reason] += 1
            return self.rejected[reason]

    # --- enable / e-stop / shutdown ---------------------------------------------------------------------

    def enable(self) -> bool:
        """Enable (releases a latched e-stop); True when an e-stop was released."""
        with self._lock:
            released = self._estop
            self._estop, self._enabled = False, True
            return released

    def disable(self, reason: str = "disabled by ~/enable false") -> None:
        """Disable: stop now (the stop message goes out before this returns)."""
        with self._lock:
            self._enabled = False
            self._halt("disabled")
            self._set_state("disabled", reason)

    def estop(self, source: str) -> bool:
        """Latch the e-stop and stop now; True when it was not latched already."""
        with self._lock:
            first = not self._estop
            self._estop, self._enabled = True, False
            self._halt("e-stop")
            self._set_state("disabled", f"e-stop ({source}); ~/enable true to resume")
            return first

    def shutdown(self) -> bool:
        """Stop for good: the stop message (if a command is out), and the inference thread is released.
        True when a stop message went out."""
        with self._lock:
            before = self.output_stops
            self._enabled = False
            self._halt("shutting down")
            self._closing = True
            self._set_state("disabled", "shutting down")
            self._wake.notify_all()
            self.chunk_arrived.set()
            return self.output_stops > before

    @property
    def output_stops(self) -> int:
        return self.counters["stop_messages"]

    def set_limits(self, limits: CommandLimits) -> None:
        with self._lock:
            self.safety.set_limits(limits)

    # --- the tick ---------------------------------------------------------------------------------------

    def health(self, now: float) -> tuple[str, str]:
        """(state, reason) of the inputs, ignoring inference: disabled, waiting, stale or running."""
        with self._lock:
            return self._health(now)

    def _health(self, now: float) -> tuple[str, str]:
        cfg = self.config
        if self._estop:
            return "disabled", "e-stop latched; ~/enable true to resume"
        if not self._enabled:
            return "disabled", "disabled; ~/enable true to start"
        if self._instruction is None:
            return "waiting", f"no valid instruction on {cfg.instruction_source}"
        if self._frame_time is None:
            return "waiting", "no camera frame yet"
        age = now - self._frame_time
        if age > self.stale_image_timeout:
            return "stale", f"camera stale: last valid frame {age:.2f} s ago (timeout {self.stale_image_timeout:g} s)"
        if cfg.proprio:
            if self._proprio_time is None:
                return "waiting", f"no usable joint states: {self._proprio_reason}"
            age = now - self._proprio_time
            if age > self.joint_states_timeout:
                return "stale", f"joint states stale: last valid {age:.2f} s ago ({self._proprio_reason})"
        if cfg.needs_position and self.safety.previous is None and self._measured is None and \
                np.isfinite(self.safety.limits.max_delta).any():
            return "waiting", f"no joint states on {cfg.joint_states_source}: the rate limit needs the arm's " \
                              "position to start"
        return "running", ""

    def tick(self, now: float, now_ns: int | None = None) -> str:
        """One control tick at `now`; returns the state. `now_ns` (the caller's clock, for frame stamps)
        times image -> command for the first command of each chunk."""
        with self._lock:
            self.tick_rate.mark(now)
            if self._closing:
                return self._state
            state, reason = self._health(now)
            if state != "running":
                self._halt(reason)
                self._set_state(state, reason)
                return state
            if self._fault is not None or self.chunks.needs_chunk():
                # Prefer the next frame: on_frame starts the inference when it arrives, which keeps
                # image -> command short. Take a waiting frame only when it is a fraction of a tick old,
                # or when the next one would come too late to keep the chunks going.
                fresh_within = FRESH_FRAME_TICKS * self.config.period_s
                fresh = self._frame_time is not None and now - self._frame_time < fresh_within
                if fresh or self._fault is not None or not self.next_frame_in_time(now):
                    self._request_inference(now)
            if self._fault is not None:
                self._halt(self._fault)
                self._set_state("fault", self._fault)
                return "fault"
            step = self.chunks.step()
            if step.action is None:
                self._halt("starved" if step.starved else "", quiet=True)
                self.counters["starved_ticks"] += int(step.starved)
                self._set_state("waiting", "waiting for the model's next chunk" if step.starved
                                else "waiting for the first chunk")
                return "waiting"
            if self.safety.previous is None and self._measured is not None:
                self.safety.reset(self._measured)  # positions: the first command ramps from where the arm is
            command = self.safety.apply(step.action)
            if command is None:  # a non-finite action: the model's fault, never published
                self._fault = "non-finite action from the chunk executor"
                self._halt(self._fault)
                self._set_state("fault", self._fault)
                return "fault"
            plan = self.safety.plan(command, self._rest_of_chunk(step.tick)) if self.config.plan else None
            self.output.publish(command, plan)
            self.counters["commands"] += 1
            if self._fresh_stamp_ns is not None:
                if now_ns is not None and self._fresh_stamp_ns:
                    self.image_to_command_ms.add((now_ns - self._fresh_stamp_ns) / 1e6)
                self._fresh_stamp_ns = None
            self._commanding = True
            self._set_state("running", "")
            return "running"

    def next_frame_in_time(self, now: float) -> bool:
        """Whether the camera's next frame, at its measured rate, can still be turned into a chunk (with
        the recent worst inference time and a tick to spare) before the current chunk runs out."""
        with self._lock:
            rate = self.camera_rate.rate(now)
            if self._frame_time is None or rate <= 0.0:
                return False
            next_frame_in = self._frame_time + 1.0 / rate - now
            needed = max(next_frame_in, 0.0) + self.recent_inference_s + self.config.period_s
            return needed < self.chunks.ticks_left() * self.config.period_s

    def _rest_of_chunk(self, tick: int) -> np.ndarray:
        chunk = self._latest_chunk
        if chunk is None or chunk[0] != self._epoch:
            return np.zeros((0, self.config.action_dim))
        _, obs_tick, actions = chunk
        return actions[max(0, tick - obs_tick + 1):]

    def _hold_position(self) -> np.ndarray | None:
        """Where a position output should stay: the measured position, else the last command."""
        if self.config.velocity_like:
            return None
        previous = self.safety.previous
        if self._measured is None:
            return previous
        hold = self._measured.copy()
        if previous is not None:  # dimensions that are not measured (the gripper): the last command
            hold = np.where(np.isfinite(hold), hold, previous)
        return hold

    def _restart_point(self) -> np.ndarray | None:
        """Where the rate limit starts after a stop: rest for velocities; for positions the measured
        position, else the last command (what the controller still holds)."""
        if self.config.velocity_like:
            return np.zeros(self.config.action_dim)
        if self._measured is not None:
            return self._measured.copy()
        return self.safety.previous

    def _forget_chunks(self) -> None:
        """Drop every chunk: the next command comes from a fresh inference on a frame from after now."""
        self._epoch += 1
        self.chunks.reset()
        self._latest_chunk = None
        self._used_seq = self._frame_seq
        self._fresh_stamp_ns = None
        self.safety.reset(self._restart_point())

    def _halt(self, reason: str, quiet: bool = False) -> None:
        """Stop commanding: the stop message once (if a command is out), chunks forgotten (unless quiet)."""
        if not self._commanding and self._latest_chunk is None and self.chunks.tick == 0:
            return
        if self._commanding:
            if self.output.publish_stop(self._hold_position()):
                self.counters["stop_messages"] += 1
            if not quiet:
                self.counters["stops"] += 1
        self._commanding = False
        if quiet:  # starved: keep the chunks (the next one is on its way), restart the rate limit from rest
            if self.config.velocity_like:
                self.safety.reset(np.zeros(self.config.action_dim))
            return
        self._epoch += 1
        self.chunks.reset()
        self._latest_chunk = None
        self.safety.reset(self._restart_point())
        self._fresh_stamp_ns = None

    def _set_state(self, state: str, reason: str) -> None:
        if state != self._state:
            text = f"state {self._state} -> {state}" + (f": {reason}" if reason else "")
            self._log("info" if state in ("running", "disabled") else "warning", text)
        self._state, self._reason = state, reason

    # --- inference --------------------------------------------------------------------------------------

    def _request_inference(self, now: float) -> None:
        """Offer the newest unused frame to the inference thread; never waits. A frame that waited k
        ticks gets obs_tick = tick - k: the executor skips the actions already past."""
        if self._busy or self._frame_seq <= self._used_seq or self._instruction is None or self._closing:
            return
        proprio = self._proprio.copy() if self.config.proprio and self._proprio is not None else None
        age_ticks = int(max(0.0, now - (self._frame_time or now)) / self.config.period_s)
        obs_tick = self.chunks.tick - min(age_ticks, self.config.chunk_length)
        self._request = InferenceRequest(self._epoch, obs_tick, self._frame, self._frame_stamp_ns,
                                         self._instruction, proprio)
        self._used_seq = self._frame_seq
        self._busy = True
        self._wake.notify()

    def take_request(self) -> InferenceRequest | None:
        """The pending request, if any (it is then in flight until `complete` or `fail`)."""
        with self._lock:
            request, self._request = self._request, None
            return request

    def wait_request(self, timeout: float) -> InferenceRequest | None:
        """Wait up to `timeout` s for a request (the inference thread); None on timeout or shutdown."""
        with self._lock:
            if self._request is None and not self._closing:
                self._wake.wait(timeout)
            return None if self._closing else self.take_request()

    @property
    def proprio(self) -> np.ndarray | None:
        """The latest valid proprioception (model order), or None."""
        with self._lock:
            return None if self._proprio is None else self._proprio.copy()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def busy(self) -> bool:
        """An inference is pending or in flight."""
        with self._lock:
            return self._busy

    def complete(self, request: InferenceRequest, actions: np.ndarray, elapsed_s: float) -> bool:
        """The chunk (H, A) of `request`, computed in `elapsed_s`; True when it was accepted."""
        with self._lock:
            self._busy = False
            self.inference_ms.add(elapsed_s * 1e3)
            self.recent_inference_s = max(elapsed_s, 0.95 * self.recent_inference_s)
            self.counters["inferences"] += 1
            if request.epoch != self._epoch:
                self.counters["chunks_discarded"] += 1  # the loop stopped or the task changed meanwhile
                return False
            try:
                accepted = self.chunks.add_chunk(np.asarray(actions, dtype=np.float64), request.obs_tick)
            except ValueError as error:
                self._fault = f"chunk refused: {error}"
                return False
            if accepted:
                self._latest_chunk = (request.epoch, request.obs_tick, np.asarray(actions, dtype=np.float64))
                self._fresh_stamp_ns = request.stamp_ns
                self.chunk_arrived.set()
            else:
                self.counters["chunks_late"] += 1
            self._fault = None
            return accepted

    def fail(self, request: InferenceRequest | None, reason: str, message: str) -> int:
        """An inference failed (`reason`, counted): a fault until one succeeds. Returns the count so far."""
        with self._lock:
            self._busy = False
            self.rejected[reason] += 1
            if request is None or request.epoch == self._epoch:
                self._fault = f"inference failed ({reason}): {message}"
            return self.rejected[reason]

    # --- scheduling ---------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, clock: Callable[[], float] = time.monotonic,
            clock_ns: Callable[[], int] | None = None, on_error: Callable[[str], None] | None = None) -> None:
        """Tick at the configured rate until `stop` is set (the control thread's body; see the module docstring)."""
        period = self.config.period_s
        deadline = clock()
        while not stop.is_set() and not self._closing:
            deadline += period
            delay = deadline - clock()
            if delay > 0:
                if self._wait_for_slot_or_fresh_chunk(deadline, stop, clock):
                    return
            elif -delay > 0.5 * period:
                with self._lock:
                    self.counters["missed_ticks"] += 1 + int(-delay / period)
                deadline = clock()
            try:
                self.tick(clock(), clock_ns() if clock_ns is not None else None)
            except Exception as error:  # a bug must not leave the arm moving: stop, report, go on
                with self._lock:
                    self.counters["tick_errors"] += 1
                    self._fault = f"control tick failed: {type(error).__name__}: {error}"
                    with contextlib.suppress(Exception):  # the output itself failed; the fault stands
                        self._halt(self._fault)
                if on_error is not None:
                    on_error(self._fault)

    def _wait_for_slot_or_fresh_chunk(self, deadline: float, stop: threading.Event,
                                      clock: Callable[[], float]) -> bool:
        """Sleep until `deadline` or until a chunk no command has used yet arrives; True when stopping."""
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return stop.is_set()
            if self.chunk_arrived.wait(remaining):
                self.chunk_arrived.clear()
                if stop.is_set() or self._closing:
                    return True
                with self._lock:  # a chunk that arrived during the last tick was used by it: keep waiting
                    if self._fresh_stamp_ns is not None:
                        self.counters["early_ticks"] += 1
                        return False

    # --- figures ------------------------------------------------------------------------------------------

    @property
    def state(self) -> tuple[str, str]:
        with self._lock:
            return self._state, self._reason

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The loop's figures (policy_node adds model, provider and transport figures for /diagnostics)."""
        with self._lock:
            latency = self.inference_ms.summary()
            values: dict[str, Any] = {
                "state": self._state,
                "reason": self._reason,
                "enabled": self._enabled,
                "estop": self._estop,
                "instruction": self._instruction or "",
                "inference_p50_ms": latency["p50"],
                "inference_p99_ms": latency["p99"],
                "image_to_command_p50_ms": self.image_to_command_ms.percentile(50),
                "image_to_command_p99_ms": self.image_to_command_ms.percentile(99),
                "inferences": self.counters["inferences"],
                "camera_rate_hz": round(self.camera_rate.rate(now), 2),
                "control_rate_hz": round(self.tick_rate.rate(now), 2),
                "control_rate_target_hz": round(1.0 / self.config.period_s, 6),
                "frames_received": self.camera_rate.count,
                "dropped_frames": self.counters["dropped_frames"],
                "missed_ticks": self.counters["missed_ticks"],
                "starved_ticks": self.counters["starved_ticks"],
                "early_ticks": self.counters["early_ticks"],
                "chunks_late": self.counters["chunks_late"],
                "chunks_discarded": self.counters["chunks_discarded"],
                "executor_dropped_stale": self.chunks.dropped_stale,
                "commands": self.counters["commands"],
                "stops": self.counters["stops"],
                "stop_messages": self.counters["stop_messages"],
                "clipped": self.safety.counters["clipped"],
                "rate_limited": self.safety.counters["rate_limited"],
                "rejected_total": sum(self.rejected.values()),
            }
            values.update({f"rejected.{reason}": count for reason, count in sorted(self.rejected.items())})
            return values
