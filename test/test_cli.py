"""The `conla` command: the README's command tree, help everywhere, honest "not yet" answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conla_ros import cli

DESIGN_COMMANDS = [
    ("sim", "episodes"), ("sim", "videos"), ("train", "lam"), ("train", "vla"), ("train", "policy"),
    ("label",), ("export",), ("eval", "lam"), ("eval", "sim"), ("eval", "ros"), ("bench", "sim"),
]


def test_every_design_command_exists() -> None:
    paths = {command.path for command in cli.COMMANDS}
    assert set(DESIGN_COMMANDS) <= paths


def test_top_level_help_lists_the_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("sim", "train", "label", "export", "eval", "bench", "demo"):
        assert word in out


@pytest.mark.parametrize("path", [c.path for c in cli.COMMANDS], ids=lambda p: " ".join(p))
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: conla " + " ".join(path) in capsys.readouterr().out


def test_unbuilt_command_says_so_and_fails(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Every README command is built now: check the "not yet" path with a stand-in unbuilt one.
    unbuilt = cli.Command(("eval", "unbuilt"), "a command still to come", planned_in="a later issue")
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, unbuilt))
    assert cli.main([*unbuilt.path, "--anything"]) == cli.EXIT_NOT_AVAILABLE
    assert "not available yet (planned in a later issue)" in capsys.readouterr().err


def test_every_command_is_built() -> None:
    assert [c.path for c in cli.COMMANDS if c.module is None] == []


def test_missing_dependency_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    command = cli.Command(("train", "lam"), "x", module="no_such_package_for_conla_test", extra="training")
    with pytest.raises(SystemExit) as exit_info:
        cli._load(command)
    assert exit_info.value.code == cli.EXIT_MISSING_DEPENDENCY
    assert "pip install 'conla_ros[training]'" in capsys.readouterr().err


def test_help_of_training_commands_does_not_import_torch() -> None:
    code = ("import sys\nfrom conla_ros import cli\n"
            "for path in (['--help'], ['train', 'lam', '--help'], ['export', '--help']):\n"
            "    try:\n        cli.main(path)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
