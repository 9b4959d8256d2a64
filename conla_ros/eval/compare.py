"""Compare `conla eval sim --json` reports: a per-task success table and paired sign tests.

    python -m conla_ros.eval.compare runs/recipe/*/eval.json

Rows are named after the report's folder (runs/recipe/NAME/eval.json → NAME; other files by their
own name: r1_eval.json → r1_eval). Two reports are
paired episode by episode on (task, seed): the sign test counts the episodes one row won and the
other lost, and gives the exact two-sided binomial p-value under "both rows equally good".
Rows named `X_seedN` are also pooled with row X into a mean ± sample standard deviation over
training seeds.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

__all__ = ["load_report", "main", "seed_summary", "sign_test", "success_table"]


def load_report(path: Path) -> dict:
    """One eval report as {"name", "episodes": {(task, seed): success}, "tasks": [...]}."""
    data = json.loads(Path(path).read_text())
    episodes = {(e["task"], int(e["seed"])): bool(e["success"]) for e in data["episodes"]}
    tasks = list(dict.fromkeys(e["task"] for e in data["episodes"]))
    path = Path(path)
    name = path.parent.name if path.name == "eval.json" else path.stem
    return {"name": name, "episodes": episodes, "tasks": tasks}


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test p-value for `wins` against `losses` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _rates(report: dict, tasks: list[str]) -> list[float]:
    return [float(np.mean([v for (t, _), v in report["episodes"].items() if t == task] or [np.nan]))
            for task in tasks]


def success_table(reports: list[dict]) -> str:
    """Per-task success of every report (columns), with the mean row."""
    tasks = list(dict.fromkeys(t for r in reports for t in r["tasks"]))
    width = max(len(t) for t in [*tasks, "mean"])
    names = [r["name"] for r in reports]
    cols = [max(len(n), 5) for n in names]
    lines = ["task".ljust(width) + "  " + "  ".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    rates = [_rates(r, tasks) for r in reports]
    for i, task in enumerate(tasks):
        cells = [f"{100 * rate[i]:.0f}%".rjust(c) for rate, c in zip(rates, cols, strict=True)]
        lines.append(task.ljust(width) + "  " + "  ".join(cells))
    means = [f"{100 * np.nanmean(rate):.1f}%".rjust(c) for rate, c in zip(rates, cols, strict=True)]
    lines.append("mean".ljust(width) + "  " + "  ".join(means))
    return "\n".join(lines)


def paired(a: dict, b: dict) -> tuple[int, int, int]:
    """(episodes a won and b lost, the reverse, episodes both ran) on their shared (task, seed) keys."""
    keys = a["episodes"].keys() & b["episodes"].keys()
    wins = sum(a["episodes"][k] and not b["episodes"][k] for k in keys)
    losses = sum(b["episodes"][k] and not a["episodes"][k] for k in keys)
    return wins, losses, len(keys)


def seed_summary(reports: list[dict]) -> dict[str, list[float]]:
    """{row: [mean success of each training seed]} for rows X and X_seedN."""
    groups: dict[str, list[float]] = {}
    for r in reports:
        base = re.sub(r"_seed\d+$", "", r["name"])
        groups.setdefault(base, []).append(float(np.mean(list(r["episodes"].values()))))
    return groups


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m conla_ros.eval.compare EVAL.json [EVAL.json ...]", file=sys.stderr)
        return 2
    reports = [load_report(p) for p in paths]
    print(success_table(reports))
    first = reports[0]
    print(f"\npaired sign tests against {first['name']} (won : lost, of shared episodes):")
    for other in reports[1:]:
        won, lost, n = paired(first, other)
        print(f"  {first['name']} vs {other['name']}: {won} : {lost} of {n}, p = {sign_test(won, lost):.3g}")
    groups = {k: v for k, v in seed_summary(reports).items() if len(v) > 1}
    for name, means in groups.items():
        print(f"\n{name} over {len(means)} training seeds: mean {100 * np.mean(means):.1f}% ± "
              f"{100 * np.std(means, ddof=1):.1f} (seeds: {', '.join(f'{100 * m:.0f}%' for m in means)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
