"""Checkpoints streaming out of a running stage, and `for_each: checkpoint` stages, on
local sites (real processes, real MLflow store, the engine without Prefect)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.engine import EngineConfig, execute_run
from flows.fill import fill_run
from flows.launch import launch
from flows.results import cell_counts, missing_cells
from registry.checkpoints import read_checkpoints
from registry.results import read_results
from registry.states import JobState, RunState
from registry.store import Store
from tests.helpers import cli, cli_env, consortium, embedded_engine, write_yaml

# Three checkpoints ~1.5 s apart, the ready file written last; and entries that are no
# checkpoint: one still being written, one with a name no checkpoint may have.
TRAIN = """
set -e
mkdir -p "$HPCFLEET_OUTPUTS/checkpoints/iter_bad name"
echo x > "$HPCFLEET_OUTPUTS/checkpoints/iter_bad name/model.safetensors"
for step in 1 2 3; do
  sleep 1.5
  d="$HPCFLEET_OUTPUTS/checkpoints/iter_$step"
  mkdir -p "$d"
  echo "weights $step" > "$d/weights.bin"
  echo "ready $step" > "$d/model.safetensors"
done
mkdir -p "$HPCFLEET_OUTPUTS/checkpoints/iter_4"   # never finished
sleep 1.5
"""
CONVERT = """
set -e
test "$(basename "$HPCFLEET_CHECKPOINT")" = "$1"
cat "$HPCFLEET_CHECKPOINT/weights.bin" > "$HPCFLEET_OUTPUTS/converted.txt"
"""
EVALUATE = """
import json, os, sys
checkpoint, language, n_shot = sys.argv[1:4]
weights = open(os.path.join(os.environ["HPCFLEET_CHECKPOINT"], "converted.txt")).read()
assert weights == f"weights {checkpoint[-1]}\\n", weights
with open(os.environ["HPCFLEET_METRICS"], "a") as metrics:
    value = int(checkpoint[-1]) / 10 + int(n_shot) / 100
    metrics.write(json.dumps({"key": "acc", "value": value}) + "\\n")
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, EngineConfig]:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    return store, config


def start(
    store: Store, tmp_path: Path, stages: list[dict[str, Any]], evaluate: str = EVALUATE
) -> str:
    (tmp_path / "spec").mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec" / "evaluate.py").write_text(evaluate)
    document = {"name": "ckpt", "experiment": "tests", "stages": stages}
    return launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run.run_id


STAGES: list[dict[str, Any]] = [
    {
        "name": "train",
        "kind": "train",
        "site": "site-a",
        "script": TRAIN,
        "checkpoints": {"path": "checkpoints/iter_*", "ready": "model.safetensors"},
    },
    {
        "name": "convert",
        "site": "site-a",
        "needs": ["train"],
        "for_each": "checkpoint",
        "command": ["bash", "-c", CONVERT, "convert", "{checkpoint}"],
    },
    {
        "name": "evaluate",
        "kind": "eval",
        "site": "site-b",
        "needs": ["convert"],
        "for_each": "checkpoint",
        "array": {"language": ["fi", "cs"], "n_shot": [0, 5]},
        "command": ["python3", "evaluate.py", "{checkpoint}", "{language}", "{n_shot}"],
    },
]


def test_each_checkpoint_is_converted_then_evaluated_on_another_site_while_training_runs(
    setup: tuple[Store, EngineConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, config = setup
    run_id = start(store, tmp_path, STAGES)
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    assert "crashed" not in caplog.text and "could not be written" not in caplog.text

    # Recorded once each, with the sha256 of the ready file as written.
    checkpoints = read_checkpoints(store, run_id)
    assert [(c.stage, c.name, c.path, c.site) for c in checkpoints] == [
        ("train", f"iter_{i}", f"checkpoints/iter_{i}", "site-a") for i in (1, 2, 3)
    ]
    for c in checkpoints:
        assert c.sha256 == hashlib.sha256(f"ready {c.name[-1]}\n".encode()).hexdigest()

    # One job per checkpoint for convert; one array of 4 cells per checkpoint for
    # evaluate, each cell run exactly once.
    train_job = store.jobs(run_id, "train")[0]
    convert = store.jobs(run_id, "convert")
    evaluate = store.jobs(run_id, "evaluate")
    assert sorted(j.checkpoint or "" for j in convert) == ["iter_1", "iter_2", "iter_3"]
    assert sorted((j.checkpoint or "", j.array_index or 0) for j in evaluate) == [
        (f"iter_{i}", index) for i in (1, 2, 3) for index in range(4)
    ]
    assert all(j.state is JobState.COMPLETED for j in convert + evaluate)
    assert len({j.job_name for j in evaluate}) == 3  # one array per checkpoint

    # The first evaluation started while training still ran.
    first = min(evaluate, key=lambda j: j.started or train_job.ended)
    assert train_job.ended is not None and first.started is not None
    assert first.started < train_job.ended, (first.started, train_job.ended)

    # Results carry their checkpoint.
    results = read_results(store, run_id, "evaluate")
    assert sorted((r.checkpoint, r.cell["language"], r.cell["n_shot"]) for r in results) == [
        (f"iter_{i}", language, shot)
        for i in (1, 2, 3)
        for language in ("cs", "fi")
        for shot in ("0", "5")
    ]
    assert {r.value for r in results if r.checkpoint == "iter_2"} == {0.2, 0.25}

    # Noted on the MLflow parent run: one tag per checkpoint.
    tags = MlflowClient(config.tracking_uri).get_run(run.mlflow_run_id or "").data.tags
    entry = json.loads(tags["checkpoints/iter_2"])
    assert entry["sha256"] == checkpoints[1].sha256 and entry["stage"] == "train"
    assert "checkpoints/iter_4" not in tags and not any("bad" in key for key in tags)

    # `run show` lists them, and counts each for_each stage's tasks per checkpoint.
    env = {**cli_env(tmp_path), "HPCFLEET_PARTNER": "cuni"}
    shown = cli(env, "run", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "checkpoint train/iter_3: checkpoints/iter_3 on site-a" in shown.stdout
    assert "3 checkpoints, latest iter_3" in shown.stdout
    assert "12/12" in shown.stdout and "evaluate: 12/12 cells" in shown.stdout
    as_json = json.loads(cli(env, "run", "show", run_id, "--json").stdout)
    assert [c["name"] for c in as_json["checkpoints"]] == ["iter_1", "iter_2", "iter_3"]
    assert as_json["checkpoints"][0]["sha256"] == checkpoints[0].sha256


def test_a_checkpoint_that_disappears_before_staging_is_reported(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    # iter_1 exists for 2 s, then the training framework removes it; the evaluation
    # waits for `prep` (4 s) before it starts, so iter_1 is gone when it is staged.
    script = """
set -e
d="$HPCFLEET_OUTPUTS/checkpoints/iter_1"
mkdir -p "$d"; echo ready > "$d/model.safetensors"
sleep 2; rm -rf "$d"
d="$HPCFLEET_OUTPUTS/checkpoints/iter_2"
mkdir -p "$d"; echo ready > "$d/model.safetensors"; sleep 4
"""
    stages = [
        {**STAGES[0], "script": script},
        {"name": "prep", "site": "site-b", "command": ["sleep", "4"]},
        {
            "name": "evaluate",
            "site": "site-b",
            "needs": ["train", "prep"],
            "for_each": "checkpoint",
            "script": 'test -f "$HPCFLEET_CHECKPOINT/model.safetensors"',
        },
    ]
    run_id = start(store, tmp_path, stages)
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    assert [c.name for c in read_checkpoints(store, run_id)] == ["iter_1", "iter_2"]
    assert [j.checkpoint for j in store.jobs(run_id, "evaluate")] == ["iter_2"]
    evaluate = {s.name: s for s in store.stages(run_id)}["evaluate"]
    assert "checkpoint iter_1 (checkpoints/iter_1 on site-a) disappeared before it was staged" in (
        evaluate.reason or ""
    )


def test_a_failed_cell_of_one_checkpoint_is_missing_and_fill_reruns_only_it(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    # The cell (iter_2, cs, 5) fails the first time it runs, and only then.
    marker = tmp_path / "failed-once"
    flaky = EVALUATE.replace(
        "with open(",
        f"if (checkpoint, language, n_shot) == ('iter_2', 'cs', '5') and not os.path.exists("
        f"{str(marker)!r}):\n    open({str(marker)!r}, 'w').close(); sys.exit(3)\nwith open(",
        1,
    )
    run_id = start(store, tmp_path, STAGES, flaky)
    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    assert "stage evaluate failed: checkpoint iter_2: " in (run.reason or "")
    jobs = store.jobs(run_id)
    missing = missing_cells(run.spec, jobs, read_results(store, run_id))
    assert [(m.checkpoint, m.cell, m.why) for m in missing] == [
        ("iter_2", {"language": "cs", "n_shot": "5"}, "failed")
    ]
    assert [c.text() for c in cell_counts(run.spec, jobs, read_results(store, run_id))] == [
        "11/12 cells, 1 missing (1 failed)"
    ]

    plan = fill_run(config, run_id)
    assert plan.cells == 1
    assert fill_run(config, run_id).cells == 0  # queued: a second fill submits nothing
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    evaluate = store.jobs(run_id, "evaluate")
    runs_of = {}
    for job in evaluate:
        key = (job.checkpoint, job.array_index)
        runs_of[key] = runs_of.get(key, 0) + 1
    assert runs_of.pop(("iter_2", 3)) == 2  # its failure, then the fill
    assert set(runs_of.values()) == {1}  # every other cell ran once
    assert len(read_results(store, run_id, "evaluate")) == 12


def test_a_resumed_training_that_rewrites_a_checkpoint_does_not_trigger_it_again(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    # Attempt 1 writes iter_1, then runs past its time limit; attempt 2 (resumed) writes
    # iter_1 again, with other bytes, then iter_2.
    script = """
d="$HPCFLEET_OUTPUTS/checkpoints"
if [ "$HPCFLEET_ATTEMPT" = 1 ]; then
  mkdir -p "$d/iter_1"; echo "first" > "$d/iter_1/model.safetensors"; sleep 120
fi
sleep 1
mkdir -p "$d/iter_1"; echo "rewritten on resume" > "$d/iter_1/model.safetensors"
mkdir -p "$d/iter_2"; echo "second" > "$d/iter_2/model.safetensors"
sleep 1
"""
    stages = [
        {**STAGES[0], "script": script, "resumable": True, "resources": {"time": "00:00:03"}},
        {
            "name": "evaluate",
            "site": "site-b",
            "needs": ["train"],
            "for_each": "checkpoint",
            "script": 'cat "$HPCFLEET_CHECKPOINT/model.safetensors"',
        },
    ]
    run_id = start(store, tmp_path, stages)
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    assert [j.state for j in store.jobs(run_id, "train")] == [JobState.TIMEOUT, JobState.COMPLETED]
    checkpoints = read_checkpoints(store, run_id)
    assert [c.name for c in checkpoints] == ["iter_1", "iter_2"]  # iter_1 recorded once
    assert checkpoints[0].sha256 == hashlib.sha256(b"first\n").hexdigest()
    assert sorted(j.checkpoint or "" for j in store.jobs(run_id, "evaluate")) == [
        "iter_1",
        "iter_2",
    ]
