"""`conla bench lam [--config config/lam.yaml]`: LAM training speed and whether the data loader keeps up.

Prints a table (and with `--json FILE` writes it):
  - model: training frame pairs/s of the full step (forward, backward, clip, Adam) on synthetic
    pairs already on the device — bf16 autocast on CUDA when the config says `auto`/`bf16`,
    optionally `torch.compile`d; for the config's ConLA switches with the contrastive terms on
    (post-warm-up cost) and, for reference, MSE only (warm-up / LAPA cost);
  - loader: pairs/s the config's DataLoader delivers alone (decode, preprocess, collate), when the
    config's data exists;
  - wait: the share of a step the model would wait for data = max(0, 1 − loader/model).
The figure to compare with the issue's goal (≥ 10,000 pairs/s on one H100 at width 256, 64×64) is
the model row at `--set model.width=256 --batch-size 256` or larger.

torch is imported inside `run` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from conla_training.engine.command import command_main

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config/lam.yaml"),
                        help="run config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--loader-batches", type=int, default=20, help="batches timed for the loader")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")


def _time_model(config, batch: int, steps: int, warmup: int, device, precision: str, compile_model: bool,
                contrast: bool) -> float:
    import torch

    from conla_training.models.lam import LatentActionModel

    torch.manual_seed(0)
    model = LatentActionModel(config).to(device).train()
    step_model = torch.compile(model) if compile_model else model
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    s = config.image_size
    o_t = torch.rand(batch, 3, s, s, device=device)
    o_tk = torch.rand(batch, 3, s, s, device=device)
    labels = torch.randint(0, 8, (batch,), device=device)
    second = {"o_t2": o_tk.flip(0), "o_tk2": o_t.flip(0)} if config.contrast.needs_second_pair else {}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = step_model(o_t, o_tk, labels=labels, contrast=contrast, **second)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def _time_loader(run_config, batch: int, batches: int) -> float | None:
    from conla_training.datasets.video_pairs import FramePairDataset, PairBatchSampler, collate_pairs

    try:
        dataset, _ = FramePairDataset.from_config(run_config.data, run_config.model.preprocessing(),
                                                  second_pair=run_config.model.contrast.needs_second_pair)
    except FileNotFoundError as error:
        print(f"loader: skipped ({error})", file=sys.stderr)
        return None
    import torch

    workers = run_config.data.num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PairBatchSampler(dataset.epoch_length, batch),
                                         num_workers=workers, collate_fn=collate_pairs,
                                         prefetch_factor=4 if workers else None, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # worker start-up and first decode are not the steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch * batches / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> int:
    import torch

    from conla_ros.core.config import ConfigError, apply_overrides, load_config
    from conla_training.trainers.lam import LAMRunConfig

    try:
        run_config = load_config(LAMRunConfig, args.config)
        if args.overrides:
            run_config = apply_overrides(run_config, args.overrides)
    except ConfigError as error:
        print(f"conla bench lam: {error}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = run_config.train.mixed_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "no"
    batch = args.batch_size or run_config.train.batch_size
    model_config = run_config.model
    rows = []
    with_contrast = _time_model(model_config, batch, args.steps, args.warmup, device, precision, args.compile,
                                contrast=True)
    rows.append(("model, full loss" + (" (ConLA)" if model_config.contrast.enabled else ""), with_contrast))
    if model_config.contrast.enabled:
        rows.append(("model, MSE only (warm-up / LAPA)",
                     _time_model(model_config, batch, args.steps, args.warmup, device, precision, args.compile,
                                 contrast=False)))
    loader = _time_loader(run_config, batch, args.loader_batches)
    if loader is not None:
        rows.append((f"loader ({run_config.data.num_workers} workers)", loader))
    wait = None if loader is None else max(0.0, 1.0 - loader / with_contrast)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"LAM training speed — {name}, {precision}, batch {batch}, {model_config.image_size}×"
          f"{model_config.image_size}, width {model_config.width}, compile {args.compile}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'what':<40} {'pairs/s':>12}")
    for what, value in rows:
        print(f"{what:<40} {value:>12,.1f}")
    if wait is not None:
        print(f"{'model waits for the loader':<40} {wait:>11.0%}")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": name, "precision": precision, "batch": batch,
                                         "rows": dict(rows), "wait_fraction": wait}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.commands.bench_lam`."""
    return command_main("conla bench lam", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
