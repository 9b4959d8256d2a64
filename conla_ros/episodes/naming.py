"""Names of recorded episodes: a format string with a few fields, never reusing a name on disk.

Fields of `name_format`: {prefix}, {index} (episodes started by this recorder, from 0), {time}
(UTC start time, 20261123T155100Z), {task} and {seed} (from the episode status; "unknown" / -1
without one). A name is one path component; an existing episode *or* an existing `NAME.partial`
(the remains of a killed recording: evidence, never silently replaced) makes the recorder move on
to the next index.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conla_ros.episodes import topics as T

__all__ = ["DEFAULT_NAME_FORMAT", "check_name_format", "episode_name", "free_episode_path"]

DEFAULT_NAME_FORMAT = "{prefix}_{time}_{index:03d}"
_MAX_TRIES = 10_000


def episode_name(fmt: str, *, prefix: str, index: int, when: dt.datetime, task: str = "unknown",
                 seed: int = -1) -> str:
    """The episode directory name `fmt` gives for these fields; ValueError if it is not a usable name."""
    try:
        name = fmt.format(prefix=prefix, index=index, time=when.strftime("%Y%m%dT%H%M%SZ"), task=task, seed=seed)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"name format {fmt!r} cannot be filled ({type(error).__name__}: {error}); fields: "
                         "{prefix} {index} {time} {task} {seed}") from None
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"name format {fmt!r} gives {name!r}, which is not a directory name")
    if name.endswith(T.PARTIAL_SUFFIX):
        raise ValueError(f"name format {fmt!r} gives {name!r}: {T.PARTIAL_SUFFIX} marks unfinished episodes")
    return name


def check_name_format(fmt: str) -> str | None:
    """Why `fmt` cannot name episodes, or None if it can (used to validate the parameter)."""
    try:
        episode_name(fmt, prefix="teleop", index=0, when=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    except ValueError as error:
        return str(error)
    return None


def free_episode_path(out_dir: Path, fmt: str, *, prefix: str, index: int, when: dt.datetime,
                      task: str = "unknown", seed: int = -1) -> tuple[Path, int]:
    """The first path at `index` or later that neither an episode nor a `.partial` occupies, and its index."""
    for candidate in range(index, index + _MAX_TRIES):
        name = episode_name(fmt, prefix=prefix, index=candidate, when=when, task=task, seed=seed)
        path = out_dir / name
        if not path.exists() and not path.with_name(name + T.PARTIAL_SUFFIX).exists():
            return path, candidate
    raise FileExistsError(f"{out_dir}: no free episode name from {fmt!r} after {_MAX_TRIES} tries "
                          "(add {index} to the name format)")
