"""Meta-World's scripted expert as a policy (`infer(obs) -> dict`, `reset()`).

It reads the privileged state (`obs["state"]`, Meta-World's 39-D vector) and the task
(`obs["task"]`), which only the simulator has: the reference row of every evaluation table, and
the teleoperator of `scripted_teleop_node`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from conla_ros.core.policy import OUT_ACTIONS
from conla_ros.sim.instructions import check_task

__all__ = ["ScriptedExpertPolicy"]


class ScriptedExpertPolicy:
    """Meta-World's scripted expert for the task in `obs["task"]`: one action (4,) per call."""

    name = "scripted expert"

    def __init__(self) -> None:
        self._policies: dict[str, Any] = {}

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """{'actions': the expert's action (4,) for `obs["state"]`}."""
        import warnings

        from metaworld.policies import ENV_POLICY_MAP

        task = obs["task"]
        if task not in self._policies:
            self._policies[task] = ENV_POLICY_MAP[f"{check_task(task)}-v3"]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            return {OUT_ACTIONS: np.asarray(self._policies[task].get_action(obs["state"]), dtype=np.float64)}

    def reset(self) -> None:
        """Nothing to forget: the expert is a function of the state."""
