"""Run generation items in worker processes: skip finished ones, seed each item, survive failures.

Shared by the episode and video generators. The parent decides what is already done (cheap checks
on files), hands the rest to N worker processes started with the 'spawn' method (MuJoCo's GL
contexts do not survive fork), and shows one progress bar. Each worker builds its context (one
SimWorld) once and reuses it for every item it gets. An item that raises is reported with its name
and error and counted; the run goes on. A worker process that dies outright (a segfault in native
code) breaks the pool: the few items in flight are redone one per fresh process (so the culprit
fails alone, named), and a fresh pool takes the rest.

Determinism does not depend on the worker count: every item carries its own seeds, derived from
(base seed, names, index) by `item_seed`, and never from the process or the order of work.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

Status = Literal["written", "skipped", "failed"]


class Item(Protocol):
    """What a generator hands to workers: picklable, with a unique, file-safe name."""

    @property
    def name(self) -> str: ...


ItemT = TypeVar("ItemT", bound=Item)


@dataclass
class ItemResult:
    """The outcome of one item."""

    name: str
    status: Status
    seconds: float = 0.0
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what the work function returned


@dataclass
class RunReport(Generic[ItemT]):
    """Every item's outcome, in the order the items were given, and the wall time of the run."""

    results: list[ItemResult]
    seconds: float
    workers: int

    def count(self, status: Status) -> int:
        """How many items ended with `status`."""
        return sum(result.status == status for result in self.results)

    @property
    def failures(self) -> list[ItemResult]:
        """The failed items, with their errors."""
        return [result for result in self.results if result.status == "failed"]


def item_seed(base_seed: int, *keys: str | int) -> int:
    """A 32-bit seed that depends only on the base seed and the item's keys (names, indices).

    Strings are hashed with CRC-32 (stable across processes and Python runs, unlike hash()).
    """
    words = [int(base_seed) & 0xFFFFFFFF]
    words += [zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF for key in keys]
    import numpy as np

    return int(np.random.SeedSequence(words).generate_state(1)[0])


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- worker side ---------------------------------------------------------------------------------

_CONTEXT: Any = None  # the per-process context (a SimWorld), built once by _init_worker
_SETUP_ERROR: str | None = None  # why building it failed: every item of that worker fails with it


def _close(context: Any) -> None:
    close = getattr(context, "close", None)
    if callable(close):
        close()


def _init_worker(setup: Callable[[Any], Any], setup_arg: Any) -> None:
    global _CONTEXT, _SETUP_ERROR
    # Ctrl-C goes to the whole process group: let the parent decide, so a worker finishes its item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _CONTEXT = setup(setup_arg)
    except Exception as error:  # a raising initializer would break the pool with no message
        _SETUP_ERROR = f"worker set-up failed: {_describe(error)}"
        return
    # multiprocessing children leave through os._exit, which skips atexit: close the world here.
    mp_util.Finalize(None, _close, args=(_CONTEXT,), exitpriority=10)


def _describe(error: BaseException) -> str:
    """The error's type and message, plus where it was raised (the innermost frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _run_one(work: Callable[[Any, Any], dict[str, Any] | None], context: Any, item: Item) -> ItemResult:
    start = time.perf_counter()
    try:
        info = work(context, item) or {}
    except Exception as error:
        return ItemResult(item.name, "failed", time.perf_counter() - start, _describe(error))
    return ItemResult(item.name, "written", time.perf_counter() - start, info=info)


def _run_in_worker(work: Callable[[Any, Any], dict[str, Any] | None], item: Item) -> ItemResult:
    if _SETUP_ERROR is not None:
        return ItemResult(item.name, "failed", error=_SETUP_ERROR)
    return _run_one(work, _CONTEXT, item)


# -- parent side ---------------------------------------------------------------------------------


def run_items(
    items: Sequence[ItemT],
    work: Callable[[Any, ItemT], dict[str, Any] | None],
    *,
    setup: Callable[[Any], Any],
    setup_arg: Any = None,
    is_done: Callable[[ItemT], bool] | None = None,
    workers: int = 1,
    progress: bool = True,
    desc: str = "items",
) -> RunReport[ItemT]:
    """Do `work(context, item)` for every item not already done; return every item's outcome.

    Args:
        items: the work, each with a unique `name`; picklable when workers > 1.
        work: module-level function (picklable) doing one item with the worker's context; it
            must write its output atomically; what it returns is kept as the item's info.
        setup: module-level function building a worker's context from `setup_arg` (called once
            per worker process; with workers=1, once in this process). A context with a
            `close()` method is closed at the end.
        is_done: checked in this process before dispatch; True -> the item is skipped.
        workers: processes to use; 1 runs in this process (no spawn).
        progress: show a tqdm bar on stderr.
        desc: the bar's label.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("item names must be unique")
    results: dict[str, ItemResult] = {}
    todo: list[ItemT] = []
    for item in items:
        if is_done is not None and is_done(item):
            results[item.name] = ItemResult(item.name, "skipped")
        else:
            todo.append(item)
    workers = max(1, min(int(workers), len(todo))) if todo else 1
    with tqdm(total=len(items), initial=len(results), desc=desc, unit="item", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:

        def record(result: ItemResult) -> None:
            results[result.name] = result
            bar.update(1)
            if result.status == "failed":
                bar.write(f"FAILED {result.name}: {result.error}", file=sys.stderr)
                bar.set_postfix(failed=sum(r.status == "failed" for r in results.values()))

        if workers == 1:
            _run_here(todo, work, setup, setup_arg, record)
        else:
            _run_pool(todo, work, setup, setup_arg, workers, record)
    return RunReport([results[name] for name in names], time.perf_counter() - start, workers)


def _run_here(todo, work, setup, setup_arg, record) -> None:
    if not todo:
        return
    try:
        context = setup(setup_arg)
    except Exception as error:
        for item in todo:
            record(ItemResult(item.name, "failed", error=f"set-up failed: {_describe(error)}"))
        return
    try:
        for item in todo:
            record(_run_one(work, context, item))
    finally:
        _close(context)


def _run_pool(todo, work, setup, setup_arg, workers, record) -> None:
    """Run items in a spawn pool; after a worker dies, redo the items it may have held one by one."""
    queue = deque(todo)
    while queue:
        suspects = _pool_session(queue, work, setup, setup_arg, workers, record)
        if suspects:
            print(f"a worker process died; redoing the {len(suspects)} item(s) in flight one by one",
                  file=sys.stderr)
        for item in suspects:  # alone in a pool of one, a crash names its item and costs no other
            if _pool_session(deque([item]), work, setup, setup_arg, 1, record):
                record(ItemResult(item.name, "failed", error="its worker process died (crashed or killed)"))


def _pool_session(queue: deque, work, setup, setup_arg, workers, record) -> list[Item]:
    """Take items from `queue` into a fresh pool until it is empty or the pool breaks.

    Only 2 × workers items are in flight at a time, so a dying worker takes few items with it: they
    are returned (the rest stay queued).
    """
    spawn = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=spawn,
                                  initializer=_init_worker, initargs=(setup, setup_arg))
    in_flight: dict[cf.Future, Item] = {}
    lost: list[Item] = []
    try:
        while (queue or in_flight) and not lost:
            while queue and len(in_flight) < 2 * workers:
                item = queue.popleft()
                in_flight[pool.submit(_run_in_worker, work, item)] = item
            finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            broken = False
            for future in finished:
                try:
                    result = future.result()
                except cf.process.BrokenProcessPool:
                    broken = True  # every future not yet done fails the same way
                    continue
                except Exception as error:  # e.g. an unpicklable result
                    result = ItemResult(in_flight[future].name, "failed", error=_describe(error))
                del in_flight[future]
                record(result)
            if broken:
                lost = list(in_flight.values())
    except BaseException:  # Ctrl-C: drop the queue; workers finish (and write out) their item
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return lost


def add_generation_arguments(parser: argparse.ArgumentParser, item: str, default_noise: float) -> None:
    """The options `conla sim episodes` and `conla sim videos` share; `item` is 'episode' or 'clip'."""
    parser.add_argument("--tasks", nargs="+", default=["mt10"], metavar="TASK",
                        help="MT10 task names (reach, or Meta-World's reach-v3), or 'all' / 'mt10' (default: mt10)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"base seed: {item} i of a task uses world seed SEED + i (default: 0)")
    parser.add_argument("--image-size", type=int, default=64, help="camera image side in pixels (default: 64)")
    parser.add_argument("--noise", type=float, default=default_noise,
                        help=f"std of the Gaussian noise added to the expert's actions (default: {default_noise})")
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"cap on control steps per {item} (default: the world's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
