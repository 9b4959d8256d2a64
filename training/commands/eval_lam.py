"""`conla eval lam --lam CKPT [--videos DIR] [--episodes DIR] [--cross-domain replay]`: latent-action metrics.

Prints a table and writes JSON (`--out`). Every pair is (o_t, o_{t+k}) with the LAM's training k
(or `--frame-gap`), t = 0, s, 2s, … (`--stride`). Codes come from the torch checkpoint or the
exported ONNX model (as `conla label`). Metrics:

- **perplexity**: exp(entropy) of the code distribution over all tokens of all pairs evaluated
  (K = 8 is uniform use, 1 is collapse); also the number of distinct 4-code actions used.
- **category accuracy** (`--videos` with labels): a linear classifier (ridge least squares on
  one-hot targets) from the pair's one-hot codes (4 × K features) to the clip's action category,
  fitted on the training clips and scored on held-out clips (`--held-out` fraction, chosen by a
  hash of the clip id, so fixed across runs and models). Reported with the uniform chance level
  (1 / classes) and the accuracy of always answering the training set's majority class.
- **linear-probe R²** (`--episodes`, robot rosbag2 episodes with commands): ridge regression
  from the one-hot codes to the true action over the pair — the mean of the commands issued in
  [t, t + k) (ee dx, dy, dz, gripper) — fitted on training episodes, R² on held-out episodes
  (per dimension and their mean; 0 = no better than the held-out mean).
- **cross-domain agreement** (`--cross-domain replay`, needs the simulator): each held-out robot
  episode's recorded commands are replayed from the same task and seed in the human-like domain
  (same physics, other look), and the codes of the same pairs are compared: share of identical
  tokens and of identical 4-code actions, next to the chance level of the token share
  (Σ_k p_robot(k)·p_human(k)).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from conla_training.engine.command import command_main

__all__ = ["add_arguments", "category_accuracy", "linear_probe_r2", "one_hot", "perplexity", "run", "token_agreement"]


# --- metric functions (numpy) ----------------------------------------------------------------------


def one_hot(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """(N, T) int codes → (N, T·K) float one-hot features."""
    n, t = codes.shape
    out = np.zeros((n, t * num_codes), dtype=np.float64)
    out[np.repeat(np.arange(n), t), (np.arange(t)[None, :] * num_codes + codes).reshape(-1)] = 1.0
    return out


def perplexity(codes: np.ndarray, num_codes: int) -> float:
    """exp(entropy) of the distribution of all codes in `codes`."""
    counts = np.bincount(codes.reshape(-1), minlength=num_codes).astype(np.float64)
    if counts.sum() == 0:
        return float("nan")
    p = counts / counts.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)  # bias column
    reg = lam * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], axis=1) @ w


def linear_probe_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    lam: float = 1e-3) -> tuple[float, list[float]]:
    """Ridge regression x → y on train, R² on test: (mean over dimensions, per dimension)."""
    pred = _predict(_ridge(x_train, y_train, lam), x_test)
    sse = ((y_test - pred) ** 2).sum(0)
    sst = ((y_test - y_test.mean(0)) ** 2).sum(0)
    per_dim = [float(1 - a / b) if b > 0 else float("nan") for a, b in zip(sse, sst, strict=True)]
    finite = [v for v in per_dim if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("nan")), per_dim


def category_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                      num_classes: int, lam: float = 1e-3) -> tuple[float, float]:
    """(accuracy of a ridge classifier on one-hot targets, majority-class accuracy on test)."""
    targets = np.eye(num_classes)[y_train]
    pred = _predict(_ridge(x_train, targets, lam), x_test).argmax(1)
    majority = np.bincount(y_train, minlength=num_classes).argmax()
    return float((pred == y_test).mean()), float((y_test == majority).mean())


def token_agreement(a: np.ndarray, b: np.ndarray, num_codes: int) -> dict[str, float]:
    """Codes of the same pairs in two domains, (N, T) each → identical token / action shares and chance."""
    pa = np.bincount(a.reshape(-1), minlength=num_codes) / a.size
    pb = np.bincount(b.reshape(-1), minlength=num_codes) / b.size
    return {"token_agreement": float((a == b).mean()), "action_agreement": float((a == b).all(1).mean()),
            "token_chance": float((pa * pb).sum()), "pairs": len(a)}


def held_out(name: str, fraction: float) -> bool:
    """Whether a clip/episode is held out: a fixed hash of its name, independent of order and model."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


# --- data ------------------------------------------------------------------------------------------


def _pair_starts(length: int, frame_gap: int, stride: int) -> np.ndarray:
    return np.arange(0, length - frame_gap, stride)


def _codes_for_frames(coder, frames_uint8: np.ndarray, spec, frame_gap: int, stride: int, batch: int = 256):
    from conla_ros.core.preprocessing import preprocess_images

    frames = preprocess_images(frames_uint8, spec)
    starts = _pair_starts(len(frames), frame_gap, stride)
    parts = [coder(frames[starts[i : i + batch]], frames[starts[i : i + batch] + frame_gap])
             for i in range(0, len(starts), batch)]
    return starts, (np.concatenate(parts) if parts else np.zeros((0, 4), np.int64))


def _replay_human(episode, image_size: int) -> np.ndarray:
    """The episode's commands replayed from its task and seed in the human-like domain → (T, H, W, 3)."""
    from conla_ros.episodes import topics as T
    from conla_ros.sim.world import SimWorld, WorldConfig

    meta = episode.metadata
    task, seed = meta[T.META_TASK], int(meta[T.META_SEED])
    steps = len(episode.commands)
    config = WorldConfig(image_size=image_size, domain="human", max_steps=max(steps, 1))
    with SimWorld(config) as world:
        obs = world.reset(task, seed)
        frames = [obs.image]
        for action in episode.commands:
            if world.done:
                break
            obs = world.step(np.asarray(action, dtype=np.float64))
            frames.append(obs.image)
    return np.stack(frames)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from conla_training.commands.label import load_coder
    from conla_training.datasets.clips import ClipReadError, DataConfig, list_clips, read_frames

    coder, info = load_coder(args.lam, args.device)
    spec, frame_gap = info["spec"], args.frame_gap or info["frame_gap"]
    num_codes = args.num_codes or info["num_codes"]  # the LAM's own codebook size unless overridden
    results: dict[str, Any] = {"lam": info["path"], "lam_step": info["step"], "backend": info["backend"],
                               "frame_gap": frame_gap, "stride": args.stride, "held_out_fraction": args.held_out,
                               "num_codes": num_codes}
    all_codes: list[np.ndarray] = []
    skipped: dict[str, str] = {}

    if args.videos is not None:
        clips, missing = list_clips(DataConfig(format=args.format, root=args.videos, labels=args.labels,
                                               frame_gap=frame_gap))
        skipped.update(missing)
        names = sorted({c.label for c in clips if c.label is not None})
        index = {n: i for i, n in enumerate(names)}
        split: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
        for clip in clips:
            try:
                _, codes = _codes_for_frames(coder, read_frames(clip), spec, frame_gap, args.stride)
            except ClipReadError as error:
                skipped[str(clip.path)] = str(error)
                continue
            all_codes.append(codes)
            if clip.label is not None and len(codes):
                bucket = split[held_out(clip.name, args.held_out)]
                bucket[0].append(codes)
                bucket[1].append(np.full(len(codes), index[clip.label]))
        if split[False][0] and split[True][0] and len(names) > 1:
            x_train, x_test = (one_hot(np.concatenate(split[h][0]), num_codes) for h in (False, True))
            y_train, y_test = (np.concatenate(split[h][1]) for h in (False, True))
            acc, chance = category_accuracy(x_train, y_train, x_test, y_test, len(names))
            results["category_accuracy"] = {"accuracy": acc, "majority_baseline": chance,
                                            "uniform_chance": 1.0 / len(names), "classes": len(names),
                                            "train_pairs": len(y_train), "test_pairs": len(y_test)}

    if args.episodes is not None:
        from conla_ros.episodes.reader import list_episodes, load_episode

        split_x: dict[bool, list] = {False: [], True: []}
        split_y: dict[bool, list] = {False: [], True: []}
        robot_codes, human_codes = [], []
        for path in list_episodes(args.episodes):
            try:
                episode = load_episode(path)
            except Exception as error:  # unreadable: skipped and counted
                skipped[str(path)] = str(error)
                continue
            starts, codes = _codes_for_frames(coder, episode.images, spec, frame_gap, args.stride)
            all_codes.append(codes)
            commands = np.asarray(episode.commands, dtype=np.float64)  # (C, 4): command t follows image t
            keep = starts + frame_gap <= len(commands)
            target = np.stack([commands[t : t + frame_gap].mean(0) for t in starts[keep]]) if keep.any() else None
            hold = held_out(path.name, args.held_out)
            if target is not None:
                split_x[hold].append(codes[keep])
                split_y[hold].append(target)
            if hold and args.cross_domain == "replay":
                human = _replay_human(episode, episode.images.shape[1])
                n = min(len(human), len(episode.images))
                _, robot = _codes_for_frames(coder, episode.images[:n], spec, frame_gap, args.stride)
                _, other = _codes_for_frames(coder, human[:n], spec, frame_gap, args.stride)
                robot_codes.append(robot)
                human_codes.append(other)
        if split_x[False] and split_x[True]:
            x_train, x_test = (one_hot(np.concatenate(split_x[h]), num_codes) for h in (False, True))
            y_train, y_test = (np.concatenate(split_y[h]) for h in (False, True))
            r2, per_dim = linear_probe_r2(x_train, y_train, x_test, y_test)
            results["linear_probe"] = {"r2": r2, "r2_per_dim": dict(zip(("ee_dx", "ee_dy", "ee_dz", "gripper"),
                                                                       per_dim, strict=False)),
                                       "train_pairs": len(y_train), "test_pairs": len(y_test)}
        if robot_codes:
            results["cross_domain"] = token_agreement(np.concatenate(robot_codes), np.concatenate(human_codes),
                                                      num_codes)

    if all_codes:
        codes = np.concatenate(all_codes)
        results["perplexity"] = perplexity(codes, num_codes)
        results["distinct_actions"] = len({tuple(c) for c in codes.tolist()})
        results["pairs"] = len(codes)
    results["skipped_count"] = len(skipped)
    results["skipped"] = skipped
    return results


def format_table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("LAM", f"{results['lam']} (step {results['lam_step']}, {results['backend']})")]
    if "perplexity" in results:
        rows.append((f"codebook perplexity (of {results['num_codes']})", f"{results['perplexity']:.3f}"))
        rows.append(("distinct 4-code actions", f"{results['distinct_actions']} over {results['pairs']} pairs"))
    if "category_accuracy" in results:
        c = results["category_accuracy"]
        rows.append(("category accuracy (held-out clips)",
                     f"{c['accuracy']:.3f} (chance {c['uniform_chance']:.3f}, train-majority "
                     f"{c['majority_baseline']:.3f}, {c['classes']} classes)"))
    if "linear_probe" in results:
        p = results["linear_probe"]
        dims = " ".join(f"{k}={v:.2f}" for k, v in p["r2_per_dim"].items())
        rows.append(("linear-probe R² (held-out episodes)", f"{p['r2']:.3f} ({dims})"))
    if "cross_domain" in results:
        x = results["cross_domain"]
        rows.append(("cross-domain token agreement", f"{x['token_agreement']:.3f} (chance {x['token_chance']:.3f})"))
        rows.append(("cross-domain action agreement", f"{x['action_agreement']:.3f} over {x['pairs']} pairs"))
    rows.append(("skipped files", str(results["skipped_count"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lam", type=Path, required=True, help="LAM checkpoint or `conla export --lam` folder")
    parser.add_argument("--videos", type=Path, default=None, help="labelled clips (perplexity, category accuracy)")
    parser.add_argument("--format", choices=("videos", "ssv2", "episodes"), default="videos")
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--episodes", type=Path, default=None,
                        help="robot episodes with commands (linear probe, cross-domain agreement)")
    parser.add_argument("--cross-domain", choices=("none", "replay"), default="none",
                        help="replay held-out episodes in the human-like domain (needs the simulator)")
    parser.add_argument("--held-out", type=float, default=0.3, help="held-out share of clips / episodes")
    parser.add_argument("--frame-gap", type=int, default=None)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--num-codes", type=int, default=None,
                        help="codebook size for the one-hot probe (default: the LAM's own)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")


def run(args: argparse.Namespace) -> int:
    if args.videos is None and args.episodes is None:
        print("conla eval lam: give --videos and/or --episodes", file=sys.stderr)
        return 2
    try:
        results = evaluate(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"conla eval lam: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.commands.eval_lam`."""
    return command_main("conla eval lam", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
