"""Comparing saved `conla eval sim --json` reports: row names, pairing by episode, sign tests, seed pooling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conla_ros.eval.compare import load_report, main, paired, pooled_paired, seed_summary, sign_test, success_table
from conla_ros.eval.report import EpisodeResult, EvalReport


def write_report(path: Path, outcomes: dict[tuple[str, int], bool]) -> Path:
    """An EvalReport JSON file with one episode per (task, seed) -> success, as `conla eval sim --json` writes it."""
    episodes = tuple(EpisodeResult(task=task, seed=seed, instruction=f"do {task}", success=success, length=10)
                     for (task, seed), success in outcomes.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EvalReport(policy="test", episodes=episodes).to_json() + "\n")
    return path


def test_sign_test_is_the_exact_two_sided_binomial_p_value() -> None:
    assert sign_test(0, 0) == 1.0  # no episode told the rows apart
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(0, 5) == sign_test(5, 0)
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert sign_test(3, 3) == 1.0  # capped: the two tails overlap


def test_rows_are_named_after_their_folder_or_file_and_paired_by_task_and_seed(tmp_path: Path) -> None:
    base = load_report(write_report(tmp_path / "recipe" / "eval.json",
                                    {("reach", 1): True, ("reach", 2): False, ("push", 1): True}))
    other = load_report(write_report(tmp_path / "r1_eval.json",
                                     {("reach", 1): False, ("reach", 2): False, ("push", 1): True, ("push", 9): True}))
    assert (base["name"], other["name"]) == ("recipe", "r1_eval")
    assert base["tasks"] == ["reach", "push"]
    assert paired(base, other) == (1, 0, 3)  # push seed 9 ran in one report only: not paired
    assert paired(other, base) == (0, 1, 3)
    table = success_table([base, other]).splitlines()
    assert table[0].split() == ["task", "recipe", "r1_eval"]
    assert table[1].split() == ["reach", "50%", "0%"] and table[2].split() == ["push", "100%", "100%"]
    assert table[-1].split() == ["mean", "75.0%", "50.0%"]


def test_seed_rows_pool_with_their_base_row(tmp_path: Path) -> None:
    reports = [load_report(write_report(tmp_path / name / "eval.json", outcomes)) for name, outcomes in [
        ("px64", {("reach", 1): True, ("reach", 2): True}),
        ("px64_seed1", {("reach", 1): True, ("reach", 2): False}),
        ("bins", {("reach", 1): False, ("reach", 2): False}),
    ]]
    assert seed_summary(reports) == {"px64": [1.0, 0.5], "bins": [0.0]}


def test_main_prints_the_table_sign_tests_and_seed_means(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "usage: python -m conla_ros.eval.compare" in capsys.readouterr().err
    paths = [write_report(tmp_path / "a" / "eval.json", {("reach", s): True for s in range(4)}),
             write_report(tmp_path / "a_seed1" / "eval.json", {("reach", s): s < 2 for s in range(4)})]
    assert main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "a vs a_seed1: 2 : 0 of 4, p = 0.5" in out
    assert "a over 2 training seeds: mean 75.0%" in out


def test_it_runs_as_the_module_the_ablation_script_calls(tmp_path: Path) -> None:
    path = write_report(tmp_path / "row" / "eval.json", {("reach", 1): True})
    result = subprocess.run([sys.executable, "-m", "conla_ros.eval.compare", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["task", "row"]


def test_seed_groups_are_paired_seed_by_seed_and_pooled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    outcomes = {  # row -> successes on reach seeds 0..3
        "a": [1, 1, 0, 0], "a_seed1": [1, 0, 0, 0],
        "b": [0, 0, 0, 0], "b_seed1": [1, 1, 1, 0], "b_seed2": [1, 1, 1, 1],
    }
    paths = [write_report(tmp_path / name / "eval.json", {("reach", s): bool(v) for s, v in enumerate(values)})
             for name, values in outcomes.items()]
    reports = [load_report(p) for p in paths]
    # seed 0: a wins 2, b wins 0; seed 1: a wins 0, b wins 2; b_seed2 has no partner.
    assert pooled_paired(reports, "a", "b") == (2, 2, [0, 1])
    assert main([str(p) for p in paths]) == 0
    assert "a vs b, pooled over seeds 0, 1: 2 : 2, p = 1" in capsys.readouterr().out


def test_a_missing_report_is_named_in_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope" / "eval.json")]) == 2
    err = capsys.readouterr().err
    assert "no eval report at" in err and "nope/eval.json" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
