"""Provenance of a run across the sandbox's two SLURM clusters over real sshd: the
crate names each cluster's job ids, and its checksums match the files on the sites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.crate import write_crate
from flows.engine import execute_run
from flows.launch import launch
from flows.lineage import lineage
from flows.provenance import gather
from registry.partner import Partner
from registry.site import Site
from registry.states import RunState
from registry.store import Store
from sites.driver import DriverPool
from tests.crate_validation import validate_offline
from tests.helpers import embedded_engine, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

SPEC = {
    "name": "prov-slurm",
    "stages": [
        {
            "name": "prepare",
            "site": "site-a",
            "residency": {"region": "EU"},
            "outputs": ["data/"],
            "script": 'mkdir -p "$HPCFLEET_OUTPUTS/data"; hostname > "$HPCFLEET_OUTPUTS/data/x.txt"',
        },
        {
            "name": "evaluate",
            "site": "site-b",
            "needs": ["prepare"],
            "outputs": ["score.txt"],
            "script": 'sha256sum "$HPCFLEET_INPUTS/prepare/data/x.txt" > "$HPCFLEET_OUTPUTS/score.txt"',
        },
    ],
}


def test_crate_of_a_two_cluster_run_lists_both_sites_jobs_and_matching_checksums(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    for partner, country in (("cuni", "CZ"), ("csc", "FI")):
        store.put_partner(Partner(id=partner, name=partner, country=country))
    for name, partner, country in (("site-a", "cuni", "CZ"), ("site-b", "csc", "FI")):
        document = slurm_site_document(
            slurm_sandbox.site(name), partner, labels={"country": country}
        )
        store.put_site(Site.model_validate(document), partner)
    run_id = launch(store, write_yaml(tmp_path / "run.yaml", SPEC), "cuni").run.run_id
    assert execute_run(config, run_id).state is RunState.COMPLETED

    pool = DriverPool(tmp_path / "sites")
    try:
        crate = write_crate(gather(store, run_id, driver_for=pool.get), tmp_path / "crate")
    finally:
        pool.close()
    assert validate_offline(crate).passed
    graph = {
        e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]
    }
    job_ids = {}
    for job in store.jobs(run_id):
        action = graph[f"#job-{job.id}"]
        values = {
            graph[p["@id"]]["name"]: graph[p["@id"]]["value"] for p in action["additionalProperty"]
        }
        job_ids[job.site] = values["scheduler job id"]
        assert values["nodes"] and action["location"] == {"@id": f"#site-{job.site}"}
    accounted = {
        site: slurm_sandbox.run_on(
            site, f"sacct -n -X -P -j {job_id} --format=JobID"
        ).stdout.split()
        for site, job_id in job_ids.items()
    }
    assert accounted == {site: [job_id] for site, job_id in job_ids.items()}
    for stage, site, path in (
        ("prepare", "site-a", "data/x.txt"),
        ("evaluate", "site-b", "score.txt"),
    ):
        manifest = json.loads((crate / "manifests" / stage / f"{site}.json").read_text())
        [entry] = [f for f in manifest["files"] if f["path"] == path]
        on_site = slurm_sandbox.run_on(
            site, ["sha256sum", f"hpcfleet/runs/{run_id}/{stage}/outputs/{path}"]
        ).stdout.split()[0]
        assert entry["sha256"] == on_site
    assert (crate / "scripts" / "evaluate" / "site-b-attempt-1.sh").read_text().startswith("#!")
    [score] = lineage(store, "score.txt")
    assert [s.stage for s in score.inputs] == ["prepare"]
    assert [j.site for j in score.inputs[0].jobs] == ["site-a"]
