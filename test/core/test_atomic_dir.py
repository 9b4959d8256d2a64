"""publish_directory: a finished folder replaces the old one whole, readable by others."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

from conla_ros.core.atomic_dir import publish_directory


def _build(parent: Path, text: str) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".out.", suffix=".tmp"))
    (tmp / "file.txt").write_text(text)
    return tmp


def test_new_and_replaced_folders_are_whole_and_readable(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish_directory(_build(tmp_path, "one"), out)
    assert (out / "file.txt").read_text() == "one"
    (out / "stale.txt").write_text("from the old folder")
    publish_directory(_build(tmp_path, "two"), out)
    assert sorted(p.name for p in out.iterdir()) == ["file.txt"] and (out / "file.txt").read_text() == "two"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and stat.S_IMODE((out / "file.txt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left


def test_publish_directory_keeps_sub_folders_enterable(tmp_path):
    """A copied instruction encoder sits in a sub-folder: it must stay listable (0755), its files 0644."""
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    (tmp / "text_encoder").mkdir()
    (tmp / "text_encoder" / "model.onnx").write_bytes(b"x")
    out = tmp_path / "model"
    publish_directory(tmp, out)
    assert stat.S_IMODE((out / "text_encoder").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "text_encoder" / "model.onnx").stat().st_mode) == 0o644
    assert (out / "text_encoder" / "model.onnx").read_bytes() == b"x"
