"""docs/sites.md: the real sites' documents validate, and `--dry-run` places the example
run where the document says (LUMI standard-g, Leonardo with a QOS, JUPITER booster)."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.dry_run import dry_run, format_dry_run
from registry.partner import Partner
from registry.site import Site
from registry.store import Store

SITES = Path(__file__).resolve().parents[2] / "docs" / "sites"


def test_the_documented_sites_dry_run_as_documented(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    for partner in ("csc", "cineca", "fzj", "cuni"):
        store.put_partner(Partner(id=partner, name=partner))
    for name in ("lumi", "leonardo", "jupiter"):
        site = Site.model_validate(yaml.safe_load((SITES / f"{name}.yaml").read_text()))
        store.put_site(site, site.partner)
    result = dry_run(store, SITES / "run.yaml", "cuni", tmp_path / "sites")
    jobs = {job.stage: job for job in result.jobs}
    assert (jobs["train-lumi"].partition, jobs["train-lumi"].qos) == ("standard-g", None)
    assert (jobs["train-leonardo"].partition, jobs["train-leonardo"].qos) == (
        "boost_usr_prod",
        "boost_qos_lprod",
    )
    assert jobs["eval-jupiter"].partition == "booster"
    assert "#SBATCH --array=0-3%2" in jobs["eval-jupiter"].script
    assert "#SBATCH --mem=0" in jobs["train-lumi"].script
    assert "#SBATCH --exclusive" in jobs["train-lumi"].script
    text = format_dry_run(result, SITES / "run.yaml")
    assert text.count("--- batch script") == 3
    assert store.list_runs() == []


def test_dry_run_renders_local_sites_and_refuses_as_launch_does(tmp_path: Path) -> None:
    import pytest

    from flows.launch import AllocationExceeded
    from tests.helpers import consortium, local_site, write_yaml

    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    small = local_site(
        "small",
        "cuni",
        local={"slots": 1, "gpus": 1},
        allocation={"gpu_hours": 1, "start": "2026-01-01", "end": "2036-01-01"},
    )
    store.put_site(small, "cuni")
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "r",
            "stages": [
                {
                    "name": "s",
                    "site": "small",
                    "resources": {"gpus": 1, "time": "02:00:00"},
                    "command": ["true"],
                }
            ],
        },
    )
    result = dry_run(store, spec, "cuni", tmp_path / "sites")
    assert result.jobs[0].partition is None
    assert result.jobs[0].script.startswith("#!/bin/bash\n# hpcfleet local job")
    assert result.warnings  # 2 GPU-hours asked, 1 granted
    with pytest.raises(AllocationExceeded):
        dry_run(store, spec, "cuni", tmp_path / "sites", strict=True)
    assert store.list_runs() == []
