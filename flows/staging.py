"""Moving files for a stage: the spec's files in, needed outputs across, results back.

Same site: needed outputs are linked, not copied. Different sites: relayed through this
machine (get from one, put to the other) and checked against the producer's checksums.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from flows.layout import StageLayout
from sites.driver import SiteDriver
from sites.errors import CommandFailed, TransferError


def run_checked(driver: SiteDriver, command: str) -> str:
    result = driver.transport.run(command)
    if not result.ok:
        raise CommandFailed(driver.name, command, result.returncode, result.stderr)
    return result.stdout


def prepare_dirs(driver: SiteDriver, layout: StageLayout, attempt: int) -> None:
    dirs = [layout.work, layout.outputs, layout.inputs, layout.logs(attempt),
            layout.metrics(attempt)]
    run_checked(driver, "mkdir -p -- " + " ".join(shlex.quote(d) for d in dirs))


def upload_files(
    driver: SiteDriver, layout: StageLayout, files: Mapping[str, tuple[bytes, int]]
) -> None:
    """Put the files that travel with the spec into the stage's work dir."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="hpcfleet-files-") as tmp:
        root = Path(tmp)
        for relative, (content, mode) in files.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode & 0o777)
        driver.transport.put(root, layout.work)


def manifest(
    driver: SiteDriver, directory: str, paths: Sequence[str] = ()
) -> dict[str, tuple[int, str]]:
    """{relative path: (size, sha256)} of the files under `directory` (or `paths` in it)."""
    targets = " ".join(shlex.quote(p.rstrip("/") or ".") for p in paths) or "."
    command = (
        f"cd {shlex.quote(directory)} && find -L {targets} -type f "
        "-exec sh -c 'for f; do printf \"%s %s\\n\" \"$(stat -L -c %s \"$f\")\" "
        "\"$(sha256sum < \"$f\" | cut -c1-64) $f\"; done' sh {} +"
    )
    entries: dict[str, tuple[int, str]] = {}
    for line in run_checked(driver, command).splitlines():
        size, digest, path = line.split(" ", 2)
        entries[path.removeprefix("./")] = (int(size), digest)
    return entries


def missing_outputs(driver: SiteDriver, layout: StageLayout, declared: Sequence[str]) -> list[str]:
    """Declared outputs that the stage did not produce."""
    if not declared:
        return []
    checks = " ".join(
        f"[ -e {shlex.quote(p.rstrip('/'))} ] || printf '%s\\n' {shlex.quote(p)};"
        for p in declared
    )
    return run_checked(driver, f"cd {shlex.quote(layout.outputs)} && {checks}").split()


def stage_input(
    source: SiteDriver,
    source_layout: StageLayout,
    target: SiteDriver,
    target_layout: StageLayout,
) -> str:
    """Make `source_layout`'s outputs appear as the target stage's input. Returns how."""
    destination = target_layout.input_of(source_layout.stage)
    if source.name == target.name:
        run_checked(
            target,
            f"mkdir -p {shlex.quote(target_layout.inputs)} && "
            f"ln -sfn {shlex.quote(source_layout.outputs)} {shlex.quote(destination)}",
        )
        return "linked (same site)"
    expected = manifest(source, source_layout.outputs)
    with tempfile.TemporaryDirectory(prefix="hpcfleet-relay-") as tmp:
        local = Path(tmp) / "outputs"
        source.transport.get(source_layout.outputs, local)
        local.mkdir(exist_ok=True)
        run_checked(target, f"rm -rf {shlex.quote(destination)}")
        target.transport.put(local, destination)
    arrived = manifest(target, destination)
    if arrived != expected:
        differing = sorted(set(arrived.items()) ^ set(expected.items()))
        raise TransferError(
            target.name,
            f"outputs of stage {source_layout.stage!r} from {source.name} arrived "
            f"altered ({len(differing)} differing entries, e.g. {differing[0][0]!r})",
            transient=True,
        )
    total = sum(size for size, _ in expected.values())
    return f"relayed from {source.name}: {len(expected)} files, {total} bytes, checksums verified"


def fetch_attempt(driver: SiteDriver, layout: StageLayout, attempt: int, local: Path) -> Path:
    """Copy an attempt's logs and metrics to `local`; returns the local attempt dir."""
    target = local / f"attempt-{attempt}"
    driver.transport.get(layout.attempt_dir(attempt), target)
    return target
