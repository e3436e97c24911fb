"""`where: login` on a `scheduler: local` site (hpcfleet runs on the login node, or the
embedded default): the stage runs as a local job, online on an `offline` site, and
its file reaches the batch stage after it, which is offline."""

from __future__ import annotations

from pathlib import Path

from flows.engine import execute_run
from flows.launch import launch
from registry.partner import Partner
from registry.states import RunState
from registry.store import Store
from tests.helpers import embedded_engine, local_site, write_yaml

FETCH = """
[ -z "${HF_HUB_OFFLINE:-}${TRANSFORMERS_OFFLINE:-}" ] || { echo "offline" >&2; exit 3; }
mkdir -p "$HPCFLEET_OUTPUTS/model" && echo weights > "$HPCFLEET_OUTPUTS/model/w.txt"
"""
TRAIN = """
[ "$HF_DATASETS_OFFLINE" = 1 ] && [ "$WANDB_MODE" = offline ] || { echo "online" >&2; exit 4; }
cat "$HPCFLEET_INPUTS/download/model/w.txt"
"""


def test_a_login_stage_on_a_local_site_runs_online_as_a_local_job(tmp_path: Path) -> None:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    store.put_partner(Partner(id="cuni", name="Charles University"))
    site = local_site("here", "cuni", environment={"offline": True, "workdir": str(tmp_path / "w")})
    store.put_site(site, "cuni")
    stages = [
        {
            "name": "download",
            "site": "here",
            "where": "login",
            "script": FETCH,
            "outputs": ["model/w.txt"],
        },
        {"name": "train", "site": "here", "needs": ["download"], "script": TRAIN},
    ]
    spec = write_yaml(tmp_path / "run.yaml", {"name": "local-login", "stages": stages})
    run_id = launch(store, spec, "cuni").run.run_id

    assert execute_run(config, run_id).state is RunState.COMPLETED, store.stages(run_id)
    [download] = store.jobs(run_id, "download")
    assert download.scheduler_id and download.scheduler_id.isdigit()  # the local scheduler's
    [log] = (tmp_path / "w" / "runs" / run_id / "train").glob("attempt-1/logs/0.out")
    assert log.read_text() == "weights\n"
    store.close()
