"""`hpcfleet results` and `hpcfleet run fill` through the CLI, on a local site: a
matrix read from a CSV file next to the spec, one cell failing on its first attempt,
`results --missing` naming it, `run fill --wait` completing the run, every cell in
`results --format csv`, and a second fill that submits nothing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from registry.store import Store
from tests.helpers import cli, cli_env, consortium, write_yaml
from tests.integration.test_matrix_fill import EVAL_PY

TASKS_CSV = "language,task,n_shot\n" + "".join(
    f"{language},{task},{shots}\n"
    for language in ("fi", "cs")
    for task in ("belebele", "flores")
    for shots in (0, 5)
)


def test_results_missing_and_fill_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**cli_env(home), "HPCFLEET_PARTNER": "cuni"}
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    consortium(store)
    store.close()
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "eval.py").write_text(EVAL_PY)
    (spec_dir / "tasks.csv").write_text(TASKS_CSV)
    stage = {
        "name": "evaluate",
        "site": "site-a",
        "array": {"from": "tasks.csv"},
        "exclude": [{"language": "fi", "task": "flores"}],
        "command": ["python3", "eval.py", "{language}", "{task}", "{n_shot}"],
    }
    spec = write_yaml(spec_dir / "run.yaml", {"name": "m", "experiment": "t", "stages": [stage]})

    launched = cli(env, "run", "launch", str(spec), "--wait")
    assert launched.returncode == 1, launched.stderr
    run_id = launched.stdout.splitlines()[0].strip()
    assert "5/6 cells, 1 missing (1 failed)" in launched.stdout

    missing = cli(env, "results", run_id, "--missing", "--format", "json")
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout) == [
        {"stage": "evaluate", "language": "cs", "task": "flores", "n_shot": "5", "why": "failed"}
    ]

    filled = cli(env, "run", "fill", run_id, "--wait")
    assert filled.returncode == 0, filled.stderr
    assert "submitted 1 missing cell(s) (evaluate 1)" in filled.stderr

    table = cli(env, "results", run_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.stdout.splitlines()[0] == (
        "checkpoint,stage,language,task,n_shot,metric,value,site,attempt"
    )
    assert len(rows) == 12  # 6 cells, 2 metrics each
    assert {r["attempt"] for r in rows if r["task"] == "flores" and r["n_shot"] == "5"} == {"2"}

    again = cli(env, "run", "fill", run_id)
    assert again.returncode == 0 and "nothing to fill" in again.stderr
    shown = cli(env, "run", "show", run_id)
    assert "evaluate: 6/6 cells" in shown.stdout
    as_json = json.loads(cli(env, "run", "show", run_id, "--json").stdout)
    assert as_json["cells"][0]["cells"] == as_json["cells"][0]["done"] == 6
