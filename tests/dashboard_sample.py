"""A made-up consortium's worth of data, for the dashboard's tests, benchmark and screenshots.

It writes what the orchestrator would have written (store records; MLflow parent and
child runs tagged as INTERFACE.md says), deterministically from a seed, at any scale.
The dashboard itself never imports this module: it only reads.

Three partners, four sites (three SLURM sites with different health, one local), runs
of two specs (prepare -> train -> evaluate over the 24 EU languages) with a few
failures and gaps, and three milestones: one met, one at risk, one overdue.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.data.languages import EU_LANGUAGES
from registry.checkpoints import CheckpointRecord, record_checkpoint
from registry.milestone import Milestone
from registry.partner import Partner
from registry.records import ProbeRecord
from registry.results import StoredResult, read_results, replace_job_results
from registry.runspec import RunSpec
from registry.site import Site
from registry.states import RunState
from registry.store import Store

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SECRET_ENV_VALUE = "hf_SAMPLE_TOKEN_never_shown_0123456789"  # tests check it never renders
BATCH = 1000  # MLflow's cap on metrics per log_batch
SAMPLE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
GAP_PRONE = ("ga", "mt", "hr", "lv", "sl")  # languages whose evaluation sometimes fails


@dataclass(frozen=True)
class Scale:
    runs: int = 8
    eval_every: int = 1  # every n-th run evaluates the 24 languages
    children_every: int = 1  # every n-th run gets MLflow child runs (logs, loss curves)
    history_steps: int = 40  # loss points of a training child run
    span_days: int = 60  # the runs are spread over this many days before now


@dataclass(frozen=True)
class Filled:
    run_ids: list[str]
    metric_points: int
    jobs: int


PARTNERS = (
    Partner(id="cuni", name="Charles University", country="CZ"),
    Partner(id="csc", name="CSC - IT Center for Science", country="FI"),
    Partner(id="bsc", name="Barcelona Supercomputing Center", country="ES"),
)


def sites(today: date) -> list[Site]:
    period = {"start": today - timedelta(days=200), "end": today + timedelta(days=165)}
    return [Site.model_validate(doc) for doc in (
        {
            "name": "lumi", "partner": "csc", "description": "LUMI-G, CSC",
            "ssh": {"host": "lumi.csc.fi", "user": "jdoe",
                    "identity_file": "~/.ssh/id_ed25519_lumi",
                    "host_key": SAMPLE_HOST_KEY},
            "scheduler": "slurm",
            "slurm": {"account": "project_465000001", "partitions": [
                {"name": "small-g", "gpus_per_node": 8, "gpu_type": "mi250x",
                 "max_time": "3-00:00:00"},
                {"name": "small", "gpus_per_node": 0, "default": True}]},
            "environment": {"workdir": "/scratch/project_465000001/hpcfleet",
                            "modules": ["LUMI/24.03", "partition/G"],
                            "env": {"HF_TOKEN_PATH": SECRET_ENV_VALUE, "HF_HOME": "/scratch/hf"}},
            "storage": {"s3": {"endpoint": "https://lumidata.eu", "bucket": "oellm",
                               "profile": "lumi-o"}},
            "allocation": {"gpu_hours": 900, **period},
            "shared_with": ["*"], "labels": {"country": "FI", "gpu": "mi250x"},
        },
        {
            "name": "karolina", "partner": "cuni", "description": "Karolina, IT4I",
            "ssh": {"host": "karolina.it4i.cz", "user": "novak", "proxy_jump": ["gw.cuni.cz"]},
            "scheduler": "slurm",
            "slurm": {"account": "OPEN-30-1", "partitions": [
                {"name": "qgpu", "gpus_per_node": 8, "gpu_type": "a100"}]},
            "allocation": {"gpu_hours": 50, **period},
            "shared_with": ["*"], "labels": {"country": "CZ", "gpu": "a100"},
        },
        {
            "name": "marenostrum", "partner": "bsc", "description": "MareNostrum 5 ACC",
            "ssh": {"host": "alogin1.bsc.es", "known_hosts": "~/.ssh/known_hosts"},
            "scheduler": "slurm",
            "slurm": {"account": "bsc88", "partitions": [
                {"name": "acc", "gpus_per_node": 4, "gpu_type": "h100"}]},
            "allocation": {"gpu_hours": 100, **period},
            "shared_with": ["cuni", "csc"], "labels": {"country": "ES", "gpu": "h100"},
        },
        {
            "name": "cuni-local", "partner": "cuni", "description": "Workstation for tests",
            "scheduler": "local", "local": {"slots": 4},
        },
    )]


def probes(now: datetime) -> list[ProbeRecord]:
    def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
        return {"name": name, "ok": ok, "detail": detail}

    return [
        ProbeRecord(site="lumi", checked_at=now - timedelta(minutes=12), reachable=True,
                    ok=True, queue_depth=42, details={"checks": [
                        check("login", True, "jdoe@lumi.csc.fi"),
                        check("host key", True, "matches the pinned key"),
                        check("sbatch", True, "slurm 23.02.7")]}),
        ProbeRecord(site="karolina", checked_at=now - timedelta(hours=3), reachable=False,
                    ok=False, details={"checks": [
                        check("login", False, "connection timed out via gw.cuni.cz")]}),
        ProbeRecord(site="marenostrum", checked_at=now - timedelta(hours=1), reachable=True,
                    ok=False, queue_depth=7, details={"checks": [
                        check("login", True, "alogin1.bsc.es"),
                        check("account", False, "account bsc88 has no association")]}),
    ]


def milestones(today: date) -> list[Milestone]:
    languages = list(EU_LANGUAGES)
    return [Milestone.model_validate(doc) for doc in (
        {"id": "m1-first-release", "title": "First model release",
         "due": today + timedelta(days=120),
         "criteria": [{"stage_completed": {"run": "tiny-llm-v1", "stage": "train"}},
                      {"metric": {"experiment": "tiny-llm", "key": "accuracy", "min": 0.3,
                                  "over": "language", "all_of": ["bg", "cs", "da"]}}]},
        {"id": "m2-parity", "title": "Multilingual parity",
         "due": today + timedelta(days=20),
         "criteria": [{"metric": {"experiment": "tiny-llm", "key": "accuracy", "min": 0.75,
                                  "over": "language", "all_of": languages}}]},
        {"id": "m3-data-v2", "title": "Deduplicated corpus v2",
         "due": today - timedelta(days=5),
         "criteria": [{"stage_completed": {"run": "data-v2", "stage": "dedup"}}]},
    )]


def spec(name: str, experiment: str, evaluate: bool) -> RunSpec:
    stages: list[dict[str, Any]] = [
        {"name": "prepare", "kind": "data", "site": "marenostrum",
         "command": ["python3", "prepare.py"], "outputs": ["data/"]},
        {"name": "train", "kind": "train", "needs": ["prepare"],
         "site": {"require": {"min_gpus": 1}}, "resources": {"gpus": 8, "time": "12:00:00"},
         "command": ["python3", "train.py"], "retries": 1, "outputs": ["checkpoints/"]},
    ]
    if evaluate:
        stages.append({"name": "evaluate", "kind": "eval", "needs": ["train"],
                       "site": {"any_of": ["lumi", "karolina"]},
                       "array": {"language": list(EU_LANGUAGES)},
                       "command": ["python3", "evaluate.py", "--lang", "{language}"]})
    return RunSpec.model_validate({"name": name, "experiment": experiment, "stages": stages})


def register(store: Store, today: date, now: datetime) -> None:
    for partner in PARTNERS:
        store.put_partner(partner)
    for site in sites(today):
        store.put_site(site, site.partner)
    for probe in probes(now):
        store.add_probe(probe)
    for milestone in milestones(today):
        store.put_milestone(milestone, "cuni")


def fill(
    store: Store,
    client: MlflowClient,
    artifact_root: str,
    now: datetime | None = None,
    scale: Scale = Scale(),
    seed: int = 7,
) -> Filled:
    """Register the sample consortium and `scale.runs` runs, oldest first."""
    now = now or datetime.now(UTC)
    register(store, now.date(), now)
    rng = random.Random(seed)
    experiments: dict[str, str] = {}
    for name in ("tiny-llm", "eurollm-1b"):
        found = client.get_experiment_by_name(name)
        experiments[name] = str(found.experiment_id) if found else str(
            client.create_experiment(name, artifact_location=f"{artifact_root}/{name}"))
    step = timedelta(days=scale.span_days) / max(scale.runs, 1)
    with tempfile.TemporaryDirectory(prefix="hpcfleet-sample-logs-") as logs:
        writer = _Writer(store, client, rng, now, Path(logs))
        for i in range(scale.runs):
            live = scale.runs - i <= 2  # the newest two are still going: created hours ago
            created = now - (timedelta(hours=6 * (scale.runs - i)) if live
                             else step * (scale.runs - i))
            writer.run(i, scale, created, experiments)
    return Filled(writer.run_ids, writer.points, writer.jobs)


class _Writer:
    """Writes one run at a time: store records first, then its MLflow runs."""

    def __init__(self, store: Store, client: MlflowClient, rng: random.Random,
                 now: datetime, logs: Path) -> None:
        self.store, self.client, self.rng, self.now, self.logs = store, client, rng, now, logs
        self.run_ids: list[str] = []
        self.points = 0
        self.jobs = 0
        self.base = {code: 0.45 + 0.4 * rng.random() for code in EU_LANGUAGES}

    def run(self, i: int, scale: Scale, created: datetime,
            experiments: dict[str, str]) -> None:
        total = scale.runs
        evaluate = i % scale.eval_every == 0 or i >= total - 3
        experiment = "tiny-llm" if i % 4 else "eurollm-1b"
        name = "tiny-llm-v1" if experiment == "tiny-llm" else "eurollm-1b-v2"
        run_id = f"r{i:05d}{self.rng.randrange(16**3):03x}"
        partner = PARTNERS[i % len(PARTNERS)].id
        outcome = self._outcome(i, total)
        self.store.create_run(run_id, spec(name, experiment, evaluate), partner)
        self.run_ids.append(run_id)
        jobs = [] if outcome == "PENDING" else self._jobs(run_id, created, evaluate, outcome)
        ended = max((j["ended"] for j in jobs if j["ended"]), default=None)
        final = outcome if outcome != "RUNNING" else None
        track = i % scale.children_every == 0 or i >= total - 3
        parent = self._parent(experiments[experiment], run_id, name, partner, created,
                              ended if final else None, final, jobs)
        if track:
            self._children(experiments[experiment], parent, run_id, partner, jobs, scale)
        self._store_jobs(jobs)
        self._store_stages(run_id, evaluate, jobs, outcome)
        self.store.update_run(
            run_id, state=RunState(outcome), created=created,
            started=created + timedelta(minutes=2) if jobs else None,
            ended=ended if final else None, mlflow_run_id=parent,
            prefect_flow_run_id=f"00000000-0000-4000-8000-{i:012d}",
            reason=("stage train failed: OUT_OF_MEMORY (exit 137)" if outcome == "FAILED"
                    else "cancelled on request" if outcome == "CANCELLED" else None),
        )

    @staticmethod
    def _outcome(i: int, total: int) -> str:
        if i == total - 1:
            return "PENDING"
        if i == total - 2:
            return "RUNNING"
        if i % 10 == 3:
            return "FAILED"
        if i % 25 == 5:
            return "CANCELLED"
        return "COMPLETED"

    def _jobs(self, run_id: str, created: datetime, evaluate: bool,
              outcome: str) -> list[dict[str, Any]]:
        rng = self.rng
        jobs: list[dict[str, Any]] = []
        t = created + timedelta(minutes=3)

        def job(stage: str, attempt: int, site: str, state: str, hours: float, gpus: int,
                index: int | None = None, value: str | None = None,
                **extra: Any) -> dict[str, Any]:
            start = t + timedelta(minutes=rng.randrange(1, 20))
            end = None if state == "RUNNING" else start + timedelta(hours=hours)
            scheduler_id = str(rng.randrange(4_000_000, 9_000_000))
            jobs.append({
                "run_id": run_id, "stage": stage, "attempt": attempt, "site": site,
                "job_name": f"hpcfleet-{run_id}-{stage}-{attempt}",
                "scheduler_id": scheduler_id if index is None else f"{scheduler_id}_{index}",
                "array_index": index, "array_value": value, "state": state,
                "exit_code": None if end is None else (0 if state == "COMPLETED" else 1),
                "submitted": t, "started": start, "ended": end,
                "gpu_hours": round(gpus * hours, 3) if end else 0.0,
                "node": f"nid{rng.randrange(5000, 7999):06d}", **extra,
            })
            return jobs[-1]

        job("prepare", 1, "marenostrum", "COMPLETED", 0.5 + rng.random(), 0)
        t = jobs[-1]["ended"]
        if outcome == "FAILED":
            job("train", 1, "lumi", "OUT_OF_MEMORY", 0.4, 8, exit_code=137,
                reason="oom-kill: Out of memory in step 1200")
            t = jobs[-1]["ended"]
            job("train", 2, "lumi", "OUT_OF_MEMORY", 0.4, 8, exit_code=137,
                reason="oom-kill: Out of memory in step 1200")
            return jobs
        job("train", 1, "lumi", "COMPLETED", 3 + 4 * rng.random(), 8)
        t = jobs[-1]["ended"]
        if outcome == "CANCELLED":
            jobs[-1].update(state="CANCELLED", reason="cancelled on request")
            return jobs
        if evaluate:
            for index, code in enumerate(EU_LANGUAGES):
                site = "lumi" if index % 2 == 0 else "karolina"
                state = "RUNNING" if outcome == "RUNNING" and index % 3 == 0 else "COMPLETED"
                job("evaluate", 1, site, state, 0.2 + 0.3 * rng.random(), 1, index, code)
        return jobs

    def _parent(self, experiment_id: str, run_id: str, name: str, partner: str,
                created: datetime, ended: datetime | None, final: str | None,
                jobs: list[dict[str, Any]]) -> str:
        tags = {"hpcfleet.run_id": run_id, "hpcfleet.partner": partner,
                "hpcfleet.run_name": name}
        if final:
            tags["hpcfleet.state"] = final
        parent = self.client.create_run(experiment_id, start_time=_ms(created), tags=tags,
                                        run_name=f"{name} ({run_id})").info.run_id
        metrics: list[tuple[str, float, int]] = []
        progress = len(self.run_ids) / 400  # later runs do a little better
        for job in jobs:
            if job["stage"] == "evaluate" and job["state"] == "COMPLETED":
                code = job["array_value"]
                if code in GAP_PRONE and self.rng.random() < 0.3:
                    continue  # a language that produced no result: a gap on the heatmap
                accuracy = min(0.99, self.base[code] + progress + 0.05 * self.rng.random())
                metrics.append((f"accuracy/{code}", accuracy, 0))
                metrics.append((f"nll/{code}", 4.0 - 2.5 * accuracy, 0))
        if final:
            metrics.append(("gpu_hours", sum(j["gpu_hours"] for j in jobs), 0))
        self._log(parent, metrics, _ms(ended or created))
        if final:
            status = {"COMPLETED": "FINISHED", "FAILED": "FAILED"}.get(final, "KILLED")
            self.client.set_terminated(parent, status, end_time=_ms(ended or created))
        return str(parent)

    def _children(self, experiment_id: str, parent: str, run_id: str, partner: str,
                  jobs: list[dict[str, Any]], scale: Scale) -> None:
        for job in jobs:
            if job["state"] == "RUNNING":
                continue
            value = job["array_value"]
            tags = {"hpcfleet.run_id": run_id, "hpcfleet.stage": job["stage"],
                    "hpcfleet.site": job["site"], "hpcfleet.partner": partner,
                    "hpcfleet.attempt": str(job["attempt"]), "hpcfleet.state": job["state"],
                    "slurm.job_id": job["scheduler_id"], "mlflow.parentRunId": parent}
            if value is not None:
                tags["hpcfleet.array_value"] = value
            suffix = f"[{value}]" if value is not None else ""
            child = self.client.create_run(
                experiment_id, start_time=_ms(job["started"]), tags=tags,
                run_name=f"{job['stage']}{suffix} #{job['attempt']}").info.run_id
            job["mlflow_run_id"] = child
            end = _ms(job["ended"])
            metrics = [("gpu_hours", job["gpu_hours"], 0)]
            if job["stage"] == "train":
                metrics += [("loss", 6.0 * 0.97 ** s + 0.1 * self.rng.random(), s)
                            for s in range(scale.history_steps)]
            if value is not None:
                metrics.append(("accuracy", self.base[value], 0))
            self._log(child, metrics, end)
            self._attach_logs(child, job)
            status = "FINISHED" if job["state"] == "COMPLETED" else "FAILED"
            self.client.set_terminated(child, status, end_time=end)

    def _attach_logs(self, child: str, job: dict[str, Any]) -> None:
        (self.logs / "0.out").write_text(
            "".join(f"[{job['stage']}] step {n}: ok\n" for n in range(60)))
        (self.logs / "0.err").write_text(f"{job['reason']}\n" if job.get("reason") else "")
        self.client.log_artifacts(child, str(self.logs), "logs")

    def _log(self, run: str, metrics: Sequence[tuple[str, float, int]], when: int) -> None:
        from mlflow.entities import Metric

        batch = [Metric(key, float(value), when, step) for key, value, step in metrics]
        for start in range(0, len(batch), BATCH):
            self.client.log_batch(run, metrics=batch[start:start + BATCH])
        self.points += len(batch)

    def _store_jobs(self, jobs: list[dict[str, Any]]) -> None:
        if jobs:
            self.store.add_jobs(jobs)
            self.jobs += len(jobs)

    def _store_stages(self, run_id: str, evaluate: bool, jobs: list[dict[str, Any]],
                      outcome: str) -> None:
        names = ["prepare", "train"] + (["evaluate"] if evaluate else [])
        for name in names:
            mine = [j for j in jobs if j["stage"] == name]
            if not mine:
                state = "CANCELLED" if outcome in ("FAILED", "CANCELLED") else "PENDING"
                reason = "skipped: needs train, which failed" if outcome == "FAILED" else None
                self.store.update_stage(run_id, name, state=RunState(state), reason=reason)
                continue
            states = {j["state"] for j in mine}
            if "RUNNING" in states:
                state = "RUNNING"
            elif states == {"COMPLETED"}:
                state = "COMPLETED"
            else:
                state = "CANCELLED" if "CANCELLED" in states else "FAILED"
            ends = [j["ended"] for j in mine if j["ended"]]
            self.store.update_stage(
                run_id, name, state=RunState(state), sites=sorted({j["site"] for j in mine}),
                attempt=max(j["attempt"] for j in mine), started=min(j["started"] for j in mine),
                ended=max(ends) if state != "RUNNING" and ends else None,
                reason=mine[-1].get("reason") if state == "FAILED" else None,
                choice="named in the spec" if name == "prepare" else "least queued site first",
            )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def fill_home(home: Path, scale: Scale = Scale(), now: datetime | None = None) -> Filled:
    """Fill the embedded default's store and MLflow under `home` (as HPCFLEET_HOME)."""
    from mlflow.tracking import MlflowClient

    home.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        filled = fill(store, client, (home / "mlartifacts").as_uri(), now=now, scale=scale)
        add_checkpoint_results(store)
        return filled
    finally:
        store.close()


CHECKPOINTS = ("iter_001000", "iter_002000", "iter_003000")
RESULT_TASKS = ("belebele", "flores")
RESULT_SHOTS = ("0", "5")
NO_RESULT_LANGUAGE = "mt"  # its jobs complete without a result line: a failed cell
LATE_LANGUAGE = "ga"  # no result for the newest checkpoint yet: a grey gap


def evaluated_run(store: Store) -> str:
    """The newest run with evaluation jobs: the one the Evaluations page opens on."""
    runs = sorted(store.list_runs(), key=lambda r: r.created, reverse=True)
    return next(r.run_id for r in runs if store.jobs(r.run_id, "evaluate"))


def add_checkpoint_results(store: Store) -> str:
    """Stored results of the newest evaluated run, as its jobs would have reported them:
    acc per checkpoint x task x n_shot for each language's completed job (the array has
    the language; result lines name the rest). Returns the run's id."""
    run_id = evaluated_run(store)
    # The training stage's checkpoints, as its watcher recorded them.
    found = min(j.started or j.submitted or datetime.now(UTC) for j in store.jobs(run_id))
    for step, checkpoint in enumerate(CHECKPOINTS):
        record_checkpoint(
            store,
            run_id,
            CheckpointRecord(
                "train", checkpoint, f"checkpoints/{checkpoint}", "site-b", 1000 + step,
                f"{step:064x}", found + timedelta(minutes=10 * step),
            ),
        )  # fmt: skip
    rng = random.Random(11)
    for job in store.jobs(run_id, "evaluate"):
        language = job.array_value or ""
        if job.state.value != "COMPLETED" or language == NO_RESULT_LANGUAGE:
            continue
        results = [
            StoredResult("evaluate", "acc", round(0.3 + 0.1 * step + 0.2 * rng.random(), 3),
                         job.site, job.attempt,
                         {"language": language, "task": task, "n_shot": shots}, checkpoint,
                         job.array_index)
            for step, checkpoint in enumerate(CHECKPOINTS)
            for task in RESULT_TASKS
            for shots in RESULT_SHOTS
            if not (language == LATE_LANGUAGE and checkpoint == CHECKPOINTS[-1])
        ]
        replace_job_results(store, run_id, job.id, results)
    return run_id


# -- hostile text: what a partner (or anyone who can write to MLflow) could type -----------

# Markdown and HTML that would become a remote-image beacon, a fake sign-in link, script,
# a heading, a table, a Streamlit directive, math, bare autolinks or a code span that
# ends early if it were rendered as anything but text. Under 200 characters: it must fit
# a partner's name.
HOSTILE = (
    "![b](http://evil.example/b) [sign in again](http://evil.example/login) "
    "`[t](http://evil.example)` <script>s()</script> <img src=x onerror=s()> "
    ":red[X] $x$ www.evil.example\n# H\n|a|b|\n|-|-|"
)
HOSTILE_MARKER = "evil"  # appears in every hostile string, escaped or not


def inject_hostile(home: Path) -> str:
    """Put `HOSTILE` into every free-text field the pages show, in a home that `fill_home`
    filled: partner name, site description, labels and GPU type, probe checks, milestone
    title and criterion, the failed run's name, experiment and reasons, MLflow run names.
    Returns the failed run's id."""
    from mlflow.tracking import MlflowClient

    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    try:
        store.put_partner(PARTNERS[1].model_copy(update={"name": HOSTILE}))
        lumi = store.get_site("lumi").site.model_dump()
        lumi["description"] = HOSTILE
        lumi["labels"]["note"] = HOSTILE
        lumi["slurm"]["partitions"][0]["gpu_type"] = HOSTILE
        store.put_site(Site.model_validate(lumi), "csc")
        store.add_probe(ProbeRecord(
            site="lumi", checked_at=datetime.now(UTC), reachable=True, ok=False, queue_depth=1,
            details={"checks": [{"name": HOSTILE, "ok": False, "detail": HOSTILE}]}))
        store.put_milestone(Milestone.model_validate({
            "id": "m4-hostile", "title": HOSTILE, "due": date.today() + timedelta(days=9),
            "criteria": [{"metric": {"experiment": HOSTILE, "key": "accuracy", "min": 0.5}}],
        }), "cuni")
        evaluated = evaluated_run(store)
        job = next(j for j in store.jobs(evaluated, "evaluate") if j.array_value == "bg")
        stored = [r for r in read_results(store, evaluated) if r.array_index == job.array_index]
        hostile = StoredResult("evaluate", "acc", 0.5, job.site, job.attempt,
                               {"language": "bg", "task": "belebele", "n_shot": "0"},
                               HOSTILE, job.array_index)
        replace_job_results(store, evaluated, job.id, [*stored, hostile])
        failed = next(r for r in store.list_runs() if r.state == RunState.FAILED)
        store.update_run(failed.run_id, name=HOSTILE, experiment=HOSTILE, reason=HOSTILE)
        for stage in store.stages(failed.run_id):
            store.update_stage(failed.run_id, stage.name, reason=HOSTILE, choice=HOSTILE)
        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        for run in store.list_runs():
            if run.mlflow_run_id:
                client.set_tag(run.mlflow_run_id, "hpcfleet.run_name", HOSTILE)
                _rename_children(client, run.mlflow_run_id)
        return failed.run_id
    finally:
        store.close()


def _rename_children(client: MlflowClient, parent: str) -> None:
    experiment = client.get_run(parent).info.experiment_id
    for child in client.search_runs([experiment],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"):
        client.set_tag(child.info.run_id, "mlflow.runName", HOSTILE)
