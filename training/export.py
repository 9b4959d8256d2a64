"""`conla export`: one command, three things to export (the README's command table).

    conla export --checkpoint CKPT --out models/NAME     a trained policy (export_policy)
    conla export --lam CKPT --out DIR                    the LAM's encoder + quantizer (export_lam)
    conla export --text-encoder [--out DIR] [--force]    all-MiniLM-L6-v2, once, into the cache

This module only chooses; each export lives in its own module. No torch at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conla_training.export_policy import RECIPE_HELP, REPLAN_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla export` (the union of what each export takes)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="trained policy run or checkpoint -> models/NAME")
    what.add_argument("--lam", type=Path, help="LAM checkpoint (file, step folder or run folder) -> ONNX quantizer")
    what.add_argument("--text-encoder", action="store_true",
                      help="export the instruction encoder (all-MiniLM-L6-v2) to the shared cache, once")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (required for --checkpoint and --lam; --text-encoder defaults to "
                             "$CONLA_CACHE/text_encoder/all-MiniLM-L6-v2, CONLA_CACHE defaulting to "
                             "~/.cache/conla_ros)")
    parser.add_argument("--videos", type=Path, default=None,
                        help="--lam: clips for the parity check (a videos folder), besides synthetic pairs")
    parser.add_argument("--parity-pairs", type=int, default=64, help="--lam: synthetic pairs for the parity check")
    parser.add_argument("--name", default=None, help="--checkpoint: model name in model.yaml (default: --out's)")
    parser.add_argument("--text-encoder-mode", choices=("copy", "reference"), default="copy",
                        help="--checkpoint: copy the instruction encoder into the model, or reference the shared "
                             "cache (for models committed to git)")
    parser.add_argument("--episodes", type=Path, default=None,
                        help="--checkpoint: robot episodes whose frames join the parity check")
    parser.add_argument("--parity-samples", type=int, default=16, help="--checkpoint: samples for the parity check")
    parser.add_argument("--force", action="store_true",
                        help="--checkpoint: replace an existing model folder; --text-encoder: export again")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18 for --lam, 17 otherwise)")
    parser.add_argument("--recipe", type=Path, default=None, help="--checkpoint: " + RECIPE_HELP)
    parser.add_argument("--replan-every", type=int, default=None, metavar="N", help="--checkpoint: " + REPLAN_HELP)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the export that was asked for."""
    if args.checkpoint is not None:
        if args.out is None:
            print("conla export --checkpoint: --out is required", file=sys.stderr)
            return 2
        from conla_training import export_policy

        return export_policy.run(argparse.Namespace(
            checkpoint=args.checkpoint, out=args.out, name=args.name, text_encoder_mode=args.text_encoder_mode,
            episodes=args.episodes, parity_samples=args.parity_samples, opset=args.opset or 17, force=args.force,
            recipe=args.recipe, replan_every=args.replan_every))
    if args.text_encoder:
        from conla_training import export_text_encoder

        return export_text_encoder.run(argparse.Namespace(out=args.out, force=args.force, opset=args.opset or 17))
    if args.out is None:
        print("conla export --lam: --out is required", file=sys.stderr)
        return 2
    from conla_training import export_lam

    return export_lam.run(argparse.Namespace(lam=args.lam, out=args.out, videos=args.videos,
                                             parity_pairs=args.parity_pairs, opset=args.opset or 18))
