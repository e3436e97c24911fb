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
