"""Why do (or don't) the latent codes carry the action? The measurements behind BENCHMARKS.md's LAM diagnosis.

`python -m conla_training.analysis.lam_diagnosis --episodes DIR [--lam RUN ...] --out FILE.json`

Two parts, each a number per candidate cause:

**Data (no model).** Every robot episode under `--episodes` (rosbag2, with commands) is replayed
from its task and seed in several renderings of the same physics: `robot` (the recorded look),
`human` (the full human-like domain the LAMs train on) and `human_static` (human-like, but without
the per-step background flicker and the moving distractor ball, i.e. only what the motion changes).
For each frame gap k (`--gaps`) and every pair (o_t, o_{t+k}):
  - the end-effector displacement ‖p_{t+k} − p_t‖ (cm) and the share of pixels that change
    (max over channels of |Δ| > 0.1), per rendering;
  - `copy_mse`, the MSE of predicting o_{t+k} by o_t — what the LAM's decoder must explain — and
    the share of it that the flicker and the distractor make (1 − copy_mse(human_static) /
    copy_mse(human));
  - upper-bound linear probes to the probe target of `conla eval lam` (the mean command over
    [t, t + k)): from the true displacement (Δp, Δgripper: the physical ceiling) and from the
    pixel difference of the pair, downsampled to 16 × 16 (ridge, the best of a few strengths on
    the held-out episodes: an optimistic bound), per rendering.
Held-out episodes are chosen as in `conla eval lam` (a hash of the name, `--held-out`).

**Model (each `--lam`).** At the LAM's own k, on the robot rendering, the human-like replay and the
human-like replay without flicker and distractor:
  - probes from the codes (one-hot, as `conla eval lam`) and from the continuous latent d before
    quantization (flattened, 4 × 32): the gap is what the quantizer loses;
  - decoder use: MSE of the reconstruction of o_{t+k} from the true codes, from the codes of
    another pair of the batch (shuffled), from the continuous d, and of copying o_t — on all pixels
    and on the "moving" pixels (|o_{t+k} − o_t| > 0.1 in the robot rendering); a decoder that
    ignores its latent scores the same with true and shuffled codes;
  - the NSVQ noise-to-signal ratio: the mean quantization error ‖d − z‖ per token (the norm of
    the noise that replaces it in training) against the mean spread ‖d − mean d‖ between pairs;
  - codebook use: perplexity per token position and codes chosen for < 1 % of a position's
    tokens (dead);
  - token agreement robot vs human (as `conla eval lam --cross-domain replay`), human vs
    human_static (how much of the code is flicker and distractor) and robot vs human_static.
Every number lands in the JSON; `format_table` prints the headline ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Replay", "data_diagnosis", "model_diagnosis", "pair_arrays", "pixel_features", "probe_best", "replay"]

RENDERINGS = ("robot", "human", "human_static")
CHANGE_THRESHOLD = 0.1  # a pixel "changes" when some channel moves by more than this (of 1)
RIDGE_STRENGTHS = (1e-3, 1e-1, 1e1, 1e3)


@dataclass
class Replay:
    """One episode replayed: frames per rendering (T, S, S, 3) uint8, ee (T, 3) m, gripper (T,), commands (C, 4)."""

    name: str
    held_out: bool
    frames: dict[str, np.ndarray]
    ee: np.ndarray
    gripper: np.ndarray
    commands: np.ndarray


def _world_config(rendering: str, image_size: int, steps: int):
    from conla_ros.sim.domains import HumanDomainConfig
    from conla_ros.sim.world import WorldConfig

    if rendering == "robot":
        return WorldConfig(image_size=image_size, domain="robot", max_steps=max(steps, 1))
    human = HumanDomainConfig() if rendering == "human" else HumanDomainConfig(flicker=False, distractor=False)
    return WorldConfig(image_size=image_size, domain="human", max_steps=max(steps, 1), human=human)


def replay(episode, held_out: bool, renderings: tuple[str, ...] = RENDERINGS) -> Replay:
    """Replay an episode's recorded commands from its task and seed in each rendering."""
    from conla_ros.episodes import topics as T
    from conla_ros.sim.world import SimWorld

    meta = episode.metadata
    task, seed = meta[T.META_TASK], int(meta[T.META_SEED])
    commands = np.asarray(episode.commands, dtype=np.float64)
    frames: dict[str, np.ndarray] = {}
    ee = gripper = None
    for rendering in renderings:
        images, positions, grips = [], [], []
        with SimWorld(_world_config(rendering, episode.images.shape[1], len(commands))) as world:
            obs = world.reset(task, seed)
            images.append(obs.image), positions.append(obs.ee_position), grips.append(obs.gripper)
            for action in commands:
                if world.done:
                    break
                obs = world.step(action)
                images.append(obs.image), positions.append(obs.ee_position), grips.append(obs.gripper)
        frames[rendering] = np.stack(images)
        if ee is None:
            ee, gripper = np.stack(positions), np.asarray(grips)
    n = min(len(f) for f in frames.values())
    return Replay(name=episode.path.name, held_out=held_out, frames={k: v[:n] for k, v in frames.items()},
                  ee=ee[:n], gripper=gripper[:n], commands=commands)


def load_replays(episodes_dir: Path, held_out_fraction: float, cache: Path | None = None,
                 limit: int = 0) -> list[Replay]:
    """Replays of every episode under `episodes_dir`, cached in `cache` (.npz) when given."""
    from conla_training.commands.eval_lam import held_out

    if cache is not None and cache.exists():
        data = np.load(cache, allow_pickle=False)
        names = [str(n) for n in data["names"]]
        return [Replay(name=n, held_out=bool(data[f"{i}/held_out"]),
                       frames={r: data[f"{i}/{r}"] for r in RENDERINGS}, ee=data[f"{i}/ee"],
                       gripper=data[f"{i}/gripper"], commands=data[f"{i}/commands"]) for i, n in enumerate(names)]
    from conla_ros.episodes.reader import list_episodes, load_episode

    paths = list_episodes(episodes_dir)
    if limit:
        paths = paths[:limit]
    replays = [replay(load_episode(p), held_out(p.name, held_out_fraction)) for p in paths]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"names": np.array([r.name for r in replays])}
        for i, r in enumerate(replays):
            arrays[f"{i}/held_out"] = np.array(r.held_out)
            arrays.update({f"{i}/{k}": v for k, v in r.frames.items()})
            arrays[f"{i}/ee"], arrays[f"{i}/gripper"], arrays[f"{i}/commands"] = r.ee, r.gripper, r.commands
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(cache)
    return replays


# --- pairs and features ----------------------------------------------------------------------------


def pair_arrays(r: Replay, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(pair starts t (P,), probe targets (P, 4): the mean command over [t, t + k)) as `conla eval lam`."""
    n = len(r.ee)
    starts = np.arange(0, n - k)
    starts = starts[starts + k <= len(r.commands)]
    target = (np.stack([r.commands[t : t + k].mean(0) for t in starts]) if len(starts)
              else np.zeros((0, r.commands.shape[1])))
    return starts, target


def pixel_features(frames: np.ndarray, starts: np.ndarray, k: int, size: int = 16) -> np.ndarray:
    """(P, size·size·3): o_{t+k} − o_t in [−1, 1], block-averaged to size × size."""
    f = frames.astype(np.float32) / 255.0
    diff = f[starts + k] - f[starts]  # (P, S, S, 3)
    s = diff.shape[1]
    block = s // size
    diff = diff[:, : block * size, : block * size].reshape(len(starts), size, block, size, block, 3).mean((2, 4))
    return diff.reshape(len(starts), -1).astype(np.float64)


def probe_best(x_train, y_train, x_test, y_test) -> dict[str, Any]:
    """Ridge probe at the strength (of RIDGE_STRENGTHS) that scores best on the test set: an upper bound."""
    from conla_training.commands.eval_lam import linear_probe_r2

    best = None
    for lam in RIDGE_STRENGTHS:
        r2, per_dim = linear_probe_r2(x_train, y_train, x_test, y_test, lam=lam)
        if best is None or r2 > best["r2"]:
            best = {"r2": r2, "r2_per_dim": per_dim, "ridge": lam}
    return best


def _split(replays: list[Replay], fn) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    out: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    for r in replays:
        x, y = fn(r)
        if len(y):
            out[r.held_out][0].append(x)
            out[r.held_out][1].append(y)
    return {h: (np.concatenate(xs), np.concatenate(ys)) for h, (xs, ys) in out.items() if xs}


def _probe(replays: list[Replay], fn) -> dict[str, Any]:
    parts = _split(replays, fn)
    if False not in parts or True not in parts:
        return {}
    (xa, ya), (xb, yb) = parts[False], parts[True]
    return probe_best(xa, ya, xb, yb)


def data_diagnosis(replays: list[Replay], gaps: tuple[int, ...]) -> dict[str, Any]:
    """The model-free numbers per frame gap (see the module docstring)."""
    out: dict[str, Any] = {"episodes": len(replays), "held_out": sum(r.held_out for r in replays), "gaps": {}}
    for k in gaps:
        row: dict[str, Any] = {}
        disp, grip = [], []
        changed = {name: [] for name in RENDERINGS}
        copy_mse = {name: [] for name in RENDERINGS}
        for r in replays:
            starts, _ = pair_arrays(r, k)
            if not len(starts):
                continue
            disp.append(np.linalg.norm(r.ee[starts + k] - r.ee[starts], axis=1) * 100.0)
            grip.append(np.abs(r.gripper[starts + k] - r.gripper[starts]))
            for name in RENDERINGS:
                f = r.frames[name].astype(np.float32) / 255.0
                d = np.abs(f[starts + k] - f[starts])  # (P, S, S, 3)
                changed[name].append((d.max(-1) > CHANGE_THRESHOLD).mean((1, 2)))
                copy_mse[name].append((d**2).mean((1, 2, 3)))
        disp_all = np.concatenate(disp)
        row["ee_displacement_cm"] = {"median": float(np.median(disp_all)), "p90": float(np.percentile(disp_all, 90)),
                                     "mean": float(disp_all.mean())}
        row["gripper_change_mean"] = float(np.concatenate(grip).mean())
        row["changed_pixel_share"] = {n: float(np.concatenate(v).mean()) for n, v in changed.items()}
        row["changed_pixels_per_pair"] = {n: float(np.concatenate(v).mean() * replays[0].frames[n].shape[1] ** 2)
                                          for n, v in changed.items()}
        row["copy_mse"] = {n: float(np.concatenate(v).mean()) for n, v in copy_mse.items()}
        row["copy_mse_share_flicker_distractor"] = 1.0 - row["copy_mse"]["human_static"] / row["copy_mse"]["human"]

        def physical(r: Replay, k=k):
            starts, target = pair_arrays(r, k)
            x = np.concatenate([r.ee[starts + k] - r.ee[starts], (r.gripper[starts + k] - r.gripper[starts])[:, None]],
                               axis=1)
            return x, target

        row["probe_physical"] = _probe(replays, physical)
        for name in RENDERINGS:
            row[f"probe_pixels_{name}"] = _probe(
                replays, lambda r, k=k, name=name: (pixel_features(r.frames[name], pair_arrays(r, k)[0], k),
                                                    pair_arrays(r, k)[1]))
        out["gaps"][str(k)] = row
    return out


# --- model part ------------------------------------------------------------------------------------


def _batches(n: int, size: int = 256):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def model_diagnosis(lam_path: Path, replays: list[Replay], device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """The model numbers of one LAM at its own frame gap (see the module docstring)."""
    import torch

    from conla_ros.core.preprocessing import preprocess_images
    from conla_training.commands.eval_lam import one_hot, token_agreement
    from conla_training.trainers.lam import load_lam

    model, payload = load_lam(lam_path, map_location="cpu")
    model.to(device)
    k = int(payload["run_config"]["data"]["frame_gap"])
    spec = model.config.preprocessing()
    num_codes = model.config.quantizer.num_codes
    rng = np.random.default_rng(seed)
    per: dict[str, dict[str, list]] = {name: {"codes": [], "latent": [], "target": [], "held": [], "mse": [],
                                              "quant_error": []}
                                       for name in ("robot", "human", "human_static")}
    for r in replays:
        starts, target = pair_arrays(r, k)
        if not len(starts):
            continue
        moving_robot = None
        for name in ("robot", "human", "human_static"):
            frames = preprocess_images(r.frames[name], spec)  # (T, 3, S, S)
            o_t_all, o_tk_all = torch.from_numpy(frames[starts]), torch.from_numpy(frames[starts + k])
            if name == "robot":
                moving_robot = ((o_tk_all - o_t_all).abs().amax(1, keepdim=True) > CHANGE_THRESHOLD).float()
            for sl in _batches(len(starts)):
                o_t, o_tk = o_t_all[sl].to(device), o_tk_all[sl].to(device)
                mask = moving_robot[sl].to(device)
                with torch.no_grad():
                    h, emb_t = model.encode(o_t, o_tk)
                    d = model.action_latent(h)  # (B, T, Dq)
                    codes = model.quantizer.nearest(d)
                    perm = torch.from_numpy(rng.permutation(len(o_t))).to(device)
                    recon = {"true_codes": model.decode(emb_t, model.quantizer.lookup(codes), o_t),
                             "shuffled_codes": model.decode(emb_t, model.quantizer.lookup(codes[perm]), o_t),
                             "continuous_latent": model.decode(emb_t, d, o_t),
                             "copy_o_t": o_t}
                    mses = {}
                    for key, pred in recon.items():
                        err = (pred - o_tk) ** 2  # (B, 3, S, S)
                        mses[key] = err.mean().item() * len(o_t)
                        moving = (err * mask).sum().item() / max(mask.sum().item() * 3, 1.0)
                        mses[f"{key}_moving"] = moving * len(o_t)
                per[name]["codes"].append(codes.cpu().numpy())
                error = (d - model.quantizer.lookup(codes)).norm(dim=-1)  # (B, T)
                per[name]["quant_error"].append(error.flatten().detach().cpu().numpy())
                per[name]["latent"].append(d.flatten(1).cpu().numpy().astype(np.float64))
                per[name]["mse"].append(mses)
            per[name]["target"].append(target)
            per[name]["held"].append(np.full(len(starts), r.held_out))
    result: dict[str, Any] = {"lam": str(lam_path), "step": int(payload["step"]), "frame_gap": k}
    for name, acc in per.items():
        codes, latent = np.concatenate(acc["codes"]), np.concatenate(acc["latent"])
        target, held = np.concatenate(acc["target"]), np.concatenate(acc["held"])
        n = len(codes)
        keys = acc["mse"][0].keys()
        mse = {key: sum(m[key] for m in acc["mse"]) / n for key in keys}
        x_codes = one_hot(codes, num_codes)
        row: dict[str, Any] = {
            "pairs": n,
            "probe_codes": probe_best(x_codes[~held], target[~held], x_codes[held], target[held]),
            "probe_latent": probe_best(latent[~held], target[~held], latent[held], target[held]),
            "recon_mse": mse,
            "perplexity_per_token": [_perplexity(codes[:, j], num_codes) for j in range(codes.shape[1])],
            # NSVQ's training noise has the norm of the quantization error: against the spread of d
            # between pairs it is the noise-to-signal ratio of the decoder's view of the latent.
            "quantization_error": float(np.concatenate(acc["quant_error"]).mean()),
            "latent_spread": float(np.linalg.norm((latent - latent.mean(0)).reshape(n, codes.shape[1], -1),
                                                  axis=-1).mean()),
            "dead_codes_per_token": [int(((np.bincount(codes[:, j], minlength=num_codes) / n) < 0.01).sum())
                                     for j in range(codes.shape[1])],
        }
        result[name] = row
    if len(per["robot"]["codes"]) and len(per["human"]["codes"]):
        held = np.concatenate(per["robot"]["held"])
        codes = {name: np.concatenate(per[name]["codes"])[held] for name in per}
        result["cross_domain"] = token_agreement(codes["robot"], codes["human"], num_codes)
        # How much of the human-like code is flicker and distractor: the same motion with them off.
        result["human_vs_static"] = token_agreement(codes["human"], codes["human_static"], num_codes)
        result["robot_vs_static"] = token_agreement(codes["robot"], codes["human_static"], num_codes)
    return result


def _perplexity(codes: np.ndarray, num_codes: int) -> float:
    p = np.bincount(codes, minlength=num_codes) / max(len(codes), 1)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


# --- report ----------------------------------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    lines = []
    data = results.get("data")
    if data:
        lines.append(f"data: {data['episodes']} episodes ({data['held_out']} held out)")
        head = ("k", "ee cm (med)", "chg px robot", "chg px human", "chg px static", "flicker share",
                "R2 phys", "R2 px robot", "R2 px human", "R2 px static")
        lines.append(" | ".join(head))
        for k, row in data["gaps"].items():
            c = row["changed_pixels_per_pair"]
            lines.append(" | ".join([
                k, f"{row['ee_displacement_cm']['median']:.2f}", f"{c['robot']:.0f}", f"{c['human']:.0f}",
                f"{c['human_static']:.0f}", f"{row['copy_mse_share_flicker_distractor']:.2f}",
                f"{row['probe_physical'].get('r2', float('nan')):.2f}",
                *(f"{row[f'probe_pixels_{n}'].get('r2', float('nan')):.2f}" for n in RENDERINGS)]))
    for m in results.get("models", []):
        lines.append(f"model {m['lam']} (step {m['step']}, k = {m['frame_gap']})")
        for name in ("robot", "human", "human_static"):
            row = m[name]
            mse = row["recon_mse"]
            lines.append(
                f"  {name}: R2 codes {row['probe_codes']['r2']:.3f}, R2 latent {row['probe_latent']['r2']:.3f}; "
                f"MSE true {mse['true_codes']:.5f} shuffled {mse['shuffled_codes']:.5f} "
                f"continuous {mse['continuous_latent']:.5f} copy {mse['copy_o_t']:.5f}; moving px: true "
                f"{mse['true_codes_moving']:.4f} shuffled {mse['shuffled_codes_moving']:.4f} copy "
                f"{mse['copy_o_t_moving']:.4f}; perplexity/token "
                + ", ".join(f"{p:.2f}" for p in row["perplexity_per_token"])
                + f"; dead/token {row['dead_codes_per_token']}")
        if "cross_domain" in m:
            x = m["cross_domain"]
            lines.append(f"  cross-domain token agreement {x['token_agreement']:.3f} (chance {x['token_chance']:.3f})")
            for key in ("human_vs_static", "robot_vs_static"):
                y = m[key]
                lines.append(f"  {key} token agreement {y['token_agreement']:.3f} (chance {y['token_chance']:.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conla_training.analysis.lam_diagnosis",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=Path, required=True, help="robot episodes with commands (rosbag2)")
    parser.add_argument("--lam", type=Path, nargs="*", default=[], help="LAM runs or checkpoints to diagnose")
    parser.add_argument("--gaps", type=int, nargs="*", default=[4, 8, 16, 24], help="frame gaps of the data part")
    parser.add_argument("--held-out", type=float, default=0.3)
    parser.add_argument("--cache", type=Path, default=None, help="replays cache (.npz), made once")
    parser.add_argument("--limit", type=int, default=0, help="only the first N episodes (0: all)")
    parser.add_argument("--no-data", action="store_true", help="skip the model-free part")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.gaps):
        print("lam_diagnosis: --gaps must be >= 1", file=sys.stderr)
        return 2
    replays = load_replays(args.episodes, args.held_out, args.cache, args.limit)
    if not replays:
        print(f"lam_diagnosis: no episodes under {args.episodes}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"episodes": str(args.episodes)}
    if not args.no_data:
        results["data"] = data_diagnosis(replays, tuple(args.gaps))
    results["models"] = [model_diagnosis(p, replays, args.device) for p in args.lam]
    print(format_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
