"""Reading policy_node's `/diagnostics` from outside: its reports as dicts, and the latency figures.

The node publishes one `DiagnosticStatus` named `<node name>: policy` at 1 Hz whose key/value
pairs are its `status()` (conla_ros.nodes.policy_node): strings, numbers formatted with three
decimals, "n/a" when a figure has no samples yet. `conla bench node` and `conla eval ros` both
read it through this module, so they agree on what a report is and which figures are latency.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["POLICY_STATUS_SUFFIX", "LatencySummary", "PolicyDiagnostics", "aligned", "number", "policy_reports"]

POLICY_STATUS_SUFFIX = ": policy"  # policy_node names its status "<node name>: policy"


def policy_reports(msg: Any) -> list[dict[str, str]]:
    """The policy statuses of one `diagnostic_msgs/DiagnosticArray`, each as {key: value text}."""
    return [{kv.key: kv.value for kv in status.values} for status in msg.status
            if status.name.endswith(POLICY_STATUS_SUFFIX)]


def number(report: dict[str, str], key: str) -> float | None:
    """A numeric figure of a report; None when it is missing or "n/a" (no samples yet)."""
    try:
        return float(report[key])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class LatencySummary:
    """The node's latency and control-rate figures, in ms and Hz (None: not measured)."""

    inference_p50_ms: float | None
    inference_p99_ms: float | None
    image_to_command_p50_ms: float | None
    image_to_command_p99_ms: float | None
    control_rate_hz: float | None
    control_rate_target_hz: float | None
    missed_ticks: int | None
    starved_ticks: int | None

    @classmethod
    def from_reports(cls, reports: list[dict[str, str]]) -> LatencySummary:
        """Summarise reports of one run: percentiles from the last one (the node's windows accumulate),
        the achieved control rate as the median of every report's (each covers the last 2 s)."""
        last = reports[-1] if reports else {}
        rates = [r for r in (number(report, "control_rate_hz") for report in reports) if r is not None and r > 0]

        def count(key: str) -> int | None:
            value = number(last, key)
            return None if value is None else int(value)

        return cls(
            inference_p50_ms=number(last, "inference_p50_ms"), inference_p99_ms=number(last, "inference_p99_ms"),
            image_to_command_p50_ms=number(last, "image_to_command_p50_ms"),
            image_to_command_p99_ms=number(last, "image_to_command_p99_ms"),
            control_rate_hz=round(statistics.median(rates), 2) if rates else None,
            control_rate_target_hz=number(last, "control_rate_target_hz"),
            missed_ticks=count("missed_ticks"), starved_ticks=count("starved_ticks"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs for a terminal table."""

        def ms(p50: float | None, p99: float | None) -> str:
            return f"{_fmt(p50)} / {_fmt(p99)} ms"

        return [("inference p50 / p99", ms(self.inference_p50_ms, self.inference_p99_ms)),
                ("image -> command p50 / p99", ms(self.image_to_command_p50_ms, self.image_to_command_p99_ms)),
                ("control rate achieved / target",
                 f"{_fmt(self.control_rate_hz)} / {_fmt(self.control_rate_target_hz)} Hz"),
                ("missed / starved ticks", f"{_fmt(self.missed_ticks)} / {_fmt(self.starved_ticks)}")]

    def lines(self) -> list[str]:
        """Aligned "figure  value" lines for a terminal."""
        return aligned(self.rows())


def aligned(rows: list[tuple[str, str]]) -> list[str]:
    """(name, value) rows as lines with the values in one column."""
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{name:<{width}}  {value}" for name, value in rows]


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.1f}"


class PolicyDiagnostics:
    """Collects policy_node's reports from `/diagnostics` on `node` (spin the node to receive them)."""

    def __init__(self, node: Any, topic: str = "/diagnostics") -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.reports: list[dict[str, str]] = []
        node.create_subscription(DiagnosticArray, topic, self._on_message, 10)

    def _on_message(self, msg: Any) -> None:
        self.reports.extend(policy_reports(msg))

    @property
    def latest(self) -> dict[str, str] | None:
        """The newest report, or None before the first."""
        return self.reports[-1] if self.reports else None
