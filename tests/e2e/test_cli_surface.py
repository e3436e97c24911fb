"""The CLI's surface: every slip at the command line is a usage error (exit 2, Click's
usage line, no traceback), `--version`, and shell completion from the store.

The command tree is discovered from the Typer app, so a new command inherits these
checks without being listed here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from hpcfleet.cli import app, run_cli
from registry.store import Store
from tests.helpers import HPCFLEET, REPO, cli, cli_env, consortium

ROOT = typer.main.get_command(app)


def command_tree(command: object = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and group under `command`, itself included."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_tree(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> object:
    command: object = ROOT
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def is_group(path: tuple[str, ...]) -> bool:
    return hasattr(command_at(path), "commands")


def has_required_params(path: tuple[str, ...]) -> bool:
    return any(p.required for p in command_at(path).params)  # type: ignore[attr-defined]


COMMANDS = [p for p in command_tree() if p and not is_group(p)]
GROUPS = [p for p in command_tree() if is_group(p)]
WITH_REQUIRED = [p for p in COMMANDS if has_required_params(p)]


def ids(path: tuple[str, ...]) -> str:
    return " ".join(path) or "hpcfleet"


@pytest.fixture(autouse=True)
def own_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process runs set Prefect defaults in os.environ: restore it afterwards."""
    saved = dict(os.environ)
    monkeypatch.setenv("HPCFLEET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HPCFLEET_DATABASE_URL", raising=False)
    yield
    os.environ.clear()
    os.environ.update(saved)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code: int, out: str, err: str, path: tuple[str, ...]) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert f"Usage: hpcfleet {' '.join(path)}".rstrip() in err, err
    assert "Error:" in err


def test_the_tree_is_discovered() -> None:
    assert ("run", "launch") in COMMANDS and ("site", "add") in COMMANDS
    assert ("run",) in GROUPS and () in GROUPS


@pytest.mark.parametrize("path", WITH_REQUIRED, ids=ids)
def test_a_missing_argument_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *path)
    assert_usage_error(code, out, err, path)
    assert "Missing" in err


@pytest.mark.parametrize("path", COMMANDS + GROUPS, ids=ids)
def test_an_unknown_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *path, "--no-such-option")
    assert_usage_error(code, out, err, path)
    assert "No such option: --no-such-option" in err


@pytest.mark.parametrize("path", GROUPS, ids=ids)
def test_an_unknown_subcommand_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *path, "nosuch")
    assert_usage_error(code, out, err, path)
    assert "No such command 'nosuch'" in err


@pytest.mark.parametrize("path", COMMANDS, ids=ids)
def test_an_extra_argument_to_a_command_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    # Enough positional values for every argument, then one too many.
    arguments = [p for p in command_at(path).params if p.param_type_name == "argument"]  # type: ignore[attr-defined]
    options = [
        f"{p.opts[0]}=x"
        for p in command_at(path).params  # type: ignore[attr-defined]
        if p.param_type_name == "option" and p.required
    ]
    code, out, err = run(capsys, *path, *options, *(["x"] * len(arguments)), "extra-one")
    assert_usage_error(code, out, err, path)


@pytest.mark.parametrize("path", [p for p in GROUPS if p], ids=ids)
def test_a_group_without_a_subcommand_prints_its_help(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *path)
    assert code == 2
    assert "Commands:" in err and "Traceback" not in out + err
    code, out, err = run(capsys, *path, "--help")
    assert code == 0 and "Commands:" in out and not err


def test_a_typo_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sit", "list")
    assert code == 2 and "Did you mean 'site'?" in err
    code, _, err = run(capsys, "run", "list", "--jsn")
    assert code == 2 and "--json" in err


def test_bare_hpcfleet_and_misplaced_root_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "Commands:" in err
    code, _, err = run(capsys, "--debug")
    assert code == 2 and "Missing command" in err
    code, _, err = run(capsys, "--json")
    assert code == 2 and "--version" in err


def test_version_from_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"hpcfleet {version('hpcfleet')}"
    code, out, _ = run(capsys, "--version", "--json")
    found = json.loads(out)
    assert code == 0
    assert found["prefect"] == version("prefect") and found["mlflow"] == version("mlflow")
    assert found["paramiko"] == version("paramiko") and found["python"].count(".") == 2


def test_a_project_error_is_one_sentence_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "schema", "nope")
    assert code == 2 and err.startswith("hpcfleet: unknown document kind") and "Traceback" not in err
    code, _, err = run(capsys, "--debug", "schema", "nope")
    assert code == 2 and "Traceback" in err


def test_an_unusable_home_is_one_sentence_not_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HPCFLEET_HOME", str(blocker / "home"))
    code, _, err = run(capsys, "run", "list")
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "Not a directory" in err
    code, _, err = run(capsys, "--debug", "run", "list")
    assert code == 1 and "Traceback" in err


# -- real processes ------------------------------------------------------------------
def test_python_m_hpcfleet_reports_usage_errors(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    for args in (["nosuch"], ["run", "launch", "--nosuch"], ["site", "add"]):
        result = cli(env, *args, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Usage: hpcfleet") and "Traceback" not in result.stderr
    result = cli(env, "--version", timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("hpcfleet ")


def complete(env: dict[str, str], line: str) -> list[str]:
    """What bash completion offers for `line` (completing its last word)."""
    words = line.split(" ")
    result = subprocess.run(
        HPCFLEET,
        env={
            **env,
            "_HPCFLEET_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout.split()


def test_completion_offers_sites_runs_and_partners_from_the_store(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert complete(env, "hpcfleet site show ") == []  # no store yet: nothing, no error
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    store.close()
    assert complete(env, "hpcfleet site show ") == ["site-a", "site-b"]
    assert complete(env, "hpcfleet site check site-b") == ["site-b"]
    assert complete(env, "hpcfleet site add x --as c") == ["csc", "cuni"]
    assert "list" in complete(env, "hpcfleet run l")
    assert complete({**env, "HPCFLEET_URL": "https://hpcfleet.invalid"}, "hpcfleet site show ") == []


def test_completion_scripts_for_each_shell(tmp_path: Path) -> None:
    # Typer's switch to name the shell instead of detecting the parent process's.
    env = {**cli_env(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    for shell in ("bash", "zsh", "fish"):
        result = subprocess.run(
            [*HPCFLEET, "--show-completion", shell],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        assert "_HPCFLEET_COMPLETE" in result.stdout
