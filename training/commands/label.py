"""`conla label --lam CKPT --videos DIR --out FILE`: latent-action pseudo-labels for VLA pretraining.

Every frame pair (o_t, o_{t+k}) of every clip, t = 0, s, 2s, … while t + k < T (k = the frame gap
the LAM was trained with unless `--frame-gap` says otherwise, s = `--stride`, default 1), gets the
LAM's 4 codes. `--lam` is either a torch checkpoint (file, step folder or run folder) or a folder
(or .onnx file) written by `conla export --lam`; the ONNX path needs only numpy, OpenCV and
onnxruntime — no torch.

FILE (JSON Lines, one line per clip, written atomically):
    {"id", "label", "instruction", "path", "frames": T, "frame_gap": k, "stride": s,
     "codes": [[c0, c1, c2, c3], ...]}          # codes[i] is the pair (o_{i·s}, o_{i·s+k})
FILE.meta.json: the LAM (path, step, backend), the preprocessing, k, s, counts and the skipped
clips by name. Unreadable clips are reported once, skipped and counted; labelling goes on.
Input formats as for training (`--format videos|ssv2|episodes`, `--labels`), see
conla_training.datasets.clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from conla_training.engine.command import command_main

__all__ = ["add_arguments", "label_clips", "load_coder", "run"]

log = logging.getLogger(__name__)

Coder = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (N, 3, S, S) ×2 float32 → (N, T) int64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lam", type=Path, required=True,
                        help="LAM checkpoint (torch) or `conla export --lam` folder / .onnx file")
    parser.add_argument("--videos", type=Path, required=True, help="the clips: a videos folder (with labels.jsonl), "
                        "an SSv2 video folder (--format ssv2) or an episodes folder (--format episodes)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON Lines file")
    parser.add_argument("--format", choices=("videos", "ssv2", "episodes"), default="videos")
    parser.add_argument("--labels", type=Path, default=None, help="label file (default: VIDEOS/labels.jsonl; "
                        "required for ssv2)")
    parser.add_argument("--frame-gap", type=int, default=None, help="k in frames (default: the LAM's training k)")
    parser.add_argument("--stride", type=int, default=1, help="step between the first frames of successive pairs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _is_onnx(path: Path) -> bool:
    from conla_training.exports.lam import LAM_META

    return path.suffix == ".onnx" or (path.is_dir() and (path / LAM_META).is_file())


def load_coder(path: Path, device: str | None = None) -> tuple[Coder, dict[str, Any]]:
    """(codes function, info: backend, preprocessing spec, frame_gap, step, path, num_codes) for a checkpoint or
    ONNX export."""
    from conla_ros.core.preprocessing import ImagePreprocessing

    path = Path(path)
    if _is_onnx(path):
        import onnxruntime as ort
        import yaml

        from conla_training.exports.lam import LAM_META

        folder = path if path.is_dir() else path.parent
        meta = yaml.safe_load((folder / LAM_META).read_text(encoding="utf-8"))
        onnx_path = path if path.suffix == ".onnx" else folder / meta["onnx"]
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        session = ort.InferenceSession(str(onnx_path), providers=providers)

        def onnx_codes(o_t: np.ndarray, o_tk: np.ndarray) -> np.ndarray:
            return session.run(["codes"], {"o_t": o_t, "o_tk": o_tk})[0].astype(np.int64)

        p = meta["preprocessing"]
        spec = ImagePreprocessing(size=p["size"], crop_fraction=p["crop_fraction"], mean=tuple(p["mean"]),
                                  std=tuple(p["std"]), interpolation=p["interpolation"])
        return onnx_codes, {"backend": "onnx", "path": str(onnx_path), "spec": spec, "frame_gap": meta["frame_gap"],
                            "step": meta["provenance"]["step"], "num_codes": int(meta.get("num_codes", 8))}

    import torch

    from conla_training.trainers.lam import load_lam

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, payload = load_lam(path, map_location="cpu")
    model.to(device)

    def torch_codes(o_t: np.ndarray, o_tk: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.encode_codes(torch.from_numpy(o_t).to(device), torch.from_numpy(o_tk).to(device)).cpu().numpy()

    return torch_codes, {"backend": "torch", "path": str(path), "spec": model.config.preprocessing(),
                         "frame_gap": int(payload["run_config"]["data"]["frame_gap"]), "step": int(payload["step"]),
                         "num_codes": model.config.quantizer.num_codes}


def label_clips(coder: Coder, clips, spec, frame_gap: int, stride: int = 1, batch_size: int = 256,
                progress: bool = True):
    """Yield (clip, frames, codes (P, T) int64) for readable clips and (clip, reason, None) for the others."""
    from conla_ros.core.preprocessing import preprocess_images
    from conla_training.datasets.clips import ClipReadError, read_frames

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(clips), unit="clip", dynamic_ncols=True, file=sys.stderr)
    try:
        for clip in clips:
            try:
                raw = read_frames(clip)
                frames = preprocess_images(raw, spec)  # (T, 3, S, S)
            except (ClipReadError, ValueError) as error:
                yield clip, str(error), None
                continue
            finally:
                if bar is not None:
                    bar.update(1)
            starts = np.arange(0, len(frames) - frame_gap, stride)
            codes = [coder(frames[starts[i : i + batch_size]], frames[starts[i : i + batch_size] + frame_gap])
                     for i in range(0, len(starts), batch_size)]
            yield clip, len(frames), np.concatenate(codes) if codes else np.zeros((0, 4), np.int64)
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace) -> int:
    from conla_training.datasets.clips import DataConfig, list_clips

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        coder, info = load_coder(args.lam, args.device)
        frame_gap = args.frame_gap or info["frame_gap"]
        config = DataConfig(format=args.format, root=args.videos, labels=args.labels, frame_gap=frame_gap)
        clips, missing = list_clips(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"conla label: {error}", file=sys.stderr)
        return 2
    if args.stride < 1 or args.batch_size < 1:
        print("conla label: --stride and --batch-size must be >= 1", file=sys.stderr)
        return 2
    skipped = dict(missing)
    for name, reason in missing:
        log.warning("skipping %s: %s", name, reason)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pairs = labelled = 0
    started = time.perf_counter()
    with open(tmp, "w", encoding="utf-8") as handle:
        for clip, frames, codes in label_clips(coder, clips, info["spec"], frame_gap, args.stride, args.batch_size,
                                               progress=not args.no_progress):
            if codes is None:
                log.warning("skipping %s: %s", clip.path, frames)
                skipped[str(clip.path)] = str(frames)
                continue
            line = {"id": clip.name, "label": clip.label, "instruction": clip.instruction, "path": str(clip.path),
                    "frames": int(frames), "frame_gap": frame_gap, "stride": args.stride, "codes": codes.tolist()}
            handle.write(json.dumps(line) + "\n")
            pairs += len(codes)
            labelled += 1
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    spec = info["spec"]
    meta = {"lam": info["path"], "lam_step": info["step"], "backend": info["backend"], "frame_gap": frame_gap,
            "stride": args.stride, "preprocessing": {"size": spec.size, "crop_fraction": spec.crop_fraction},
            "clips": labelled, "pairs": pairs, "skipped_count": len(skipped), "skipped": skipped,
            "elapsed_s": round(time.perf_counter() - started, 3), "videos": str(args.videos), "format": args.format}
    meta_path = out.with_name(out.name + ".meta.json")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"labelled {pairs} pairs in {labelled} clips -> {out} ({len(skipped)} skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.commands.label`."""
    return command_main("conla label", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
