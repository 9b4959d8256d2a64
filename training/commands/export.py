"""`conla export`: one command, three things to export (the README's command table).

    conla export --checkpoint CKPT --out models/NAME     a trained policy (exports.policy)
    conla export --lam CKPT --out DIR                    the LAM's encoder + quantizer (exports.lam)
    conla export --text-encoder [--out DIR] [--force]    all-MiniLM-L6-v2, once, into the cache

This module is the command line of all three, declared here once: it chooses, calls the export
(each lives in its own module under conla_training.exports), and reports the result or the
export's own error. No torch at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conla_training.engine.command import command_main
from conla_training.exports.policy import RECIPE_HELP, REPLAN_HELP


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
    """Run the export that was asked for: 0 done, 1 the export failed, 2 a usage error."""
    if args.checkpoint is not None:
        what, export, needs_out = "--checkpoint", _policy, True
    elif args.text_encoder:
        what, export, needs_out = "--text-encoder", _text_encoder, False
    else:
        what, export, needs_out = "--lam", _lam, True
    if needs_out and args.out is None:
        print(f"conla export {what}: --out is required", file=sys.stderr)
        return 2
    try:
        summary = export(args)
    except _Failed as failure:
        print(f"conla export {what}: {failure.error}", file=sys.stderr)
        return 1
    print(summary)
    return 0


class _Failed(Exception):
    """An export's own error (bad checkpoint, failed parity check, ...), to be reported and exit 1."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _policy(args: argparse.Namespace) -> str:
    from conla_ros.core.model_spec import ModelLoadError
    from conla_training.exports.policy import ExportError, export_policy, read_recipe

    try:
        result = export_policy(
            args.checkpoint, args.out, name=args.name, text_encoder_mode=args.text_encoder_mode,
            episodes=args.episodes, parity_samples=args.parity_samples, opset=args.opset or 17, force=args.force,
            recipe=read_recipe(args.recipe), replan_every=args.replan_every)
    except (ExportError, ModelLoadError) as error:
        raise _Failed(error) from error
    return (f"exported {result['out']} (policy.onnx {result['policy_bytes'] / 1e6:.2f} MB, parity max abs diff "
            f"{result['parity_max_abs_diff']:.2g} on {result['samples']} samples)")


def _text_encoder(args: argparse.Namespace) -> str:
    from conla_ros.core.instruction_encoder import text_encoder_dir
    from conla_training.exports.text_encoder import export_text_encoder

    try:
        meta = export_text_encoder(args.out, force=args.force, opset=args.opset or 17)
    except (OSError, RuntimeError) as error:
        raise _Failed(error) from error
    out = args.out if args.out is not None else text_encoder_dir()
    return (f"{out}: {meta['name']} ({meta['dim']}-d), parity max abs diff {meta['parity']['max_abs_diff']:.2g} "
            f"on {meta['parity']['sentences']} sentences")


def _lam(args: argparse.Namespace) -> str:
    from conla_training.exports.lam import LAM_META, LAM_ONNX, export_lam

    try:
        meta = export_lam(args.lam, args.out, args.videos, args.parity_pairs, args.opset or 18)
    except (FileNotFoundError, RuntimeError) as error:
        raise _Failed(error) from error
    parity = meta["parity"]
    return (f"wrote {args.out / LAM_ONNX} and {args.out / LAM_META}; parity: {parity['identical']}/{parity['pairs']} "
            "sample pairs give identical codes")


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.commands.export`."""
    return command_main("conla export", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
