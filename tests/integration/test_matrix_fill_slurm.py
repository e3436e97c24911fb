"""The evaluation matrix and `run fill` on the real SLURM sandbox: the 2×2×2 matrix is
one throttled SLURM array, the cell that fails on its first attempt is the only one
missing, and the fill submits one new array of exactly that cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.engine import EngineConfig, execute_run
from flows.fill import fill_run
from flows.launch import launch
from flows.results import missing_cells
from registry.partner import Partner
from registry.results import read_results
from registry.site import Site
from registry.states import RunState
from registry.store import Store
from tests.helpers import write_yaml
from tests.integration.test_matrix_fill import EVAL_PY
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm


def test_fill_on_slurm_submits_one_array_of_the_missing_cell(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    config = EngineConfig(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        home=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
    )
    store = Store.open(config.database_url)
    store.put_partner(Partner(id="cuni", name="Charles University"))
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    store.put_site(site, "cuni")
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "eval.py").write_text(EVAL_PY)
    stage = {
        "name": "evaluate",
        "site": "site-a",
        "array": {"language": ["fi", "cs"], "task": ["belebele", "flores"], "n_shot": [0, 5]},
        "array_parallelism": 4,
        "resources": {"time": "00:05:00"},
        "command": ["python3", "eval.py", "{language}", "{task}", "{n_shot}"],
    }
    spec = write_yaml(tmp_path / "spec" / "run.yaml", {"name": "m", "stages": [stage]})
    run_id = launch(store, spec, "cuni").run.run_id

    assert execute_run(config, run_id).state is RunState.FAILED
    first = store.jobs(run_id, "evaluate")
    assert len({j.scheduler_id.split("_")[0] for j in first if j.scheduler_id}) == 1  # one array
    run = store.get_run(run_id)
    [missing] = missing_cells(run.spec, first, read_results(store, run_id))
    assert (missing.cell, missing.why) == (
        {"language": "cs", "task": "flores", "n_shot": "5"},
        "failed",
    )

    assert fill_run(config, run_id).cells == 1
    assert fill_run(config, run_id).cells == 0  # queued on SLURM: nothing submitted twice
    assert execute_run(config, run_id).state is RunState.COMPLETED
    [filled] = [j for j in store.jobs(run_id, "evaluate") if j.attempt == 2]
    assert filled.array_value == "language=cs,task=flores,n_shot=5"
    assert filled.site == "site-a" and filled.scheduler_id is not None
    assert missing_cells(run.spec, store.jobs(run_id), read_results(store, run_id)) == []
    store.close()
