"""The one policy interface: `infer(obs) -> dict` and `reset()`, as openpi's policies have.

Every policy speaks it: the ONNX model (`conla_ros.core.runtime.OnnxPolicy`, a chunk (H, A) per
call), `conla_ros.core.chunking.ChunkedPolicy` stacked on any chunk policy (one action (A,) per
call), Meta-World's scripted expert (`conla_ros.sim.expert.ScriptedExpertPolicy`) and
`RandomPolicy` here (one action per call). `conla eval sim`, `conla eval ros` (through
policy_node), policy_node and the benches all call these two methods, and wrappers stack because
a wrapper is a policy too: it calls `infer` and `reset` of the policy it wraps.

Observation keys are the `OBS_*` constants, result keys the `OUT_*` constants; a policy ignores
keys it does not use, so one observation dict serves every policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["OBS_IMAGE", "OBS_INSTRUCTION", "OBS_PROPRIO", "OUT_ACTIONS", "OUT_LATENCY_MS", "Policy", "RandomPolicy"]

OBS_IMAGE = "image"  # (H, W, 3) uint8 RGB
OBS_INSTRUCTION = "instruction"  # str
OBS_PROPRIO = "proprio"  # (P,) numbers, robot units, in model.yaml proprio.names order
OUT_ACTIONS = "actions"  # (H, A) float64 chunk or (A,) one action, robot units
OUT_LATENCY_MS = "latency_ms"  # float: the whole infer call


@runtime_checkable
class Policy(Protocol):
    """What every consumer of a policy calls."""

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The result for one observation; `OUT_ACTIONS` holds the action(s) in robot units."""
        ...

    def reset(self) -> None:
        """Forget per-episode state; called before every episode."""
        ...


class RandomPolicy:
    """Uniform random actions in [-1, 1], one per call: the floor any learned policy must clear."""

    name = "random"

    def __init__(self, seed: int = 0, action_dim: int = 4) -> None:
        self._rng = np.random.default_rng(seed)
        self._action_dim = action_dim

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """{'actions': one random action (A,)}."""
        return {OUT_ACTIONS: self._rng.uniform(-1.0, 1.0, size=self._action_dim)}

    def reset(self) -> None:
        """Nothing to reset: the stream goes on, so episodes differ."""
