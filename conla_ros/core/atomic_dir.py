"""Publishing a directory built in a temporary sibling, so nothing half-written ever looks finished."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["publish_directory"]


def publish_directory(tmp: Path, out: Path) -> None:
    """Make `tmp`'s files world-readable and move `tmp` to `out`, replacing an existing `out`.

    Sub-folders (a copied instruction encoder) become 0755 and every file in them 0644.

    `tmp` must be on `out`'s file system (a sibling made with `tempfile.mkdtemp(dir=out.parent)`,
    which is private: 0700). An existing `out` is first moved aside and removed only after the new
    folder is in place, so `out` is never missing for longer than one rename.
    """
    for folder, _, files in os.walk(tmp):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
