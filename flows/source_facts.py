"""What only the launching machine knows of a run: the git commit of the spec's
directory (and whether it had uncommitted changes), and the hpcfleet version."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

GIT_TIMEOUT_SECONDS = 10


def hpcfleet_version() -> str:
    try:
        return metadata.version("hpcfleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_facts(directory: Path) -> dict[str, Any] | None:
    """{commit, dirty} of the repository holding `directory`; None outside one."""
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git(directory, "status", "--porcelain", "--", ".")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def launch_facts(spec_path: Path) -> dict[str, Any]:
    facts: dict[str, Any] = {"spec": spec_path.name, "hpcfleet_version": hpcfleet_version()}
    git = git_facts(spec_path.resolve().parent)
    if git is not None:
        facts["git"] = git
    return facts


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
