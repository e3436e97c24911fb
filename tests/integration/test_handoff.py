"""Stage outputs handed between two sites: linked, through a real S3 API server
(multipart, signed URLs run by curl on the sites), or relayed; always byte-exact."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.layout import StageLayout
from flows.staging import run_checked, stage_input
from sites.driver import DriverPool, SiteDriver
from sites.s3.handoff import S3Handoff
from tests.helpers import local_site
from tests.s3server import S3Server, s3_server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


def produce(driver: SiteDriver, layout: StageLayout, megabytes: int) -> dict[str, str]:
    """A big random file and a small tree in the stage's outputs; their sha256."""
    outputs = shlex.quote(layout.outputs)
    run_checked(
        driver,
        f"mkdir -p {outputs}/ckpt/sub && "
        f"head -c {megabytes * MIB} /dev/urandom > {outputs}/ckpt/model.bin && "
        f"printf 'tokens\\n' > {outputs}/ckpt/sub/vocab.txt && "
        f"printf 'x' > {outputs}/'name with spaces;$(touch pwned).txt'",
    )
    digests = {}
    for path in Path(layout.outputs).rglob("*"):
        if path.is_file():
            digests[str(path.relative_to(layout.outputs))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return digests


def received(layout: StageLayout, stage: str) -> dict[str, str]:
    root = Path(layout.input_of(stage))
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def drivers(tmp_path: Path, storage: dict[str, object] | None) -> tuple[SiteDriver, SiteDriver]:
    pool = DriverPool(tmp_path / "sites")
    extra = {"storage": storage} if storage else {}
    return (pool.get(local_site("site-a", "cuni", **extra)), pool.get(local_site("site-b", "csc")))


def test_100_mib_through_s3_multipart_byte_exact(aws_env: S3Server, tmp_path: Path) -> None:
    import boto3

    session = boto3.Session(profile_name=aws_env.profile)
    client = session.client("s3", endpoint_url=aws_env.endpoint)
    client.create_bucket(Bucket="oellm")
    storage = {"s3": {"endpoint": aws_env.endpoint, "bucket": "oellm", "profile": aws_env.profile}}
    site_a, site_b = drivers(tmp_path, storage)
    source, target = (
        StageLayout(site_a.workdir, "r1", "train"),
        StageLayout(site_b.workdir, "r1", "eval"),
    )
    digests = produce(site_a, source, 100)
    how = stage_input(site_a, source, site_b, target)
    assert how.startswith("through s3://oellm/hpcfleet/r1/train/outputs of site-a")
    assert received(target, "train") == digests
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    [big] = [
        o
        for o in client.list_objects_v2(Bucket="oellm")["Contents"]
        if o["Key"].endswith("model.bin")
    ]
    assert big["Size"] == 100 * MIB
    assert big["ETag"].strip('"').endswith("-2")  # two parts of a multipart upload


def test_100_mib_relayed_without_a_store_byte_exact(tmp_path: Path) -> None:
    site_a, site_b = drivers(tmp_path, None)
    source, target = (
        StageLayout(site_a.workdir, "r1", "train"),
        StageLayout(site_b.workdir, "r1", "eval"),
    )
    digests = produce(site_a, source, 100)
    how = stage_input(site_a, source, site_b, target)
    assert how.startswith("relayed from site-a through this machine")
    assert received(target, "train") == digests


def test_same_site_is_hard_linked_not_copied(tmp_path: Path) -> None:
    site_a, _ = drivers(tmp_path, None)
    source, target = (
        StageLayout(site_a.workdir, "r1", "train"),
        StageLayout(site_a.workdir, "r1", "eval"),
    )
    digests = produce(site_a, source, 1)
    assert stage_input(site_a, source, site_a, target) == "hard-linked (same site)"
    staged = Path(target.input_of("train"))
    assert staged.is_dir() and not staged.is_symlink()  # a real directory, as across sites
    assert received(target, "train") == digests
    for path in staged.rglob("*"):
        if path.is_file():
            original = Path(source.outputs) / path.relative_to(staged)
            assert path.stat().st_ino == original.stat().st_ino  # no data copied


def test_missing_profile_is_a_clear_non_transient_error(aws_env: S3Server) -> None:
    from registry.site import S3Store
    from sites.errors import TransferError

    with pytest.raises(TransferError) as info:
        S3Handoff("site-a", S3Store(endpoint=aws_env.endpoint, bucket="oellm", profile="nope"))
    assert "nope" in str(info.value) and info.value.transient is False


def test_a_file_name_cannot_forge_a_manifest_entry(tmp_path: Path) -> None:
    site_a, site_b = drivers(tmp_path, None)
    source, target = (
        StageLayout(site_a.workdir, "r2", "train"),
        StageLayout(site_b.workdir, "r2", "eval"),
    )
    # Once read as two manifest lines, the second one for "../other-stage/model.bin".
    forged = "x\n5 " + hashlib.sha256(b"evil!").hexdigest() + " ../other-stage"
    (Path(source.outputs) / forged).mkdir(parents=True)
    (Path(source.outputs) / forged / "model.bin").write_bytes(b"real content")

    how = stage_input(site_a, source, site_b, target)

    assert how.endswith("1 files, 12 bytes, checksums verified")
    assert received(target, "train") == {
        f"{forged}/model.bin": hashlib.sha256(b"real content").hexdigest()
    }
    assert not (Path(target.inputs) / "other-stage").exists()
