"""Compare `conla eval sim --json` reports: a per-task success table and paired sign tests.

    python -m conla_ros.eval.compare runs/recipe/*/eval.json

Rows are named after the report's folder (runs/recipe/NAME/eval.json → NAME; other files by their
own name: r1_eval.json → r1_eval). Two reports are
paired episode by episode on (task, seed): the sign test counts the episodes one row won and the
other lost, and gives the exact two-sided binomial p-value under "both rows equally good".
Rows named `X_seedN` are also pooled with row X into a mean ± sample standard deviation over
training seeds, and two such groups are compared seed by seed: the episodes of X_seedN are paired
with those of Y_seedN (X itself is seed 0), and the wins and losses are summed over the seeds both
groups have, one sign test on the pooled counts.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

__all__ = ["load_report", "main", "pooled_paired", "seed_summary", "sign_test", "success_table"]

_SEED = re.compile(r"_seed(\d+)$")


def load_report(path: Path) -> dict:
    """One eval report as {"name", "episodes": {(task, seed): success}, "tasks": [...]}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no eval report at {path} (write one with `conla eval sim --json`)")
    data = json.loads(path.read_text())
    episodes = {(e["task"], int(e["seed"])): bool(e["success"]) for e in data["episodes"]}
    tasks = list(dict.fromkeys(e["task"] for e in data["episodes"]))
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


def _group_and_seed(name: str) -> tuple[str, int]:
    """"X_seedN" -> ("X", N); any other name is its own group at seed 0."""
    match = _SEED.search(name)
    return (name[:match.start()], int(match.group(1))) if match else (name, 0)


def seed_summary(reports: list[dict]) -> dict[str, list[float]]:
    """{row: [mean success of each training seed]} for rows X and X_seedN."""
    groups: dict[str, list[float]] = {}
    for r in reports:
        base, _ = _group_and_seed(r["name"])
        groups.setdefault(base, []).append(float(np.mean(list(r["episodes"].values()))))
    return groups


def pooled_paired(reports: list[dict], a: str, b: str) -> tuple[int, int, list[int]]:
    """Groups `a` and `b` compared seed by seed: (wins of a, wins of b, the seeds both have), summed."""
    by_seed: dict[str, dict[int, dict]] = {}
    for r in reports:
        group, seed = _group_and_seed(r["name"])
        by_seed.setdefault(group, {})[seed] = r
    seeds = sorted(by_seed.get(a, {}).keys() & by_seed.get(b, {}).keys())
    wins = losses = 0
    for seed in seeds:
        won, lost, _ = paired(by_seed[a][seed], by_seed[b][seed])
        wins, losses = wins + won, losses + lost
    return wins, losses, seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conla_ros.eval.compare", description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="*", type=Path, help="`conla eval sim --json` files (the first is the base)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.reports:
        print("usage: python -m conla_ros.eval.compare EVAL.json [EVAL.json ...]", file=sys.stderr)
        return 2
    try:
        reports = [load_report(p) for p in args.reports]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
    base_group = _group_and_seed(first["name"])[0]
    for group in dict.fromkeys(_group_and_seed(r["name"])[0] for r in reports):
        won, lost, seeds = pooled_paired(reports, base_group, group)
        if group != base_group and len(seeds) > 1:
            print(f"  {base_group} vs {group}, pooled over seeds {', '.join(map(str, seeds))}: {won} : {lost}, "
                  f"p = {sign_test(won, lost):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
