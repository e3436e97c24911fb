"""The git commit and dirty flag of a spec's directory, recorded at launch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flows.source_facts import git_facts, launch_facts


def git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_commit_and_dirty_flag_of_the_spec_directory(tmp_path: Path) -> None:
    assert git_facts(tmp_path) is None  # not a repository
    git(tmp_path, "init", "-q")
    spec = tmp_path / "runs" / "run.yaml"
    spec.parent.mkdir()
    spec.write_text("name: r\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "spec")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert launch_facts(spec)["git"] == {"commit": head, "dirty": False}
    spec.write_text("name: changed\n")
    assert launch_facts(spec)["git"] == {"commit": head, "dirty": True}
    assert launch_facts(spec)["spec"] == "run.yaml"
