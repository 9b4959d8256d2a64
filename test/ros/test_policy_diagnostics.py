"""conla_ros.ros.policy_diagnostics: policy_node's /diagnostics read from outside (bench node, eval ros)."""

from __future__ import annotations

from types import SimpleNamespace

from conla_ros.ros.policy_diagnostics import LatencySummary, aligned, number, policy_reports


def _array(*statuses: tuple[str, dict[str, str]]) -> SimpleNamespace:
    """A DiagnosticArray look-alike (name, values) without importing the message package."""
    return SimpleNamespace(status=[SimpleNamespace(name=name, values=[SimpleNamespace(key=k, value=v)
                                                                      for k, v in values.items()])
                                   for name, values in statuses])


def test_only_policy_statuses_are_taken_whatever_the_node_is_called() -> None:
    msg = _array(("arm1_policy: policy", {"state": "running"}), ("camera_driver", {"state": "ok"}),
                 ("policy_node: policy", {"state": "disabled"}))
    assert policy_reports(msg) == [{"state": "running"}, {"state": "disabled"}]


def test_numbers_and_missing_figures() -> None:
    report = {"inference_p50_ms": "0.412", "inference_p99_ms": "n/a"}
    assert number(report, "inference_p50_ms") == 0.412
    assert number(report, "inference_p99_ms") is None and number(report, "absent") is None


def test_latency_from_the_last_report_and_the_median_control_rate() -> None:
    reports = [
        {"control_rate_hz": "0.000", "inference_p50_ms": "n/a"},  # before the first tick: not a rate
        {"control_rate_hz": "79.000", "inference_p50_ms": "1.000"},
        {"control_rate_hz": "80.000", "inference_p50_ms": "0.900", "inference_p99_ms": "4.000",
         "image_to_command_p50_ms": "6.000", "image_to_command_p99_ms": "14.000", "control_rate_target_hz": "80.000",
         "missed_ticks": "3", "starved_ticks": "0"},
        {"control_rate_hz": "78.000", "inference_p50_ms": "0.800", "inference_p99_ms": "4.500",
         "image_to_command_p50_ms": "6.500", "image_to_command_p99_ms": "15.000", "control_rate_target_hz": "80.000",
         "missed_ticks": "4", "starved_ticks": "1"},
    ]
    summary = LatencySummary.from_reports(reports)
    assert (summary.inference_p50_ms, summary.inference_p99_ms) == (0.8, 4.5)
    assert (summary.image_to_command_p50_ms, summary.image_to_command_p99_ms) == (6.5, 15.0)
    assert summary.control_rate_hz == 79.0 and summary.control_rate_target_hz == 80.0
    assert (summary.missed_ticks, summary.starved_ticks) == (4, 1)
    lines = summary.lines()
    assert lines[0].split() == ["inference", "p50", "/", "p99", "0.8", "/", "4.5", "ms"]
    width = max(len(name) for name, _ in summary.rows())
    assert all(line[width:width + 2] == "  " and line[width + 2] != " " for line in lines)  # one value column


def test_no_reports_give_no_figures() -> None:
    summary = LatencySummary.from_reports([])
    assert summary.control_rate_hz is None and summary.inference_p50_ms is None
    assert "n/a / n/a ms" in summary.lines()[0]
    assert aligned([]) == []
