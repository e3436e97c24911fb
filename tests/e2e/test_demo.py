"""`hpcfleet demo` on the embedded default: the whole loop, checked in the store and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from registry.checkpoints import read_checkpoints
from registry.states import JobState, RunState
from registry.store import Store
from tests.helpers import cli, cli_env

LANGUAGES = [
    "bg",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "fi",
    "fr",
    "ga",
    "hr",
    "hu",
    "it",
    "lt",
    "lv",
    "mt",
    "nl",
    "pl",
    "pt",
    "ro",
    "sk",
    "sl",
    "sv",
]
CHECKPOINTS = ("iter_08", "iter_16", "iter_24")  # train writes one every 8 languages


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("demo-home")
    result = cli(cli_env(home), "demo", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return home, output


def test_demo_prints_a_summary_and_how_to_open_mlflow(demo: tuple[Path, str]) -> None:
    _, output = demo
    for stage in ("prepare", "train", "evaluate"):
        assert stage in output
    assert "72/72" in output and "accuracy" in output  # 3 checkpoints x 24 languages
    assert "mlflow ui --backend-store-uri" in output
    # Prefect and MLflow stay quiet: no telemetry errors, no tracebacks, no INFO chatter.
    for noise in ("Traceback", "telemetry", "Error", "INFO"):
        assert noise not in output, noise


def test_demo_run_is_stored_completed_across_both_sites(demo: tuple[Path, str]) -> None:
    home, _ = demo
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    assert run.state is RunState.COMPLETED and run.partner == "cuni"
    assert run.prefect_flow_run_id
    stages = {s.name: s for s in store.stages(run.run_id)}
    assert stages["prepare"].sites == ["site-a"] and stages["train"].sites == ["site-b"]
    assert set(stages["evaluate"].sites) == {"site-a", "site-b"}
    jobs = store.jobs(run.run_id)
    assert len(jobs) == 2 + 3 * 24 and all(j.state is JobState.COMPLETED for j in jobs)
    evaluated = sorted(
        (j.checkpoint or "", j.array_value or "") for j in jobs if j.stage == "evaluate"
    )
    assert evaluated == sorted((c, lang) for c in CHECKPOINTS for lang in LANGUAGES)
    assert {j.site for j in jobs if j.stage == "evaluate"} == {"site-a", "site-b"}
    assert all(j.mlflow_run_id for j in jobs)


def test_demo_evaluates_each_checkpoint_while_training_goes_on(demo: tuple[Path, str]) -> None:
    home, _ = demo
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    jobs = store.jobs(run.run_id)
    [train] = [j for j in jobs if j.stage == "train"]
    checkpoints = read_checkpoints(store, run.run_id, "train")
    assert [c.name for c in checkpoints] == list(CHECKPOINTS)
    assert all(c.site == "site-b" and len(c.sha256) == 64 for c in checkpoints)
    first = min(j.started for j in jobs if j.checkpoint == "iter_08" and j.started)
    assert train.ended is not None and first < train.ended  # streamed, not after the end


def test_demo_results_are_in_mlflow(demo: tuple[Path, str]) -> None:
    home, _ = demo
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    parent = client.get_run(run.mlflow_run_id or "")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hpcfleet.run_id"] == run.run_id
    assert parent.data.tags["prefect.flow_run_id"] == run.prefect_flow_run_id
    accuracy = {
        k.split("/")[1]: v for k, v in parent.data.metrics.items() if k.startswith("accuracy/")
    }
    assert sorted(accuracy) == sorted(LANGUAGES)
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    assert parent.data.params["seed"] == "1"

    experiment = client.get_experiment_by_name("tiny-llm")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run.mlflow_run_id}'"
    )
    # One table of results per evaluated checkpoint, besides a child run per job.
    tables = [c for c in children if c.data.tags.get("hpcfleet.results") == "checkpoint"]
    assert sorted(c.data.tags["hpcfleet.checkpoint"] for c in tables) == list(CHECKPOINTS)
    assert all(c.data.metrics["cells/accuracy"] == 24 for c in tables)
    children = [c for c in children if c not in tables]
    assert len(children) == 2 + 3 * 24
    by_stage: dict[str, list[object]] = {}
    for child in children:
        tags = child.data.tags
        for tag in (
            "hpcfleet.run_id",
            "hpcfleet.stage",
            "hpcfleet.site",
            "hpcfleet.partner",
            "hpcfleet.attempt",
            "prefect.flow_run_id",
        ):
            assert tags.get(tag), (tag, tags)
        assert tags["hpcfleet.run_id"] == run.run_id and tags["hpcfleet.partner"] == "cuni"
        by_stage.setdefault(tags["hpcfleet.stage"], []).append(child)
        assert "gpu_hours" in child.data.metrics
    assert {k: len(v) for k, v in by_stage.items()} == {"prepare": 1, "train": 1, "evaluate": 72}
    fi = next(
        c
        for c in by_stage["evaluate"]
        if c.data.tags["hpcfleet.array_value"] == "fi"  # type: ignore[attr-defined]
        and c.data.tags["hpcfleet.checkpoint"] == "iter_24"  # type: ignore[attr-defined]
    )
    assert fi.data.metrics["accuracy"] == accuracy["fi"]
    # The parent's value of each language is the newest checkpoint's (step 24), however
    # the three evaluations interleaved: sv is only in iter_24's training data.
    newest = {
        c.data.tags["hpcfleet.array_value"]: c.data.metrics["accuracy"]  # type: ignore[attr-defined]
        for c in by_stage["evaluate"]
        if c.data.tags["hpcfleet.checkpoint"] == "iter_24"  # type: ignore[attr-defined]
    }
    assert accuracy == newest and accuracy["sv"] > 0
    train = by_stage["train"][0]
    assert train.data.metrics["gpu_hours"] > 0  # site-b lends it a (pretend) GPU
    history = client.get_metric_history(train.info.run_id, "train_nll")  # type: ignore[attr-defined]
    assert len(history) == 24  # one point per language, with steps
    artifacts = [a.path for a in client.list_artifacts(fi.info.run_id, "logs")]
    assert any(p.endswith(".out") for p in artifacts)


def test_run_list_and_show_json_shapes(demo: tuple[Path, str]) -> None:
    home, _ = demo
    env = cli_env(home)
    [listed] = json.loads(cli(env, "run", "list", "--json").stdout)
    assert {"run_id", "name", "partner", "state", "created"} <= set(listed)
    shown = json.loads(cli(env, "run", "show", listed["run_id"], "--json").stdout)
    assert shown["state"] == "COMPLETED"
    assert [s["name"] for s in shown["stages"]] == ["prepare", "train", "evaluate"]
    assert len(shown["stages"][2]["jobs"]) == 72
    assert "spread over 2 sites" in shown["stages"][2]["choice"]


def test_site_usage_shows_the_gpu_hours_of_the_run(demo: tuple[Path, str]) -> None:
    home, _ = demo
    usage = {u["site"]: u for u in json.loads(cli(cli_env(home), "site", "usage", "--json").stdout)}
    assert usage["site-b"]["granted"] == 5000 and usage["site-b"]["used"] > 0
    assert set(usage["site-b"]["by_partner"]) == {"cuni"}
    assert usage["site-a"]["used"] == 0  # site-a lends no GPU


def test_outputs_manifest_with_checksums_is_on_the_parent_run(demo: tuple[Path, str]) -> None:
    home, _ = demo
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    local = client.download_artifacts(run.mlflow_run_id or "", "outputs/prepare/site-a.json")
    manifest = json.loads(Path(local).read_text())
    files = {f["path"]: f for f in manifest["files"]}
    assert len(files) == 48  # train.txt and test.txt for each of the 24 languages
    fi = (
        home
        / "sites"
        / "site-a"
        / "runs"
        / run.run_id
        / "prepare"
        / "outputs"
        / "data"
        / "fi"
        / "test.txt"
    )
    import hashlib

    assert files["data/fi/test.txt"]["sha256"] == hashlib.sha256(fi.read_bytes()).hexdigest()


def test_prefect_task_runs_grow_with_stages_not_jobs(demo: tuple[Path, str]) -> None:
    import sqlite3

    home, _ = demo
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    prefect = sqlite3.connect(home / "prefect" / "prefect.db")
    [(state,)] = prefect.execute("select state_type from flow_run where name = ?", (run.run_id,))
    assert state == "COMPLETED"
    names = sorted(
        name
        for (name,) in prefect.execute(
            "select t.name from task_run t join flow_run f on t.flow_run_id = f.id "
            "where f.name = ?",
            (run.run_id,),
        )
    )
    assert names == ["evaluate", "prepare", "train"]  # 26 jobs and many polls, 3 task runs


def test_demo_probes_its_sites_for_the_dashboard(demo: tuple[Path, str]) -> None:
    home, _ = demo
    probes = Store.open(f"sqlite:///{home / 'registry.db'}").latest_probes()
    assert set(probes) == {"site-a", "site-b"}
    assert all(p.reachable and p.ok for p in probes.values())


def test_demo_run_provenance_crate_validates_offline_and_lineage_reaches_prepare(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    from tests.crate_validation import validate_offline

    home, _ = demo
    env = cli_env(home)
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    [run] = store.list_runs()
    written = cli(env, "run", "provenance", run.run_id, "--out", str(tmp_path / "crate"))
    assert written.returncode == 0, written.stderr
    report = validate_offline(tmp_path / "crate")
    assert report.passed, report.issues
    metadata = json.loads((tmp_path / "crate" / "ro-crate-metadata.json").read_text())
    actions = [e for e in metadata["@graph"] if e["@type"] == "CreateAction"]
    assert len(actions) == 1 + 2 + 3 * 24  # the run, and each job (72 evaluation cells)
    traced = cli(env, "lineage", "checkpoints/iter_24/model.json", "--json")
    assert traced.returncode == 0, traced.stderr
    [train] = json.loads(traced.stdout)
    assert train["stage"] == "train" and train["sites"] == ["site-b"]
    assert [step["stage"] for step in train["inputs"]] == ["prepare"]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    artifacts = [a.path for a in client.list_artifacts(run.mlflow_run_id or "", "provenance")]
    assert artifacts == [f"provenance/{run.run_id}-ro-crate.zip"]
