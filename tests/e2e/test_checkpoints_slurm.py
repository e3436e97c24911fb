"""Issue 13's "done when", on the real SLURM sandbox: `train` on site-a writes three
checkpoints over about a minute; `evaluate` (for_each checkpoint, 2 languages × 2
tasks × 2 shots) runs on site-b, its first array STARTING while train still runs (sacct
of both clusters says so); one cell fails; `results --missing` names it; `run fill`
reruns only it; `results --format csv` then has every cell; and sacct shows every cell
ran exactly once per attempt."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from flows.engine import execute_run
from flows.fill import fill_run
from flows.launch import launch
from registry.checkpoints import read_checkpoints
from registry.partner import Partner
from registry.site import Site
from registry.states import RunState
from registry.store import Store
from tests.helpers import cli, cli_env, embedded_engine, wait_until, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

# A checkpoint every ~15 s; the ready file written last, after the weights.
TRAIN = """
set -e
for step in 1 2 3; do
  sleep 15
  d="$HPCFLEET_OUTPUTS/checkpoints/iter_$step"
  mkdir -p "$d"
  echo "weights of step $step" > "$d/weights.bin"
  echo "ready $step" > "$d/model.safetensors"
done
sleep 10
"""
EVAL = """\
import json, os, sys
checkpoint, language, task, n_shot = sys.argv[1:5]
assert os.path.basename(os.environ["HPCFLEET_CHECKPOINT"]) == checkpoint
weights = open(os.path.join(os.environ["HPCFLEET_CHECKPOINT"], "weights.bin")).read()
assert weights == "weights of step %s\\n" % checkpoint[-1], weights
marker = os.path.join(os.environ["HPCFLEET_OUTPUTS"], "failed-once")
if (checkpoint, language, task, n_shot) == ("iter_2", "cs", "flores", "5") and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
with open(os.environ["HPCFLEET_METRICS"], "a") as out:
    out.write(json.dumps({"key": "acc", "value": int(checkpoint[-1]) / 10}) + "\\n")
"""
CELLS = [
    (language, task, shots)
    for language in ("fi", "cs")
    for task in ("belebele", "flores")
    for shots in ("0", "5")
]


def sacct_jobs(sandbox: Sandbox, site: str, run_id: str) -> list[tuple[str, str, int, int]]:
    """(job id, job name, start, end) of every allocation of the run on `site`."""
    result = sandbox.run_on(
        site,
        "SLURM_TIME_FORMAT=%s sacct --noheader --parsable2 --allocations --duplicates "
        "--starttime=now-1days --format=JobID,Start,End,JobName%200",
    )
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines():
        job_id, start, end, name = line.split("|", 3)
        if name.startswith(f"hpcfleet-{run_id}-") and start.isdigit() and end.isdigit():
            rows.append((job_id, name, int(start), int(end)))
    return rows


def test_checkpoints_evaluated_on_another_cluster_while_training_runs(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = embedded_engine(home)
    store = Store.open(config.database_url)
    store.put_partner(Partner(id="cuni", name="Charles University"))
    for name in ("site-a", "site-b"):
        document = slurm_site_document(slurm_sandbox.site(name), "cuni")
        store.put_site(Site.model_validate(document), "cuni")
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "eval.py").write_text(EVAL)
    stages = [
        {
            "name": "train",
            "kind": "train",
            "site": "site-a",
            "resources": {"time": "00:05:00"},
            "script": TRAIN,
            "checkpoints": {"path": "checkpoints/iter_*", "ready": "model.safetensors"},
        },
        {
            "name": "evaluate",
            "kind": "eval",
            "site": "site-b",
            "needs": ["train"],
            "for_each": "checkpoint",
            "array": {"language": ["fi", "cs"], "task": ["belebele", "flores"], "n_shot": [0, 5]},
            "array_parallelism": 4,
            "resources": {"time": "00:05:00"},
            "command": ["python3", "eval.py", "{checkpoint}", "{language}", "{task}", "{n_shot}"],
        },
    ]
    spec = write_yaml(spec_dir / "run.yaml", {"name": "ckpt", "stages": stages})
    run_id = launch(store, spec, "cuni").run.run_id

    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    assert "checkpoint iter_2" in (run.reason or "")
    assert [c.name for c in read_checkpoints(store, run_id, "train")] == [
        "iter_1",
        "iter_2",
        "iter_3",
    ]

    env = {**cli_env(home), "HPCFLEET_PARTNER": "cuni"}
    missing = cli(env, "results", run_id, "--missing", "--format", "json")
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout) == [
        {
            "checkpoint": "iter_2",
            "stage": "evaluate",
            "language": "cs",
            "task": "flores",
            "n_shot": "5",
            "why": "failed",
        }
    ]

    assert fill_run(config, run_id).cells == 1
    assert fill_run(config, run_id).cells == 0  # queued: nothing submitted twice
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason

    table = cli(env, "results", run_id, "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert sorted((r["checkpoint"], r["language"], r["task"], r["n_shot"]) for r in rows) == sorted(
        (f"iter_{i}", *cell) for i in (1, 2, 3) for cell in CELLS
    )
    assert {r["site"] for r in rows} == {"site-b"}

    # sacct of both clusters: the first evaluation started before train ended; one array
    # per checkpoint and one for the fill, each task once.
    expected_eval = {f"hpcfleet-{run_id}-evaluate-{attempt}": 8 for attempt in (1, 2, 3)}
    expected_eval[f"hpcfleet-{run_id}-evaluate-4"] = 1
    seen: dict[str, list[tuple[str, str, int, int]]] = {}

    def recorded() -> bool:
        seen["site-a"] = sacct_jobs(slurm_sandbox, "site-a", run_id)
        seen["site-b"] = sacct_jobs(slurm_sandbox, "site-b", run_id)
        counts: dict[str, int] = {}
        for _, name, _, _ in seen["site-b"]:
            counts[name] = counts.get(name, 0) + 1
        return counts == expected_eval and len(seen["site-a"]) == 1

    wait_until(recorded, timeout=30, interval=1)
    [(_, train_name, train_start, train_end)] = seen["site-a"]
    assert train_name == f"hpcfleet-{run_id}-train-1"
    first_eval_start = min(start for _, _, start, _ in seen["site-b"])
    assert train_start < first_eval_start < train_end, (train_start, first_eval_start, train_end)
    task_ids = [job_id for job_id, _, _, _ in seen["site-b"]]
    assert len(task_ids) == len(set(task_ids)) == 25  # every cell ran once per attempt
    store.close()
