"""`conla bench policy --model models/NAME`: policy step latency on CPU, onnxruntime against torch eager.

    conla bench policy --model models/NAME [--threads 1,2] [--iterations 300] [--warmup 30] [--json]

For each thread count (default 1 and 2) it times, on the same inputs (a synthetic 640×480 camera
frame preprocessed once, the instruction embedding from the model's own encoder, zero proprio):
  - onnxruntime: `session.run` of policy.onnx (CPUExecutionProvider, intra_op_num_threads = N, the
    session `conla_ros.core.runtime.load_policy` builds) — the policy step;
  - torch eager: `VLA.predict_actions` (the exported computation) of the checkpoint the model was
    exported from (model.yaml `provenance.checkpoint`, or `--checkpoint`), under
    `torch.inference_mode()` with `torch.set_num_threads(N)`;
  - runtime `infer()`: the whole robot-side call (preprocessing 640×480 → model input, cached
    instruction embedding, policy.onnx, output checks), for context.
Each row runs alone (`--warmup` untimed calls, then `--iterations` timed ones; not interleaved, see
`_time_rows`); p50/p99/mean in ms. On a shared machine, look at the printed load average.
Also printed: the onnxruntime/torch p50 ratio per thread count, the largest difference between the
two outputs (they must agree), the sizes of policy.onnx, the text encoder and the checkpoint, and
whether the issue's goal for the small model is met: onnxruntime p50 ≤ 3 ms with 2 threads and ≥ 2×
faster than torch eager. That is information: the exit code is 0 either way (1 only for a model
directory that cannot be loaded).

When the checkpoint (or torch) is not available, only the onnxruntime rows are printed, with the
reason (the missing path). torch is imported inside `run` only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conla_training.engine.command import command_main

__all__ = ["GOAL_P50_MS", "GOAL_SPEEDUP", "GOAL_THREADS", "add_arguments", "find_checkpoint", "run"]

GOAL_P50_MS = 3.0  # onnxruntime policy step p50 on 2 threads, small model
GOAL_SPEEDUP = 2.0  # torch eager p50 / onnxruntime p50
GOAL_THREADS = 2
PARITY_TOLERANCE = 1e-4  # as `conla export --checkpoint`
PAUSE_S = 0.3  # between rows
_PROVENANCE = re.compile(r"^(?P<path>.*?)(?: \(step (?P<step>[^)]*)\))?$")  # export writes "PATH (step N)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla bench policy`."""
    parser.add_argument("--model", type=Path, required=True, help="exported model directory (models/NAME)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="torch checkpoint for the eager rows (default: model.yaml provenance.checkpoint)")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts, comma-separated (default: 1,2)")
    parser.add_argument("--iterations", type=int, default=300, help="timed calls per row (default: 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per row first (default: 30)")
    parser.add_argument("--size", default="640x480", help="camera frame WIDTHxHEIGHT for infer() (default: 640x480)")
    parser.add_argument("--instruction", default="pick up the red block", help="instruction text")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")


def find_checkpoint(recorded: str | None, model_dir: Path) -> tuple[Path | None, str]:
    """The checkpoint.pt named by model.yaml `provenance.checkpoint` ("PATH (step N)"), without torch.

    Returns (file, note) or (None, why not). A run folder resolves to its `checkpoints/step_<N>` (the
    exported step) when it is still there, else to its newest checkpoint (and the note says so).
    """
    if not recorded or not str(recorded).strip():
        return None, "model.yaml provenance.checkpoint is empty"
    match = _PROVENANCE.match(str(recorded).strip())
    raw, step = (match.group("path"), match.group("step")) if match else (str(recorded), None)
    candidates = [Path(raw).expanduser()]
    if not candidates[0].is_absolute():
        candidates.append(model_dir / candidates[0])  # a path relative to the model directory
    for path in candidates:
        if path.is_file():
            return path, ""
        if (path / "checkpoint.pt").is_file():
            return path / "checkpoint.pt", ""
        steps = path / "checkpoints"
        if step is not None and step.isdigit() and (steps / f"step_{int(step):08d}" / "checkpoint.pt").is_file():
            return steps / f"step_{int(step):08d}" / "checkpoint.pt", ""
        found = sorted((int(p.name[5:]), p / "checkpoint.pt") for p in steps.glob("step_*")
                       if p.name[5:].isdigit() and (p / "checkpoint.pt").is_file()) if steps.is_dir() else []
        if found:
            note = f"step {step} is gone; using the newest, step {found[-1][0]}" if step else ""
            return found[-1][1], note
    return None, f"checkpoint not found: {raw} (model.yaml provenance.checkpoint: {recorded!r})"


def _parse_threads(text: str) -> list[int]:
    try:
        threads = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        raise SystemExit(f"--threads {text!r}: expected positive integers separated by commas, e.g. 1,2")
    return list(dict.fromkeys(threads))


def _stats(ms: list[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(ms, dtype=np.float64)
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(values.mean()), "n": len(ms)}


def _time_rows(rows: dict[str, Callable[[], Any]], iterations: int, warmup: int) -> dict[str, dict[str, float]]:
    """Each row alone: a pause, `warmup` untimed calls, then `iterations` timed calls.

    Rows are not interleaved call by call: onnxruntime's and torch's (OpenMP) worker threads spin
    for a while after each call, and on a 2-core machine the other library's spinning threads would
    be timed too (measured: onnxruntime 2 threads p50 1.5 ms alone, ~5 ms interleaved with torch).
    """
    figures = {}
    for name, fn in rows.items():
        time.sleep(PAUSE_S)  # let the previous row's spinning worker threads go to sleep
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        figures[name] = _stats(times)
    return figures


def _size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None and path.is_file() else None


def _load_torch(checkpoint: Path | None, why: str) -> tuple[Any, Any, str]:
    """(torch module, VLA model) or (None, None, why not)."""
    if checkpoint is None:
        return None, None, why
    try:
        import torch

        from conla_training.trainers.vla import load_vla
    except ImportError as error:
        return None, None, f"torch eager needs the training extra ({error.name} is not installed)"
    try:
        model, _ = load_vla(checkpoint)
    except Exception as error:  # a broken or foreign checkpoint: report it, bench the ONNX side anyway
        return None, None, f"{checkpoint}: cannot load the VLA checkpoint: {error}"
    return torch, model, ""


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import onnxruntime

    from conla_ros.core.model_spec import load_model_spec
    from conla_ros.core.preprocessing import preprocess_image
    from conla_ros.core.runtime import load_policy

    threads = _parse_threads(args.threads)
    iterations, warmup = max(int(args.iterations), 1), max(int(args.warmup), 0)
    try:
        width, height = (int(v) for v in str(args.size).lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    try:
        load = [round(v, 2) for v in os.getloadavg()]  # before this process adds its own
    except OSError:
        load = None
    model_dir = Path(args.model)
    spec = load_model_spec(model_dir)
    if args.checkpoint is not None:
        checkpoint, note = find_checkpoint(str(args.checkpoint), Path.cwd())
        if checkpoint is None:
            note = f"checkpoint not found: {args.checkpoint} (--checkpoint)"
    else:
        checkpoint, note = find_checkpoint(spec.provenance.checkpoint, model_dir)
    torch, model, torch_why = _load_torch(checkpoint, note)
    if model is not None and model.config.head == "latent":
        torch, model, torch_why = None, None, f"{checkpoint}: a latent-head VLA has no predict_actions"

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = preprocess_image(frame, spec.preprocessing)[None]  # (1, 3, S, S)
    obs: dict[str, Any] = {"image": frame, "instruction": args.instruction}
    proprio = None
    if spec.proprio is not None:
        proprio = np.zeros((1, spec.proprio.dim), np.float32)
        obs["proprio"] = proprio[0].astype(np.float64)

    results: list[dict[str, Any]] = []
    agreement: float | None = None
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        for n in threads:
            policy = load_policy(model_dir, providers=["cpu"], threads=n)
            embedding = policy.embed(args.instruction)  # (1, D), cached by the encoder from now on
            feeds = {spec.io.image.name: image, spec.io.instruction.name: embedding}
            if proprio is not None:
                feeds[spec.io.proprio.name] = proprio
            session, out_name = policy.session, [spec.io.actions.name]
            rows: dict[str, Callable[[], Any]] = {"onnxruntime": lambda s=session, f=feeds, o=out_name: s.run(o, f)}
            if model is not None:
                torch.set_num_threads(n)
                inputs = [torch.tensor(image), torch.tensor(embedding)]
                inputs.append(None if proprio is None else torch.tensor(proprio))

                def eager(m=model, x=inputs):
                    with torch.inference_mode():
                        return m.predict_actions(*x)

                rows["torch eager"] = eager
                got = session.run(out_name, feeds)[0]
                want = eager().numpy()
                diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                agreement = diff if agreement is None else max(agreement, diff)
            rows["runtime infer()"] = lambda p=policy: p.infer(obs)
            for name, figures in _time_rows(rows, iterations, warmup).items():
                results.append({"row": name, "threads": n, **figures})
            del policy, session, rows
    finally:
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)

    def p50(row: str, n: int) -> float | None:
        return next((r["p50_ms"] for r in results if r["row"] == row and r["threads"] == n), None)

    ratios = []
    for n in threads:
        onnx, eager = p50("onnxruntime", n), p50("torch eager", n)
        if onnx is not None and eager is not None:
            ratios.append({"threads": n, "onnx_over_torch": onnx / eager, "speedup": eager / onnx})

    encoder_dir = spec.instruction_encoder.resolve(model_dir)
    sizes = {
        "policy.onnx": _size(model_dir / spec.policy_file),
        "text_encoder": _size(encoder_dir / spec.instruction_encoder.onnx_file),
        "tokenizer": _size(encoder_dir / spec.instruction_encoder.tokenizer_file),
        "checkpoint": _size(checkpoint),
    }
    onnx2, eager2 = p50("onnxruntime", GOAL_THREADS), p50("torch eager", GOAL_THREADS)
    goal: dict[str, Any] = {"p50_ms_max": GOAL_P50_MS, "speedup_min": GOAL_SPEEDUP, "threads": GOAL_THREADS,
                            "latency_met": None if onnx2 is None else onnx2 <= GOAL_P50_MS,
                            "speedup_met": None if onnx2 is None or eager2 is None else eager2 / onnx2 >= GOAL_SPEEDUP}
    goal["met"] = None if None in (goal["latency_met"], goal["speedup_met"]) else \
        bool(goal["latency_met"] and goal["speedup_met"])
    versions = {"onnxruntime": onnxruntime.__version__}
    if torch is not None:
        versions["torch"] = str(torch.__version__)
    return {
        "model": spec.name, "model_dir": str(model_dir), "iterations": iterations, "warmup": warmup,
        "frame_size": f"{width}x{height}", "input_size": spec.preprocessing.size,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": load, "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_note": note if model is not None else "", "torch_eager": model is not None,
        "torch_unavailable_reason": torch_why if model is None else None,
        "max_abs_diff_onnx_torch": agreement, "results": results, "ratios": ratios, "sizes": sizes, "goal": goal,
        "versions": versions,
    }


def _mb(size: int | None) -> str:
    return "missing" if size is None else f"{size / 1e6:.2f} MB"


def _print_report(report: dict[str, Any]) -> None:
    load = report["load_average"]
    print(f"conla bench policy: {report['model']} ({report['model_dir']}), CPU, {report['iterations']} timed "
          f"calls per row after {report['warmup']} warm-up; {report['cpus']} CPUs"
          + (f", load average before the run {load[0]} {load[1]} {load[2]}" if load else "")
          + "; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    header = ("row", "threads", "p50 ms", "p99 ms", "mean ms")
    labels = {"onnxruntime": "onnxruntime session.run", "torch eager": "torch eager predict_actions",
              "runtime infer()": f"runtime infer() {report['frame_size']}→{report['input_size']}"}
    lines = [(labels.get(r["row"], r["row"]), str(r["threads"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
              f"{r['mean_ms']:.3f}") for r in report["results"]]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    for i, line in enumerate([header, *lines]):
        print("  " + "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(line, widths,
                                                                                                 strict=True))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    if report["torch_eager"]:
        for r in report["ratios"]:
            print(f"onnxruntime/torch eager p50, {r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
                  f"{r['onnx_over_torch']:.2f} (onnxruntime {r['speedup']:.2f}× faster)")
        diff = report["max_abs_diff_onnx_torch"]
        if diff <= PARITY_TOLERANCE:
            print(f"outputs agree: max |onnxruntime − torch| = {diff:.2g}")
        else:
            print(f"WARNING: outputs differ: max |onnxruntime − torch| = {diff:.3g} (> {PARITY_TOLERANCE:g}): "
                  f"is {report['checkpoint']} the checkpoint policy.onnx was exported from?")
        if report["checkpoint_note"]:
            print(f"checkpoint: {report['checkpoint_note']}")
    else:
        print(f"torch eager could not be measured: {report['torch_unavailable_reason']}")
    s = report["sizes"]
    print(f"sizes: policy.onnx {_mb(s['policy.onnx'])}, text encoder {_mb(s['text_encoder'])} "
          f"(+ tokenizer {_mb(s['tokenizer'])}), checkpoint {_mb(s['checkpoint'])}"
          + (f" ({report['checkpoint']})" if report["checkpoint"] else ""))
    goal = report["goal"]
    target = (f"onnxruntime p50 ≤ {goal['p50_ms_max']:g} ms on {goal['threads']} threads and ≥ "
              f"{goal['speedup_min']:g}× faster than torch eager")
    if goal["latency_met"] is None:
        verdict = f"not checked (no {goal['threads']}-thread run)"
    elif goal["speedup_met"] is None:
        verdict = ("latency " + ("met" if goal["latency_met"] else "NOT met") +
                   "; speed-up not checked (no torch eager figures)")
    else:
        verdict = "met" if goal["met"] else "NOT met (" + ", ".join(
            k for k, ok in (("latency", goal["latency_met"]), ("speed-up", goal["speedup_met"])) if not ok) + ")"
    print(f"goal ({target}): {verdict}")


def run(args: argparse.Namespace) -> int:
    """Measure and print; 0 whether the goal is met or not, 1 when the model directory cannot be loaded."""
    from conla_ros.core.model_spec import ModelLoadError

    try:
        report = _measure(args)
    except ModelLoadError as error:
        print(f"conla bench policy: {error}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.commands.bench_policy`."""
    return command_main("conla bench policy", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
