"""Moving files for a stage: the spec's files in, needed outputs across, results back.

Same site: needed outputs are hard-linked (copied across filesystems), so that they are
real directories as they are from another site. Different sites: relayed through this
machine (get from one, put to the other) and checked against the producer's checksums.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from flows.layout import StageLayout
from sites import remote
from sites.driver import SiteDriver
from sites.errors import CommandFailed, TransferError
from sites.remote import ManifestEntry
from sites.transport import TransferLimits

T = TypeVar("T")

# What fetching one attempt's logs and metrics may bring to this machine at most.
ATTEMPT_MAX_FILES = 10_000
ATTEMPT_MAX_BYTES = 2 << 30  # 2 GiB
ATTEMPT_LIMITS = TransferLimits(max_files=ATTEMPT_MAX_FILES, max_bytes=ATTEMPT_MAX_BYTES)


def run_checked(driver: SiteDriver, command: str) -> str:
    """Run `command`; its stdout, or `CommandFailed`."""
    return run_remote(driver, command, _stdout_if_ok)


def _stdout_if_ok(returncode: int, stdout: str, stderr: str) -> str:
    remote.check_exit(returncode, stdout, stderr)
    return stdout


def _umask(driver: SiteDriver) -> str:
    return driver.site.environment.effective_umask


def run_remote(driver: SiteDriver, command: str, parse: Callable[[int, str, str], T]) -> T:
    """Run a `sites.remote` command and its parser; failures become the project's errors
    (a non-zero exit `CommandFailed`, output that breaks the rules `TransferError`)."""
    result = driver.transport.run(command)
    try:
        return parse(result.returncode, result.stdout, result.stderr)
    except remote.RemoteCommandFailed as exc:
        raise CommandFailed(driver.name, command, exc.returncode, exc.stderr) from None
    except remote.BadRemoteOutput as exc:
        raise TransferError(driver.name, str(exc)) from None


def prepare_dirs(driver: SiteDriver, layout: StageLayout, attempt: int) -> None:
    dirs = [
        layout.work,
        layout.outputs,
        layout.inputs,
        layout.logs(attempt),
        layout.metrics(attempt),
    ]
    run_remote(driver, remote.make_dirs_command(dirs, umask=_umask(driver)), remote.check_exit)


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
) -> dict[str, ManifestEntry]:
    """{relative path: (size, sha256)} of the files under `directory` (or `paths` in it)."""
    return run_remote(driver, remote.manifest_command(directory, paths), remote.parse_manifest)


def missing_outputs(driver: SiteDriver, layout: StageLayout, declared: Sequence[str]) -> list[str]:
    """Declared outputs that the stage did not produce."""
    if not declared:
        return []
    command = remote.missing_paths_command(layout.outputs, declared)
    missing = set(run_remote(driver, command, remote.parse_missing_paths))
    return [p for p in declared if (p.rstrip("/") or ".") in missing]


def stage_input(
    source: SiteDriver,
    source_layout: StageLayout,
    target: SiteDriver,
    target_layout: StageLayout,
) -> str:
    """Make `source_layout`'s outputs appear as the target stage's input. Returns how.

    Same site: a tree of hard links (a copy across filesystems), so that the input is
    a real directory as it is from another site. Else through the S3 store of the
    source site (or of the target), or, where neither has one, relayed through this
    machine. Checksums are verified on arrival either way.
    """
    destination = target_layout.input_of(source_layout.stage)
    if source.name == target.name:
        command = remote.link_tree_command(source_layout.outputs, destination, umask=_umask(target))
        how = run_remote(target, command, remote.parse_link_tree)
        return f"{how} (same site)"
    expected = manifest(source, source_layout.outputs)
    run_remote(target, remote.remove_tree_command(destination), remote.check_exit)
    store_site = next((d for d in (source, target) if d.site.storage and d.site.storage.s3), None)
    if store_site is not None:
        how = _via_s3(store_site, source, source_layout, target, destination, expected)
    else:
        how = _relay(source, source_layout.outputs, target, destination)
    _verify(target, destination, expected, source_layout.stage, source.name)
    total = sum(entry.size for entry in expected.values())
    return f"{how}: {len(expected)} files, {total} bytes, checksums verified"


def _relay(source: SiteDriver, path: str, target: SiteDriver, destination: str) -> str:
    with tempfile.TemporaryDirectory(prefix="hpcfleet-relay-") as tmp:
        local = Path(tmp) / "outputs"
        source.transport.get(path, local)
        local.mkdir(exist_ok=True)
        target.transport.put(local, destination)
    return f"relayed from {source.name} through this machine"


def _via_s3(
    store_site: SiteDriver,
    source: SiteDriver,
    source_layout: StageLayout,
    target: SiteDriver,
    destination: str,
    expected: dict[str, ManifestEntry],
) -> str:
    from sites.s3.handoff import S3Handoff
    from sites.s3.scripts import parse_part_etags, render_download, render_upload

    assert store_site.site.storage is not None and store_site.site.storage.s3 is not None
    handoff = S3Handoff(store_site.name, store_site.site.storage.s3)
    prefix = handoff.key(source_layout.run_id, source_layout.stage, "outputs")
    uploads = handoff.plan_upload(prefix, {path: entry.size for path, entry in expected.items()})
    result = source.transport.run(
        "bash -s", stdin=render_upload(source_layout.outputs, uploads).encode()
    )
    if not result.ok:
        for upload in uploads:
            handoff.abort(upload)
        raise TransferError(
            source.name, f"upload to S3 failed: {result.stderr.strip()[-300:]}", transient=True
        )
    etags = parse_part_etags(result.stdout)
    for index, upload in enumerate(uploads):
        handoff.complete(upload, etags.get(index, {}))
    urls = {upload.path: handoff.download_url(upload.key) for upload in uploads}
    result = target.transport.run("bash -s", stdin=render_download(destination, urls).encode())
    if not result.ok:
        raise TransferError(
            target.name, f"download from S3 failed: {result.stderr.strip()[-300:]}", transient=True
        )
    return f"through s3://{handoff.store.bucket}/{prefix} of {store_site.name}"


def _verify(
    target: SiteDriver,
    destination: str,
    expected: dict[str, ManifestEntry],
    stage: str,
    source: str,
) -> None:
    arrived = manifest(target, destination)
    if arrived != expected:
        differing = sorted(set(arrived.items()) ^ set(expected.items()), key=lambda e: e[0])
        raise TransferError(
            target.name,
            f"outputs of stage {stage!r} from {source} arrived altered ({len(differing)} "
            f"differing entries, e.g. {differing[0][0]!r})",
            transient=True,
        )


def fetch_attempt(
    driver: SiteDriver,
    layout: StageLayout,
    attempt: int,
    local: Path,
    limits: TransferLimits = ATTEMPT_LIMITS,
) -> Path:
    """Copy an attempt's logs and metrics to `local`; returns the local attempt dir.
    More than `limits` (files, bytes) is a `TransferError` naming the cap."""
    target = local / f"attempt-{attempt}"
    driver.transport.get(layout.attempt_dir(attempt), target, limits=limits)
    return target
