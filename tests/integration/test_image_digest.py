"""A container image is hashed on its site once, then its digest comes from the store
until its size or mtime changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flows.provenance import image_facts, parse_image_digest, parse_image_stat
from registry.store import Store
from sites.driver import DriverPool
from tests.helpers import consortium, local_site


def test_image_digest_is_computed_once_and_cached_by_size_and_mtime(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    image = tmp_path / "pytorch.sif"
    image.write_bytes(b"first image")
    os.utime(image, (1_700_000_000, 1_700_000_000))
    pool = DriverPool(tmp_path / "sites")
    driver = pool.get(local_site("site-a", "cuni"))
    try:
        first = image_facts(driver, str(image), store)
        assert first.sha256 == hashlib.sha256(b"first image").hexdigest()
        assert (first.size, first.mtime) == (11, 1_700_000_000)
        # Same size and mtime: taken from the store, not hashed again.
        image.write_bytes(b"other image")
        os.utime(image, (1_700_000_000, 1_700_000_000))
        assert image_facts(driver, str(image), store).sha256 == first.sha256
        os.utime(image, (1_700_000_100, 1_700_000_100))
        assert (
            image_facts(driver, str(image), store).sha256
            == hashlib.sha256(b"other image").hexdigest()
        )
        assert image_facts(driver, str(tmp_path / "missing.sif"), store).sha256 is None
    finally:
        pool.close()


def test_parsers_on_recorded_outputs() -> None:
    assert parse_image_stat(0, "4096 1700000000\n", "") == (4096, 1_700_000_000)
    assert parse_image_stat(1, "", "stat: cannot statx 'x': No such file or directory") is None
    assert parse_image_stat(0, "garbage", "") is None
    digest = "a" * 64
    assert parse_image_digest(0, f"{digest}  /appl/c.sif\n", "") == digest
    assert parse_image_digest(1, "", "sha256sum: /x: Permission denied") is None
