"""The training loop shared by the LAM, VLA and policy trainers (accelerate-based).

A trainer subclasses `Trainer` and supplies the model, the data and the loss; the engine does the
rest the same way for every model:
  - `accelerate`: one code path for CPU, one GPU (bf16 when `mixed_precision: auto`), several GPUs
    and nodes (`accelerate launch` / `torchrun`), DDP with `broadcast_buffers=False` (models keep
    per-rank statistics in buffers, e.g. code usage) and `find_unused_parameters` on request.
  - Data: `PairBatchSampler`-style deterministic batch samplers that start at a global batch
    index, so the data position of a run is the number of optimiser steps taken.
  - Adam (LAPA's betas and clip from TrainConfig), constant or cosine LR with linear warm-up.
  - tqdm bar on the main process (loss, pairs/s), TensorBoard scalars every `log_every` steps
    (averaged over processes), PNG sample grids every `sample_every` steps.
  - Atomic checkpoints every `checkpoint_every` steps and at exit, with the model's config, the
    run config, step, optimiser, scheduler, every rank's RNG state and the data position;
    `resume=True` continues exactly. Ctrl-C (SIGINT) or SIGTERM (e.g. a cluster's preemption)
    asks the loop to stop after the current step and write a checkpoint there (distributed: at the
    next log step, on which all ranks agree); a second Ctrl-C stops at once, keeping the last
    complete checkpoint (status "killed"). An exception leaves the last complete checkpoint too.
  - An optional exponential moving average of the weights (`ema_decay`), updated after every
    optimiser step with the warm-up decay min(d, (1 + step) / (10 + step)) (so early weights fade
    fast) and saved in every checkpoint as "ema" beside the live weights "model". Resume
    continues both; `load_weights(payload)` (what export and labelling use) prefers the average.
  - summary.json at exit: status, steps, speed, loader wait, last scalars, skipped files (by name,
    over all ranks), and a SHA-256 of the weights on every rank with `ranks_agree`.

Run directory layout (`TrainConfig.run_dir`):
    config.yaml                 the run config as used
    checkpoints/step_XXXXXXXX/  see engine/checkpoint.py
    tensorboard/                TensorBoard event files
    samples/step_XXXXXXXX.png   sample grids
    summary.json                the run summary (rewritten at every exit)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from conla_training.engine.checkpoint import (
    CHECKPOINTS_DIR,
    latest_checkpoint,
    load_checkpoint,
    load_rng_state,
    set_rng_state,
    write_checkpoint,
)
from conla_training.engine.config import TrainConfig

__all__ = ["Trainer", "TrainerError", "WeightAverage", "load_weights"]

log = logging.getLogger(__name__)


class TrainerError(RuntimeError):
    """A run that cannot start (e.g. a run folder with checkpoints, without --resume)."""


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_weights(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to use from a checkpoint payload: the EMA when the run kept one, else the live ones."""
    return payload.get("ema") or payload["model"]


class WeightAverage:
    """An exponential moving average of a model's parameters; buffers are copied as they are.

    Kept on the model's device, in float32. `decay(step)` warms up as min(d, (1 + step) / (10 + step)).
    """

    def __init__(self, model: nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = decay
        source = state if state is not None else model.state_dict()
        self.state = {k: v.detach().clone() for k, v in source.items()}
        self._parameters = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for name, value in model.state_dict().items():
            average = self.state[name]
            if name in self._parameters and value.is_floating_point():
                average.mul_(d).add_(value.detach().to(average.dtype), alpha=1.0 - d)
            else:
                average.copy_(value)

    def cpu_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.state.items()}


class _StopRequest:
    """SIGINT/SIGTERM → a flag the loop checks between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def agreed(self, acc, world: int, check_now: bool) -> bool:
        if world == 1:
            return self.requested
        if not check_now:
            return False
        flag = torch.tensor([1.0 if self.requested else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)


class Trainer(ABC):
    """Subclass and implement the abstract methods; call `fit()`."""

    #: Pass find_unused_parameters=True to DDP (a model whose parameters are not all used every step).
    find_unused_parameters = False
    #: What one item of a batch is called in the progress bar and summary ("pairs", "samples").
    unit = "samples"

    def __init__(self, train: TrainConfig, run_config: dict[str, Any], run_config_yaml: str,
                 resume: bool = False) -> None:
        self.train = train
        self.run_config = run_config
        self.run_config_yaml = run_config_yaml
        self.resume = resume
        self.run_dir = Path(train.run_dir)
        self.skipped: dict[str, str] = {}  # file → reason, reported once each

    # --- to implement ---------------------------------------------------------------------------

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model (built under the run seed, on CPU)."""

    @abstractmethod
    def model_config(self) -> dict[str, Any]:
        """The model's config as a plain dict (goes into every checkpoint)."""

    @abstractmethod
    def build_loader(self, start_batch: int, rank: int, world_size: int) -> Iterable[dict]:
        """An endless iterable of batches (dicts) for this rank, starting at global batch `start_batch`."""

    @abstractmethod
    def compute_loss(
        self, model: nn.Module, batch: dict, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        """(loss, scalars to log (0-dim tensors, same keys on every rank), output for `sample_grid`)."""

    # --- optional hooks -------------------------------------------------------------------------

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        """Called on every rank after optimiser step `step` (1-based) with the unwrapped model."""
        return {}

    def before_save(self, model: nn.Module) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called on every rank (collectively) with the unwrapped model before a checkpoint is written."""

    def sample_grid(self, model: nn.Module, batch: dict, output: Any) -> np.ndarray | None:
        """An (H, W, 3) uint8 RGB image to save as samples/step_N.png, or None."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Trainer-specific values saved in checkpoints (e.g. label names)."""
        return {}

    def summary_extra(self) -> dict[str, Any]:
        return {}

    # --- helpers --------------------------------------------------------------------------------

    def note_skipped(self, entries: Iterable[tuple[str, str]]) -> None:
        """Report each unusable file once (by name) and remember it for the summary."""
        for name, reason in entries:
            if name not in self.skipped:
                self.skipped[name] = reason
                message = f"skipping {name}: {reason}"
                log.warning(message)

    def _lr_lambda(self, step: int) -> float:
        t = self.train
        if t.lr_warmup_steps and step < t.lr_warmup_steps:
            return (step + 1) / t.lr_warmup_steps
        if t.lr_schedule == "cosine":
            span = max(1, t.steps - t.lr_warmup_steps)
            progress = min(1.0, (step - t.lr_warmup_steps) / span)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    # --- the loop -------------------------------------------------------------------------------

    def fit(self) -> int:
        """Train to `steps`; returns 0 when finished, 130 when stopped by a signal (a checkpoint was saved)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, gather_object

        t = self.train
        precision = t.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        # accelerate deprecates broadcast_buffers but itself says to keep it for rank-local buffers.
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning)
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False,
                                            find_unused_parameters=self.find_unused_parameters)
        acc = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
        ckpt_root = self.run_dir / CHECKPOINTS_DIR

        # Where to start.
        start_ckpt = latest_checkpoint(self.run_dir)
        if start_ckpt is not None and not self.resume:
            raise TrainerError(f"{self.run_dir} already has checkpoints ({start_ckpt.name}): pass --resume to "
                               f"continue it, or choose another run directory")
        if self.resume and start_ckpt is None:
            log.warning("%s: no checkpoint to resume from; starting from step 0", self.run_dir)
        payload = load_checkpoint(start_ckpt) if start_ckpt is not None else None
        if payload is not None and payload["model_config"] != self.model_config():
            raise TrainerError(f"{start_ckpt}: the checkpoint's model config differs from this run's config; "
                               f"resume with the config the run was started with")

        torch.manual_seed(t.seed)  # identical initial weights on every rank
        model = self.build_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda)
        step = 0
        if payload is not None:
            model.load_state_dict(payload["model"])
        if t.compile:
            model = torch.compile(model)
        model, optimizer = acc.prepare(model, optimizer)
        if payload is not None:  # after prepare: the optimiser state must land on the parameters' device
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            step = int(payload["step"])
        ema = None
        if t.ema_decay:  # after prepare: the average lives on the parameters' device
            unwrapped = acc.unwrap_model(model)
            saved = payload.get("ema") if payload is not None else None
            if saved is not None:
                saved = {k: v.to(acc.device) for k, v in saved.items()}
            ema = WeightAverage(getattr(unwrapped, "_orig_mod", unwrapped), t.ema_decay, saved)
        loader = iter(self.build_loader(step, rank, world))

        # RNG: per rank, restored exactly on resume (after everything that might draw from it).
        rng = load_rng_state(start_ckpt, rank) if start_ckpt is not None else None
        if rng is not None:
            set_rng_state(rng)
        else:
            if start_ckpt is not None:
                log.warning("%s has no RNG state for rank %d; reseeding", start_ckpt, rank)
            torch.manual_seed(t.seed * 1000 + rank + 1 + step)
            np.random.seed((t.seed * 1000 + rank + 1 + step) % 2**32)

        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.run_dir / "config.yaml", self.run_config_yaml)
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step if step else None)
        bar = None
        if main and t.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)

        start_step, last_saved = step, (step if payload is not None else -1)
        status, scalars_last = "running", {}
        loop_time, wait_time = 0.0, 0.0
        t_start = time.perf_counter()

        def save(at: int) -> None:
            nonlocal last_saved
            unwrapped = acc.unwrap_model(model)
            unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
            self.before_save(unwrapped)
            ckpt = None
            if main:
                ckpt = {
                    "step": at,
                    "model": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()},
                    **({"ema": ema.cpu_state()} if ema is not None else {}),
                    "model_class": f"{type(unwrapped).__module__}.{type(unwrapped).__qualname__}",
                    "model_config": self.model_config(),
                    "run_config": self.run_config,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "data": {"batches_consumed": at, "batch_size": t.batch_size, "world_size": world},
                    "extra": self.extra_state(),
                }
            from conla_training.engine.checkpoint import get_rng_state

            write_checkpoint(ckpt_root, at, ckpt, get_rng_state(), rank, acc.wait_for_everyone,
                             self.run_config_yaml, t.keep_checkpoints)
            last_saved = at

        stop = _StopRequest()
        try:
            with stop.installed():
                while step < t.steps:
                    t0 = time.perf_counter()
                    batch = next(loader)
                    t1 = time.perf_counter()
                    self.note_skipped(batch.pop("skipped", []))
                    batch = {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v
                             for k, v in batch.items()}
                    model.train()
                    with acc.autocast():
                        loss, scalars, output = self.compute_loss(model, batch, step)
                    acc.backward(loss)
                    grad_norm = acc.clip_grad_norm_(model.parameters(), t.grad_clip) if t.grad_clip else None
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    unwrapped = acc.unwrap_model(model)
                    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
                    if ema is not None:
                        ema.update(unwrapped, step)
                    extra = self.after_step(unwrapped, step)
                    t2 = time.perf_counter()
                    wait_time += t1 - t0
                    loop_time += t2 - t0

                    log_now = step % t.log_every == 0 or step == t.steps
                    if log_now:
                        scalars_last = self._reduce_scalars(acc, scalars, grad_norm, extra)
                        speed = t.batch_size * (step - start_step) / max(loop_time, 1e-9)
                        scalars_last["train/lr"] = scheduler.get_last_lr()[0]
                        scalars_last[f"speed/{self.unit}_per_s"] = speed
                        scalars_last["speed/loader_wait_fraction"] = wait_time / max(loop_time, 1e-9)
                        if writer is not None:
                            for key, value in scalars_last.items():
                                writer.add_scalar(key, value, step)
                        if bar is not None:
                            bar.set_postfix({"loss": f"{scalars_last.get('loss/total', float('nan')):.4f}",
                                             f"{self.unit}/s": f"{speed:.1f}"}, refresh=False)
                    elif extra and writer is not None:
                        for key, value in extra.items():
                            writer.add_scalar(key, value, step)
                    if bar is not None:
                        bar.update(1)

                    if main and t.sample_every and step % t.sample_every == 0:
                        self._save_sample(acc, model, batch, output, step, writer)
                    if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
                        save(step)
                    # Stop requests (Ctrl-C, SIGTERM) take effect between steps; in a distributed run
                    # all ranks agree on the step, checked at log steps (one collective there).
                    if stop.agreed(acc, world, log_now):
                        status = "interrupted"
                        if main:
                            print(f"\nstop requested: saving a checkpoint at step {step}", file=sys.stderr, flush=True)
                        break
            if status == "running":
                status = "finished"
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, keep the last complete checkpoint
            status = "killed"
        except BaseException:
            status = "failed"
            raise
        finally:
            if bar is not None:
                bar.close()
            try:
                if step != last_saved and status in ("finished", "interrupted"):
                    save(step)
                if status != "killed":
                    self._write_summary(acc, gather_object, model, status, start_step, step,
                                        time.perf_counter() - t_start, loop_time, wait_time, scalars_last,
                                        precision)
            finally:
                if writer is not None:
                    writer.close()
        acc.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Leave together, and tear gloo/NCCL down before interpreter exit (else a rank can abort).
            acc.wait_for_everyone()
            torch.distributed.destroy_process_group()
        return 0 if status == "finished" else 130

    @staticmethod
    def _reduce_scalars(acc, scalars: dict[str, torch.Tensor], grad_norm, extra: dict[str, float]) -> dict[str, float]:
        """Mean over processes of the step's scalars (a collective: same keys on every rank)."""
        names = sorted(scalars)
        values = torch.stack([scalars[k].detach().float().to(acc.device) for k in names])
        if grad_norm is not None:
            names.append("train/grad_norm")
            values = torch.cat([values, torch.as_tensor(grad_norm, device=values.device).float().reshape(1)])
        values = acc.reduce(values, reduction="mean").tolist()
        return dict(zip(names, values, strict=True)) | {k: float(v) for k, v in extra.items()}

    def _save_sample(self, acc, model, batch, output, step: int, writer) -> None:
        unwrapped = acc.unwrap_model(model)
        unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad(), acc.autocast():
                grid = self.sample_grid(unwrapped, batch, output)
        finally:
            unwrapped.train(was_training)
        if grid is None:
            return
        import cv2

        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"step_{step:08d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        if writer is not None:
            writer.add_image("samples", grid, step, dataformats="HWC")

    def _write_summary(self, acc, gather_object, model, status: str, start_step: int, step: int,
                       elapsed: float, loop_time: float, wait_time: float, scalars: dict[str, float],
                       precision: str) -> None:
        unwrapped = acc.unwrap_model(model)
        digest = hashlib.sha256()
        # Parameters only: buffers may legitimately differ per rank (e.g. the quantizer's usage counts).
        for name, tensor in sorted(unwrapped.named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        if acc.num_processes > 1 and status != "failed":
            checksums = gather_object([digest.hexdigest()])
            skipped_lists = gather_object([self.skipped])
            skipped: dict[str, str] = {}
            for part in skipped_lists:
                skipped.update(part)
        else:
            checksums, skipped = [digest.hexdigest()], dict(self.skipped)
        if not acc.is_main_process:
            return
        steps_done = step - start_step
        summary = {
            "status": status,
            "step": step,
            "start_step": start_step,
            "target_steps": self.train.steps,
            "world_size": acc.num_processes,
            "device": str(acc.device),
            "mixed_precision": precision,
            "elapsed_s": round(elapsed, 3),
            f"{self.unit}_per_s": round(self.train.batch_size * steps_done / loop_time, 3) if loop_time else None,
            "loader_wait_fraction": round(wait_time / loop_time, 4) if loop_time else None,
            "last_scalars": scalars,
            "skipped_count": len(skipped),
            "skipped_files": skipped,
            "weights_sha256_per_rank": checksums,
            "ranks_agree": len(set(checksums)) == 1,
            **self.summary_extra(),
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
