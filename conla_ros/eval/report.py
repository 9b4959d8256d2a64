"""What an evaluation measured: one `EpisodeResult` per episode, the `EvalReport` over them.

`conla eval sim` and `conla eval ros` both produce an `EvalReport`, so their tables and JSON
files have one layout and can be compared line by line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EpisodeResult", "EvalReport", "write_report_files"]


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode."""

    task: str
    seed: int
    instruction: str
    success: bool
    length: int  # control steps taken: to the first success, or max_steps


@dataclass(frozen=True)
class EvalReport:
    """Everything an evaluation measured, per episode; per-task figures are derived from it."""

    policy: str
    episodes: tuple[EpisodeResult, ...]
    config: dict[str, Any] = field(default_factory=dict)  # the WorldConfig used, as plain values

    @property
    def tasks(self) -> tuple[str, ...]:
        """The evaluated tasks, in the order they were run."""
        return tuple(dict.fromkeys(e.task for e in self.episodes))

    def _of(self, task: str) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.task == task]

    @property
    def success_rate(self) -> dict[str, float]:
        """Fraction of successful episodes per task."""
        return {t: float(np.mean([e.success for e in self._of(t)])) for t in self.tasks}

    @property
    def mean_success(self) -> float:
        """Mean of the per-task success rates (each task weighs the same)."""
        rates = list(self.success_rate.values())
        return float(np.mean(rates)) if rates else 0.0

    @property
    def episode_counts(self) -> dict[str, int]:
        """Episodes run per task."""
        return {t: len(self._of(t)) for t in self.tasks}

    @property
    def mean_length(self) -> dict[str, float]:
        """Mean episode length per task, in control steps (failures count max_steps)."""
        return {t: float(np.mean([e.length for e in self._of(t)])) for t in self.tasks}

    def table(self) -> str:
        """An aligned text table: one row per task and a mean row."""
        header = ("task", "success", "episodes", "mean length")
        rows = [
            (t, f"{100 * self.success_rate[t]:.0f}%", str(self.episode_counts[t]), f"{self.mean_length[t]:.1f}")
            for t in self.tasks
        ]
        lengths = [e.length for e in self.episodes]
        rows.append(("mean", f"{100 * self.mean_success:.1f}%", str(len(self.episodes)),
                     f"{np.mean(lengths):.1f}" if lengths else "-"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            # Task names left-aligned, numbers right-aligned.
            padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
            return "  ".join(padded)

        rule = "  ".join("-" * w for w in widths)
        title = f"policy: {self.policy}"
        return "\n".join([title, line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values: summary figures, the config and every episode."""
        return {
            "policy": self.policy,
            "mean_success": self.mean_success,
            "success_rate": self.success_rate,
            "episodes_per_task": self.episode_counts,
            "mean_length": self.mean_length,
            "config": self.config,
            "episodes": [asdict(e) for e in self.episodes],
        }

    def to_json(self) -> str:
        """`to_dict()` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def write_report_files(json_path: Path | None, json_text: str, video_path: Path | None) -> None:
    """The closing lines of `conla eval sim|ros`: write the JSON report if asked, say where files went."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json_text + "\n")
        print(f"report written to {json_path}")
    if video_path is not None:
        print(f"rollouts written to {video_path}")
