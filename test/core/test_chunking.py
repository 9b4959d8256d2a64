"""The chunk executor: re-planning, alignment by observation tick, ensembling weights, splices, starvation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conla_ros.core.chunking import ChunkedPolicy, ChunkExecutor, ChunkingConfig

H, A = 8, 2


def ramp(start: float, step: float = 1.0, length: int = H, dims: int = A) -> np.ndarray:
    """(length, dims): start, start + step, ... in every dimension."""
    return np.repeat((start + step * np.arange(length))[:, None], dims, axis=1)


def executor(**config) -> ChunkExecutor:
    return ChunkExecutor(ChunkingConfig(**config), H, A)


def run(ex: ChunkExecutor, ticks: int) -> list:
    return [ex.step() for _ in range(ticks)]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"replan_every": 0}, "replan_every must be an int >= 1"),
    ({"blend_ticks": -1}, "blend_ticks must be an int >= 0"),
    ({"ensemble_decay": float("nan")}, "ensemble_decay must be a finite number"),
    ({"on_starvation": "panic"}, "on_starvation must be 'hold' or 'none'"),
    ({"temporal_ensembling": 1}, "temporal_ensembling must be a bool"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChunkingConfig(**kwargs)


def test_replan_every_cannot_exceed_the_chunk():
    with pytest.raises(ValueError, match="replan_every must be <= the chunk length 8"):
        executor(replan_every=9)


def test_one_chunk_plays_in_order_then_asks_for_the_next():
    ex = executor(replan_every=3, blend_ticks=0)
    assert ex.needs_chunk() and ex.step().action is None  # nothing to play yet
    assert ex.add_chunk(ramp(0.0), obs_tick=ex.tick)
    assert not ex.needs_chunk()
    steps = run(ex, 3)
    assert [s.tick for s in steps] == [1, 2, 3]
    np.testing.assert_array_equal([s.action for s in steps], ramp(0.0)[:3])
    assert ex.needs_chunk()  # 3 actions of the chunk executed
    assert ex.ticks_left() == H - 3


def test_bad_chunks_are_refused():
    ex = executor()
    with pytest.raises(ValueError, match=r"shape \(8, 2\)"):
        ex.add_chunk(np.zeros((H, A + 1)), 0)
    with pytest.raises(ValueError, match="non-finite"):
        ex.add_chunk(np.full((H, A), np.nan), 0)
    with pytest.raises(ValueError, match="obs_tick must be an int <= the current tick 0"):
        ex.add_chunk(np.zeros((H, A)), 1)


def test_a_late_chunk_is_aligned_by_its_observation_tick():
    ex = executor(replan_every=2, blend_ticks=0)
    ex.add_chunk(ramp(0.0), 0)
    run(ex, 2)
    obs_tick = ex.tick  # 2: an inference starts here and takes 3 ticks
    assert ex.needs_chunk()
    run(ex, 3)  # ticks 2, 3, 4 keep playing the first chunk
    ex.add_chunk(ramp(100.0), obs_tick)
    step = ex.step()  # tick 5: the new chunk's action for 5 − 2 = 3 ticks after its observation
    assert step.tick == 5
    np.testing.assert_array_equal(step.action, ramp(100.0)[3])
    # Re-planning is timed from the observation, not the arrival: 2 ticks after tick 2 is tick 4 (passed).
    assert ex.needs_chunk()


def test_stale_and_out_of_order_chunks_are_dropped():
    ex = executor(replan_every=2, blend_ticks=0)
    ex.add_chunk(ramp(0.0), 0)
    run(ex, H + 1)  # tick 9 next; a chunk observed at 1 covers ticks 1..8 only
    assert not ex.add_chunk(ramp(5.0), 1)
    assert ex.add_chunk(ramp(10.0), 6)
    assert not ex.add_chunk(ramp(20.0), 5)  # older than the newest accepted chunk
    assert (ex.accepted, ex.dropped_stale) == (2, 2)
    np.testing.assert_array_equal(ex.step().action, ramp(10.0)[3])


def test_starvation_holds_the_last_action_and_is_reported():
    ex = executor(replan_every=4, blend_ticks=0)
    ex.add_chunk(ramp(0.0), 0)
    steps = run(ex, H + 3)
    assert not any(s.starved for s in steps[:H])
    assert all(s.starved and s.chunks == 0 for s in steps[H:])
    for s in steps[H:]:
        np.testing.assert_array_equal(s.action, ramp(0.0)[-1])
    assert ex.starved_ticks == 3 and ex.needs_chunk() and ex.ticks_left() == 0


def test_starvation_none_returns_no_action_and_resumes_without_a_jump():
    ex = executor(replan_every=4, blend_ticks=3, on_starvation="none")
    ex.add_chunk(ramp(0.0, 0.0), 0)  # constant 0
    steps = run(ex, H + 2)
    assert steps[-1].action is None and steps[-1].starved
    ex.add_chunk(ramp(4.0, 0.0), ex.tick)  # constant 4 arrives: fade from the held 0 over 3 ticks
    values = [s.action[0] for s in run(ex, 5)]
    np.testing.assert_allclose(values, [1.0, 2.0, 3.0, 4.0, 4.0])


def test_replan_cadence_through_the_synchronous_wrapper():
    class Recorder:
        def __init__(self) -> None:
            self.ticks: list[int] = []
            self.resets = 0

        def infer(self, obs):
            self.ticks.append(obs["tick"])
            return {"actions": ramp(float(obs["tick"])), "latency_ms": 1.5}

        def reset(self):
            self.resets += 1

    inner = Recorder()
    policy = ChunkedPolicy(inner, ChunkingConfig(replan_every=3, blend_ticks=0), H, A)
    outs = [policy.infer({"tick": t}) for t in range(10)]
    assert inner.ticks == [0, 3, 6, 9]
    # Each chunk starts at its observation tick t with value t: the output is the tick itself.
    np.testing.assert_array_equal([o["actions"][0] for o in outs], np.arange(10.0))
    assert [o["latency_ms"] for o in outs[:4]] == [1.5, 0.0, 0.0, 1.5]
    policy.reset()
    assert inner.resets == 1 and policy.executor.tick == 0 and policy.executor.needs_chunk()


@pytest.mark.parametrize("decay", [0.01, 0.0, 0.5, -1.0])
def test_ensembling_weights_are_act_exponentials_oldest_first(decay):
    ex = executor(replan_every=2, temporal_ensembling=True, ensemble_decay=decay, blend_ticks=0)
    values = [0.0, 10.0, 30.0]
    for k, value in enumerate(values):
        ex.add_chunk(np.full((H, A), value), ex.tick)
        step = ex.step() if k < 2 else None
        if k < 2:
            ex.step()
    step = ex.step()  # tick 5: chunks observed at 0, 2, 4 all cover it
    weights = np.exp(-decay * np.arange(3))
    np.testing.assert_allclose(step.action, np.dot(weights, values) / weights.sum())
    assert step.chunks == 3


def test_ensembling_every_tick_matches_act_formula():
    rng = np.random.default_rng(3)
    chunks = [rng.normal(size=(H, A)) for _ in range(20)]
    m = 0.1
    ex = executor(replan_every=1, temporal_ensembling=True, ensemble_decay=m, blend_ticks=0)
    for t in range(20):
        ex.add_chunk(chunks[t], t)
        got = ex.step().action
        preds = np.stack([chunks[s][t - s] for s in range(max(0, t - H + 1), t + 1)])  # oldest first
        w = np.exp(-m * np.arange(len(preds)))
        np.testing.assert_allclose(got, (w[:, None] * preds).sum(0) / w.sum())


def test_continuing_chunks_splice_with_no_artefact():
    # A new chunk that continues the same trajectory: the output is that trajectory, fades or not.
    trajectory = ramp(0.0, 0.5, length=40)
    for config in ({"blend_ticks": 3}, {"blend_ticks": 0}, {"temporal_ensembling": True, "blend_ticks": 2}):
        ex = executor(replan_every=3, **config)
        out = []
        for _ in range(30):
            if ex.needs_chunk():
                ex.add_chunk(trajectory[ex.tick : ex.tick + H], ex.tick)
            out.append(ex.step().action)
        np.testing.assert_allclose(out, trajectory[:30])


def _simulate(config: ChunkingConfig, chunks: dict[int, tuple[int, np.ndarray]], ticks: int) -> np.ndarray:
    """Run the executor, adding chunks[t] = (obs_tick, actions) at tick t; returns (ticks, A) outputs."""
    ex = ChunkExecutor(config, H, A)
    out = []
    for t in range(ticks):
        if t in chunks:
            ex.add_chunk(chunks[t][1], chunks[t][0])
        step = ex.step()
        out.append(step.action)
    return np.stack(out)


def _smooth_chunks(rng: np.random.Generator, arrivals: list[int], latency: int, step: float, offset: float):
    """Random-walk chunks (|step| ≤ step per tick) whose starts differ by up to `offset` from each other."""
    chunks = {}
    for t in arrivals:
        start = rng.uniform(-offset, offset, A)
        steps = rng.uniform(-step, step, (H - 1, A))
        chunks[t + latency] = (t, np.vstack([start, start + np.cumsum(steps, axis=0)]))
    return chunks


def _splice_bound(chunks, blend: int) -> np.ndarray:
    """2 × the largest per-dimension step inside any chunk + the largest gap between two plans / (B + 1).

    At a splice out moves by one plan's own step (≤ S) plus δ/(B + 1), and |δ| ≤ gap + one more
    step (the old plan's continuation), so |Δout| ≤ S + (gap + S)/(B + 1) ≤ 2 S + gap/(B + 1).
    """
    acts = [c for _, c in chunks.values()]
    max_step = np.max([np.abs(np.diff(c, axis=0)).max(0) for c in acts], axis=0)
    values = np.concatenate(acts)
    gap = values.max(0) - values.min(0)
    return 2 * max_step + gap / (blend + 1)


@pytest.mark.parametrize("ensembling", [False, True])
@pytest.mark.parametrize("blend", [1, 3, 6])
@pytest.mark.parametrize("seed", range(3))
def test_step_at_a_splice_is_bounded_by_chunk_steps_plus_spread_gap(ensembling, blend, seed):
    rng = np.random.default_rng(seed)
    chunks = _smooth_chunks(rng, arrivals=[0, 3, 6, 9, 12, 15], latency=2, step=0.1, offset=2.0)
    chunks[0] = (0, chunks.pop(2)[1])  # the first chunk is there at tick 0
    config = ChunkingConfig(replan_every=3, temporal_ensembling=ensembling, blend_ticks=blend)
    out = _simulate(config, chunks, 24)
    deltas = np.abs(np.diff(out, axis=0))
    assert (deltas <= _splice_bound(chunks, blend) + 1e-9).all()
    # Without blending the same splices jump by the whole gap between the plans: the bound is not vacuous.
    hard = np.abs(np.diff(_simulate(ChunkingConfig(replan_every=3, temporal_ensembling=ensembling, blend_ticks=0),
                                    chunks, 24), axis=0))
    assert hard.max() > deltas.max()
    if blend >= 3:
        assert (hard > _splice_bound(chunks, blend)).any()


def test_fade_spreads_a_gap_evenly():
    ex = executor(replan_every=4, blend_ticks=3)
    ex.add_chunk(np.zeros((H, A)), 0)
    run(ex, 4)
    ex.add_chunk(np.full((H, A), 8.0), ex.tick)
    values = [s.action[0] for s in run(ex, 5)]
    np.testing.assert_allclose(values, [2.0, 4.0, 6.0, 8.0, 8.0])
    assert np.abs(np.diff([0.0, *values])).max() == pytest.approx(8.0 / 4)


def test_overlapping_splices_when_chunks_arrive_every_tick():
    # A new (constant) plan every tick, each 1.0 above the last: the output climbs smoothly behind them.
    ex = executor(replan_every=1, blend_ticks=3)
    out = []
    for t in range(16):
        ex.add_chunk(np.full((H, A), float(t)), t)
        out.append(ex.step().action[0])
    steps = np.diff(out)
    assert np.all(steps > 0) and steps.max() <= 1.0 + 1e-9
    assert np.all(np.array(out[1:]) < np.arange(1, 16))  # behind the newest plan, never past it
    assert steps[0] == pytest.approx(0.25)  # the first splice: a gap of 1 spread over 4 ticks


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), blend=st.integers(0, 5), replan=st.integers(1, H), latency=st.integers(0, 6),
       ensembling=st.booleans())
def test_executor_stays_finite_and_near_the_chunks_whatever_the_timing(seed, blend, replan, latency, ensembling):
    """Each action lies in the chunks' range, widened by at most B steps (the carried velocity of a blend)."""
    rng = np.random.default_rng(seed)
    ex = ChunkExecutor(ChunkingConfig(replan_every=replan, blend_ticks=blend, temporal_ensembling=ensembling),
                       H, A)
    pending: list[tuple[int, int]] = []  # (arrival tick, obs tick)
    lo, hi = np.full(A, np.inf), np.full(A, -np.inf)
    for t in range(30):
        for _arrival, obs in [p for p in pending if p[0] == t]:
            chunk = np.cumsum(rng.uniform(-0.1, 0.1, (H, A)), axis=0) + rng.uniform(-1, 1, A)
            lo, hi = np.minimum(lo, chunk.min(0)), np.maximum(hi, chunk.max(0))
            ex.add_chunk(chunk, obs)
        pending = [p for p in pending if p[0] > t]
        if ex.needs_chunk() and not pending:
            pending.append((t + latency, t))
        step = ex.step()
        if step.action is not None:
            assert np.isfinite(step.action).all()
            slack = 0.1 * blend + 1e-9
            assert (step.action >= lo - slack).all() and (step.action <= hi + slack).all()


def test_reset_forgets_everything():
    ex = executor()
    ex.add_chunk(ramp(0.0), 0)
    run(ex, H + 2)
    ex.reset()
    assert ex.tick == 0 and ex.needs_chunk() and ex.starved_ticks == 0 and ex.accepted == 0
    assert ex.step().action is None
