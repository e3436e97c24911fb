"""Provenance and residency on local sites (real processes, real MLflow store): stored
manifests, lineage back to the first stage, a Workflow Run Crate that the validator
accepts offline, and residency refusals at handoff after a site's labels changed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.crate import write_crate
from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from flows.lineage import lineage, render
from flows.provenance import gather, metrics_from
from flows.tracking import Tracker
from registry import manifests
from registry.states import RunState
from registry.store import Store
from sites.driver import DriverPool
from tests.crate_validation import validate_offline
from tests.helpers import consortium, embedded_engine, local_site, write_yaml

CANARY = "canary-7f3e9a"

SMALL = {
    "name": "small",
    "experiment": "tests",
    "params": {"seed": 3},
    "stages": [
        {
            "name": "prepare",
            "kind": "data",
            "site": "site-a",
            "residency": {"region": "EU"},
            "outputs": ["data/"],
            "script": 'mkdir -p "$HPCFLEET_OUTPUTS/data"; echo hello > "$HPCFLEET_OUTPUTS/data/a.txt"',
        },
        {
            "name": "train",
            "kind": "train",
            "site": "site-b",
            "needs": ["prepare"],
            "outputs": ["model.txt"],
            "env": {"PIP_INDEX_URL": f"https://u:{CANARY}@pypi.example.org/simple", "MODE": "fast"},
            "script": 'cat "$HPCFLEET_INPUTS/prepare/data/a.txt" > "$HPCFLEET_OUTPUTS/model.txt"; '
            'echo \'{"key": "loss", "value": 0.5}\' >> "$HPCFLEET_METRICS"',
        },
        {
            "name": "evaluate",
            "kind": "eval",
            "site": {"any_of": ["site-a", "site-b"]},
            "needs": ["train"],
            "array": {"language": ["fi", "cs"]},
            "outputs": ["results/"],
            "script": 'mkdir -p "$HPCFLEET_OUTPUTS/results"; '
            'wc -c < "$HPCFLEET_INPUTS/train/model.txt" '
            '> "$HPCFLEET_OUTPUTS/results/$HPCFLEET_ARRAY_VALUE.txt"',
        },
    ],
}


def labelled(store: Store, country_a: str, country_b: str, **b: Any) -> None:
    store.put_site(local_site("site-a", "cuni", labels={"country": country_a}), "cuni")
    site_b = local_site(
        "site-b",
        "csc",
        shared_with=["cuni"],
        local={"slots": 2, "gpus": 1},
        labels={"country": country_b},
        **b,
    )
    store.put_site(site_b, "csc")


def engine(tmp: Path) -> tuple[Store, EngineConfig]:
    config = embedded_engine(tmp)
    store = Store.open(config.database_url)
    consortium(store)
    return store, config


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, EngineConfig, str]:
    tmp = tmp_path_factory.mktemp("provenance")
    store, config = engine(tmp)
    labelled(
        store,
        "CZ",
        "FI",
        environment={
            "env": {
                "HF_HOME": "/scratch/hf",
                "MIRROR": f"https://user:{CANARY}@mirror.example.org/x",
            }
        },
        ssh=None,
    )
    run_id = launch(store, write_yaml(tmp / "spec" / "run.yaml", SMALL), "cuni").run.run_id
    assert execute_run(config, run_id).state is RunState.COMPLETED
    return store, config, run_id


def test_outputs_are_stored_as_manifests_at_collection(
    finished: tuple[Store, EngineConfig, str],
) -> None:
    store, _, run_id = finished
    stored = {(e.stage, e.site, e.path): e for e in manifests.outputs(store, run_id)}
    assert ("prepare", "site-a", "data/a.txt") in stored
    assert stored[("prepare", "site-a", "data/a.txt")].size == len("hello\n")
    evaluated = {(e.site, e.path) for e in manifests.outputs(store, run_id, "evaluate")}
    assert evaluated == {("site-a", "results/fi.txt"), ("site-b", "results/cs.txt")}


def test_lineage_of_an_evaluation_output_walks_back_to_prepare(
    finished: tuple[Store, EngineConfig, str],
) -> None:
    store, _, _ = finished
    [result] = lineage(store, "results/cs.txt")
    assert (result.stage, result.files[0].site) == ("evaluate", "site-b")
    [train] = result.inputs
    [prepare] = train.inputs
    assert (train.stage, prepare.stage) == ("train", "prepare")
    assert [j.site for j in prepare.jobs] == ["site-a"] and prepare.inputs == ()
    assert prepare.files[0].path == "data/a.txt"
    # train copied a.txt into model.txt: the same bytes were made by both stages.
    by_checksum = lineage(store, prepare.files[0].sha256)
    assert sorted(s.stage for s in by_checksum) == ["prepare", "train"]
    text = "\n".join(render(result))
    assert "made by run" in text and "from run" in text and "prepare" in text


def crate_of(store: Store, config: EngineConfig, run_id: str, out: Path) -> Path:
    pool = DriverPool(config.home / "sites")
    try:
        facts = gather(
            store, run_id, driver_for=pool.get, metrics=metrics_from(Tracker(config.tracking_uri))
        )
    finally:
        pool.close()
    return write_crate(facts, out)


def test_crate_validates_as_workflow_run_crate_offline_and_holds_no_secret(
    finished: tuple[Store, EngineConfig, str], tmp_path: Path
) -> None:
    store, config, run_id = finished
    crate = crate_of(store, config, run_id, tmp_path / "crate")
    report = validate_offline(crate)
    assert report.passed, report.issues
    metadata = json.loads((crate / "ro-crate-metadata.json").read_text())
    graph = {entity["@id"]: entity for entity in metadata["@graph"]}
    assert graph["./"]["mainEntity"] == {"@id": "run.yaml"}
    jobs = [
        e for e in graph.values() if e["@type"] == "CreateAction" and e["@id"] != f"#run-{run_id}"
    ]
    assert len(jobs) == 4  # prepare, train, evaluate x 2 cells
    train = next(e for e in jobs if e["name"].startswith("train"))
    # train read prepare's outputs on site-a and wrote its own on site-b
    assert {"@id": "manifests/prepare/site-a.json"} in train["object"]
    assert train["result"] == {"@id": "manifests/train/site-b.json"}
    assert train["location"] == {"@id": "#site-site-b"}
    properties = {
        graph[p["@id"]]["name"]: graph[p["@id"]]["value"] for p in train["additionalProperty"]
    }
    assert properties["scheduler job id"] and properties["state"] == "COMPLETED"
    assert properties["metric loss"] == 0.5 and properties["metric gpu_hours"] == 0.0
    manifest = json.loads((crate / "manifests" / "prepare" / "site-a.json").read_text())
    assert manifest["residency"] == "region EU (outputs of 'prepare')"
    assert (crate / "scripts" / "train" / "site-b-attempt-1.sh").is_file()
    everything = "".join(p.read_text(errors="replace") for p in crate.rglob("*") if p.is_file())
    assert CANARY not in everything
    assert "HF_HOME" in everything and "/scratch/hf" in everything


def test_crate_as_zip(finished: tuple[Store, EngineConfig, str], tmp_path: Path) -> None:
    store, config, run_id = finished
    crate = crate_of(store, config, run_id, tmp_path / "run.zip")
    with zipfile.ZipFile(crate) as archive:
        assert "ro-crate-metadata.json" in archive.namelist()
    # The engine attached the same crate to the MLflow parent run when the run ended.
    parent = store.get_run(run_id).mlflow_run_id or ""
    client = MlflowClient(config.tracking_uri)
    [artifact] = client.list_artifacts(parent, "provenance")
    assert artifact.path == f"provenance/{run_id}-ro-crate.zip"
    local = Path(client.download_artifacts(parent, artifact.path, str(tmp_path)))
    with zipfile.ZipFile(local) as archive:
        assert "manifests/evaluate/site-b.json" in archive.namelist()


def test_handoff_refuses_restricted_data_after_site_labels_change(tmp_path: Path) -> None:
    store, config = engine(tmp_path)
    labelled(store, "CZ", "CZ")
    spec = {
        "name": "resident",
        "stages": [
            {**SMALL["stages"][0], "residency": {"countries": ["CZ"]}},  # type: ignore[dict-item]
            {
                "name": "train",
                "site": {"any_of": ["site-b", "site-a"]},
                "needs": ["prepare"],
                "command": ["true"],
            },
        ],
    }
    run_id = launch(store, write_yaml(tmp_path / "spec" / "run.yaml", spec), "cuni").run.run_id
    # An earlier orchestrator placed train on site-b, then died before staging its inputs;
    # meanwhile site-b's owner relabels it.
    store.update_stage(run_id, "train", sites=["site-b"], choice="planned before the crash")
    labelled(store, "CZ", "DE")
    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    train = {s.name: s for s in store.stages(run_id)}["train"]
    assert "refusing to stage the outputs of 'prepare'" in (train.reason or "")
    assert "site-b (country DE)" in (train.reason or "")
    assert store.jobs(run_id, "train") == []


def test_resume_after_labels_change_refuses_to_place_the_stage(tmp_path: Path) -> None:
    store, config = engine(tmp_path)
    labelled(store, "CZ", "CZ")
    spec = {
        "name": "resident",
        "stages": [
            {**SMALL["stages"][0], "residency": {"countries": ["CZ"]}},  # type: ignore[dict-item]
            {"name": "train", "site": "site-b", "needs": ["prepare"], "command": ["true"]},
        ],
    }
    run_id = launch(store, write_yaml(tmp_path / "spec" / "run.yaml", spec), "cuni").run.run_id
    labelled(store, "CZ", "US")
    run = execute_run(config, run_id)  # a refused stage fails alone (flows.planning)
    assert run.state is RunState.FAILED
    train = {s.name: s for s in store.stages(run_id)}["train"]
    assert train.state is RunState.FAILED
    assert "outside residency countries CZ" in (train.reason or "")
    assert [j for j in store.jobs(run_id) if j.stage == "train"] == []
