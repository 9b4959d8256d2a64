"""conla_ros.core.control_loop on a fake clock: every tick, input and stop is the test's, through the public interface.

Inference is played by the test: it takes the loop's request (`take_request`) and hands a chunk back
(`complete`) or a failure (`fail`), so the order of events is exact and nothing sleeps.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conla_ros.core.chunking import ChunkingConfig
from conla_ros.core.control_loop import ControlLoop, LoopConfig
from conla_ros.core.safety import resolve_limits

PERIOD = 0.05  # 20 Hz
H, A = 4, 4


class Sink:
    """The output: commands, plans and stop messages (with the hold position), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, np.ndarray | None]] = []

    def publish(self, command: np.ndarray, plan: np.ndarray | None = None) -> None:
        self.events.append(("command", np.array(command)))

    def publish_stop(self, hold: np.ndarray | None = None) -> bool:
        self.events.append(("stop", None if hold is None else np.array(hold)))
        return True

    @property
    def commands(self) -> list[np.ndarray]:
        return [value for kind, value in self.events if kind == "command"]

    @property
    def stops(self) -> list[np.ndarray | None]:
        return [value for kind, value in self.events if kind == "stop"]


def make_loop(velocity_like: bool = True, max_delta: tuple[float, ...] = (), enabled: bool = True,
              **config) -> tuple[ControlLoop, Sink]:
    names = ("a", "b", "c", "gripper")
    limits = resolve_limits([-1.0] * A, [1.0] * A, names, max_delta=max_delta)
    cfg = LoopConfig(period_s=PERIOD, chunk_length=H, action_dim=A, chunking=ChunkingConfig(replan_every=2,
                     blend_ticks=0, on_starvation="none" if velocity_like else "hold"), limits=limits,
                     velocity_like=velocity_like, **config)
    sink = Sink()
    return ControlLoop(cfg, sink, enabled=enabled), sink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def advance(self, seconds: float = PERIOD) -> float:
        self.now += seconds
        return self.now


def serve(loop: ControlLoop, value: float = 0.5) -> bool:
    """Play the inference thread once: answer a pending request with a constant chunk."""
    request = loop.take_request()
    if request is None:
        return False
    loop.complete(request, np.full((H, A), value), elapsed_s=0.004)
    return True


def run(loop: ControlLoop, clock: Clock, ticks: int, value: float = 0.5, frames: bool = True) -> None:
    """`ticks` ticks, each after a fresh frame, with inference served at once."""
    for _ in range(ticks):
        if frames:
            loop.on_frame(object(), clock.now)
        serve(loop, value)
        loop.tick(clock.now)
        serve(loop, value)
        clock.advance()


def test_disabled_then_enabled_commands_and_replans_every_n_ticks() -> None:
    loop, sink = make_loop(enabled=False)
    clock = Clock()
    loop.set_instruction("open the drawer")
    run(loop, clock, 3)
    assert sink.events == [] and loop.state[0] == "disabled"
    loop.enable()
    run(loop, clock, 8)
    assert len(sink.commands) >= 7 and loop.state == ("running", "")
    status = loop.status(clock.now)
    assert status["inferences"] >= 4 and status["commands"] == len(sink.commands)


def test_waiting_for_instruction_and_first_frame() -> None:
    loop, sink = make_loop()
    clock = Clock()
    loop.tick(clock.now)
    assert loop.state[0] == "waiting" and "no valid instruction" in loop.state[1]
    loop.set_instruction("push")
    loop.tick(clock.advance())
    assert "no camera frame" in loop.state[1] and sink.events == []


def test_stale_camera_stops_once_then_resumes_on_fresh_frames() -> None:
    loop, sink = make_loop(stale_image_timeout=0.2)
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 4)
    assert sink.commands
    last_frame = clock.now - PERIOD
    while loop.tick(clock.advance()) != "stale":  # no more frames: the chunk plays until the timeout
        assert clock.now - last_frame <= 0.2 + PERIOD
    sent = len(sink.commands)
    for _ in range(4):
        loop.tick(clock.advance())
    assert len(sink.commands) == sent and len(sink.stops) == 1
    assert loop.state[0] == "stale" and "camera stale" in loop.state[1]
    assert sink.stops[0] is None  # a velocity output: no hold position
    run(loop, clock, 4)
    assert len(sink.commands) > sent and loop.state[0] == "running"


def test_estop_latches_stops_in_the_call_and_only_enable_releases_it() -> None:
    loop, sink = make_loop()
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 4)
    assert loop.estop("test") is True
    assert sink.events[-1][0] == "stop" and len(sink.stops) == 1  # before any further tick
    assert loop.estop("again") is False and len(sink.stops) == 1  # once
    sent = len(sink.commands)
    run(loop, clock, 4)
    assert len(sink.commands) == sent and loop.status()["estop"]
    assert loop.enable() is True
    run(loop, clock, 4)
    assert len(sink.commands) > sent


def test_disable_and_shutdown_send_the_stop_message_once() -> None:
    loop, sink = make_loop()
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 4)
    loop.disable()
    loop.disable()
    assert len(sink.stops) == 1 and loop.state[0] == "disabled"
    loop.enable()
    run(loop, clock, 4)
    assert loop.shutdown() is True and len(sink.stops) == 2
    assert loop.shutdown() is False and len(sink.stops) == 2
    sent = len(sink.commands)
    run(loop, clock, 3)
    assert len(sink.commands) == sent and loop.closing and loop.wait_request(0.01) is None


def test_position_outputs_hold_the_measured_position_on_stop() -> None:
    loop, sink = make_loop(velocity_like=False, needs_position=True, max_delta=(0.05,))
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 2)
    assert sink.events == [] and "needs the arm's position" in loop.state[1]
    measured = np.array([0.2, -0.2, 0.0, np.nan])  # the gripper is not measured
    loop.on_measured(measured)
    run(loop, clock, 6, value=0.9)
    first = sink.commands[0]
    assert np.abs(first[:3] - measured[:3]).max() <= 0.05 + 1e-12  # ramps from where the arm is
    loop.estop("test")
    [hold] = sink.stops
    assert np.allclose(hold[:3], measured[:3]) and hold[3] == sink.commands[-1][3]


def test_rate_limit_from_rest_and_live_limits() -> None:
    loop, sink = make_loop(max_delta=(0.01,))
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 10, value=1.0)
    commands = np.stack([np.zeros(A), *sink.commands])
    assert np.abs(np.diff(commands, axis=0)).max() <= 0.01 + 1e-12
    loop.set_limits(resolve_limits([-1.0] * A, [0.0] * A, "abcd"))
    run(loop, clock, 3, value=1.0)
    assert sink.commands[-1].max() <= 0.0


def test_refused_instruction_stops_and_a_new_one_needs_a_fresh_inference() -> None:
    loop, sink = make_loop()
    clock = Clock()
    loop.set_instruction("push")
    run(loop, clock, 4)
    assert loop.clear_instruction() is True
    assert len(sink.stops) == 1
    sent = len(sink.commands)
    run(loop, clock, 3)
    assert len(sink.commands) == sent and loop.state[0] == "waiting"
    assert loop.set_instruction("pull") and not loop.set_instruction("pull")  # unchanged: no reset
    run(loop, clock, 3)
    assert len(sink.commands) > sent


def test_failed_and_non_finite_inference_is_a_fault_until_one_succeeds() -> None:
    loop, sink = make_loop()
    clock = Clock()
    loop.set_instruction("push")
    loop.on_frame(object(), clock.now)
    request = loop.take_request()
    assert request is not None and loop.busy
    assert loop.fail(request, "inference_non_finite", "NaN in actions") == 1
    loop.tick(clock.advance())
    assert loop.state[0] == "fault" and sink.commands == []
    run(loop, clock, 3)
    assert loop.state[0] == "running" and sink.commands


def test_stale_proprio_stops() -> None:
    loop, sink = make_loop(proprio=True, joint_states_timeout=0.2)
    clock = Clock()
    loop.set_instruction("push")
    loop.on_proprio(None, clock.now, "JointState lacks joints")
    run(loop, clock, 2)
    assert "no usable joint states: JointState lacks joints" in loop.state[1]
    loop.on_proprio(np.array([0.1, 0.2]), clock.now)
    run(loop, clock, 2)
    assert sink.commands and loop.proprio.tolist() == [0.1, 0.2]
    for _ in range(6):  # frames keep coming, joint states do not
        loop.on_frame(object(), clock.now)
        serve(loop)
        loop.tick(clock.advance())
    assert loop.state[0] == "stale" and "joint states stale" in loop.state[1] and len(sink.stops) == 1


def test_a_chunk_from_before_a_stop_is_discarded() -> None:
    loop, _ = make_loop()
    clock = Clock()
    loop.set_instruction("push")
    loop.on_frame(object(), clock.now)
    request = loop.take_request()
    loop.set_instruction("pull")  # the task changed while the model ran
    assert loop.complete(request, np.full((H, A), 0.5), 0.004) is False
    assert loop.status()["chunks_discarded"] == 1


def test_next_frame_in_time_decides_whether_a_tick_waits_for_the_next_frame() -> None:
    loop, _ = make_loop()
    now = 50.0
    for k in range(10, -1, -1):
        loop.on_frame(object(), now - 0.030 - k / 30)  # 30 Hz; the last frame 30 ms ago
    loop.recent_inference_s = 0.005
    loop.chunks.ticks_left = lambda: 4  # 4 x 50 ms of actions left
    assert loop.next_frame_in_time(now)
    loop.chunks.ticks_left = lambda: 0
    assert not loop.next_frame_in_time(now)


def test_run_keeps_the_rate_and_a_fresh_chunk_takes_the_next_slot_early() -> None:
    """The scheduler on the real clock at 20 Hz for 0.5 s, with the test's thread serving inferences."""
    import time

    loop, sink = make_loop()
    loop.set_instruction("push")
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        loop.on_frame(object(), time.monotonic())
        serve(loop)
        time.sleep(0.01)
    stop.set()
    thread.join(2.0)
    assert not thread.is_alive()
    status = loop.status()
    assert 7 <= len(sink.commands) <= 12, len(sink.commands)
    assert status["early_ticks"] >= 1 and status["missed_ticks"] <= 1


def test_config_is_checked() -> None:
    limits = resolve_limits([-1.0] * A, [1.0] * A, "abcd")
    with pytest.raises(ValueError, match="replan_every=5 must be <= the chunk length 4"):
        LoopConfig(period_s=PERIOD, chunk_length=H, action_dim=A, chunking=ChunkingConfig(replan_every=5),
                   limits=limits, velocity_like=True)
    with pytest.raises(ValueError, match="period_s"):
        LoopConfig(period_s=0.0, chunk_length=H, action_dim=A, chunking=ChunkingConfig(replan_every=2),
                   limits=limits, velocity_like=True)
