"""The dashboard's data layer: pure transforms over records and MLflow runs, the burn
chart's usage (the forecast is tested with the ledger's), configuration, and the rule that the dashboard never reaches for SSH."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from dashboard.config import load_config
from dashboard.data.burn import cumulative_usage, daily
from dashboard.data.languages import EU_LANGUAGES
from dashboard.data.parent_index import CLOCK_SLACK_MS, FULL_SYNC_SECONDS, ParentRunIndex
from dashboard.data.queries import (
    PARENT_FILTER,
    attempt_timeline,
    filter_runs,
    jobs_frame,
    language_matrix,
    languages_covered,
    load_jobs,
    parents_and_results,
    run_records_frame,
    runs_frame,
)
from dashboard.data.run_queries import mlflow_run_url, prefect_flow_run_url, tail
from dashboard.data.sites import site_view
from dashboard.data.store_reads import read_runs
from dashboard.text import (
    WORD_JOINER,
    chart_text,
    code,
    duration,
    one_line,
    plain,
    safe_url,
)
from flows.burn import period_bounds
from registry.partner import Partner
from registry.records import JobRecord, ProbeRecord, RunRecord
from registry.runspec import RunSpec
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = RunSpec.model_validate({"name": "tiny-llm-v1", "stages": [
    {"name": "train", "site": "a", "command": ["true"]}]})


def job(job_id: int, run_id: str, site: str, stage: str = "train", attempt: int = 1,
        state: JobState = JobState.COMPLETED, start: float | None = 0.0,
        hours: float | None = 1.0, gpu_hours: float = 8.0, **extra: Any) -> JobRecord:
    started = T0 + timedelta(hours=start) if start is not None else None
    ended = started + timedelta(hours=hours) if started and hours is not None else None
    return JobRecord(id=job_id, run_id=run_id, stage=stage, attempt=attempt, site=site,
                     job_name=f"hpcfleet-{run_id}-{stage}-{attempt}", scheduler_id=str(job_id),
                     array_index=None, array_value=None, state=state, submitted=T0,
                     started=started, ended=ended, gpu_hours=gpu_hours, **extra)


def run(run_id: str, created: datetime, state: RunState = RunState.COMPLETED,
        partner: str = "cuni") -> RunRecord:
    return RunRecord(run_id=run_id, name="tiny-llm-v1", partner=partner, experiment="tiny-llm",
                     state=state, created=created, spec=SPEC)


# -- runs and jobs ---------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_sites_and_gpu_hours() -> None:
    jobs = jobs_frame([job(1, "a", "lumi"), job(2, "a", "karolina", gpu_hours=2.0),
                       job(3, "b", "lumi")])
    runs = runs_frame(run_records_frame([
        run("a", T0), run("b", T0 + timedelta(days=1)),
        run("c", T0 + timedelta(days=2), RunState.PENDING)]), jobs)
    assert list(runs["run_id"]) == ["c", "b", "a"]
    row = runs.set_index("run_id").loc["a"]
    assert row["sites"] == "karolina, lumi"
    assert row["gpu_hours"] == 10.0 and row["jobs"] == 2
    pending = runs.set_index("run_id").loc["c"]
    assert pending["sites"] == "" and pending["jobs"] == 0


def test_filters_combine_and_a_site_matches_any_site_of_a_run() -> None:
    jobs = jobs_frame([job(1, "a", "lumi"), job(2, "a", "karolina"), job(3, "b", "lumi")])
    runs = runs_frame(run_records_frame([run("a", T0), run("b", T0, RunState.FAILED,
                                                         partner="csc")]), jobs)
    assert list(filter_runs(runs, site=["karolina"])["run_id"]) == ["a"]
    assert set(filter_runs(runs, site=["lumi"])["run_id"]) == {"a", "b"}
    assert list(filter_runs(runs, site=["lumi"], state=["FAILED"])["run_id"]) == ["b"]
    assert len(filter_runs(runs, partner=[], state=[])) == 2  # nothing chosen: everything


def test_timeline_has_one_bar_per_site_stage_and_attempt() -> None:
    now = T0 + timedelta(hours=10)
    jobs = jobs_frame([
        job(1, "r", "lumi", attempt=1, state=JobState.OUT_OF_MEMORY, start=0, hours=1,
            exit_code=137),
        job(2, "r", "lumi", attempt=2, start=2, hours=3),
        job(3, "r", "karolina", stage="evaluate", start=5, hours=None,
            state=JobState.RUNNING),
        job(4, "r", "karolina", stage="evaluate", start=5, hours=1),
        job(5, "r", "karolina", stage="report", start=None, hours=None,
            state=JobState.PENDING),
    ])
    bars = attempt_timeline(jobs, now).set_index("label")
    assert list(bars.index) == ["train #1", "train #2", "evaluate #1", "report #1"]
    assert bars.loc["train #1", "state"] == "OUT_OF_MEMORY"
    assert bars.loc["train #2", "end"] == T0 + timedelta(hours=5)
    assert bars.loc["evaluate #1", "state"] == "RUNNING"
    assert bars.loc["evaluate #1", "end"] == now  # still running: the bar reaches now
    assert bars.loc["evaluate #1", "tasks"] == 2
    assert bars.loc["report #1", "start"] == T0  # queued: from its submission
    assert bars.loc["report #1", "state"] == "PENDING"


# -- sites -------------------------------------------------------------------------------


def slurm_site(**ssh: Any) -> Site:
    return Site.model_validate({
        "name": "lumi", "partner": "csc", "scheduler": "slurm",
        "ssh": {"host": "lumi.csc.fi", "user": "jdoe", **ssh},
        "slurm": {"partitions": [{"name": "small-g", "gpus_per_node": 8,
                                  "gpu_type": "mi250x"}]},
        "environment": {"env": {"HF_TOKEN_PATH": "hf_top_secret_value", "HF_HOME": "/scratch/hf"},
                        "modules": ["LUMI/24.03"]},
        "allocation": {"gpu_hours": 1000, "start": "2026-01-01", "end": "2026-12-31"},
    })


def test_a_site_view_names_env_variables_but_never_their_values() -> None:
    site = slurm_site(identity_file="~/.ssh/id_lumi",
                      host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0ABCDEFGH")
    view = site_view(site, "CSC", None, jobs_frame([]), T0)
    assert view.env_names == ("HF_HOME", "HF_TOKEN_PATH")
    assert "hf_top_secret_value" not in repr(view)
    assert "AAAAC3NzaC1lZDI1NTE5AAAAIE0ABCDEFGH" not in repr(view)
    assert view.identity_file == "~/.ssh/id_lumi"
    assert view.host_key == "pinned" and view.host_key_pinned is True
    assert view.login == "jdoe@lumi.csc.fi"
    assert view.partitions == "small-g (8× mi250x)"


@pytest.mark.parametrize(("ssh", "text", "pinned"), [
    ({}, "not pinned", False),
    ({"known_hosts": "~/.ssh/known_hosts"}, "pinned (known_hosts file)", True),
])
def test_host_key_pinning_is_reported(ssh: dict[str, str], text: str, pinned: bool) -> None:
    view = site_view(slurm_site(**ssh), "CSC", None, jobs_frame([]), T0)
    assert (view.host_key, view.host_key_pinned) == (text, pinned)


def test_a_local_site_has_no_host_key_to_pin() -> None:
    site = Site.model_validate({"name": "here", "partner": "cuni", "scheduler": "local"})
    view = site_view(site, "Charles University", None, jobs_frame([]), T0)
    assert view.login == "this machine" and view.host_key_pinned is None
    assert view.allocation is None and view.probe is None


def test_a_site_view_carries_the_latest_probe_and_its_checks() -> None:
    probe = ProbeRecord(site="lumi", checked_at=T0, reachable=True, ok=False, queue_depth=17,
                        details={"checks": [{"name": "account", "ok": False,
                                             "detail": "no association"}]})
    view = site_view(slurm_site(), "CSC", probe, jobs_frame([]), T0)
    assert view.probe is not None
    assert view.probe.queue_depth == 17 and not view.probe.ok
    assert view.probe.checks == (("account", False, "no association"),)


def test_allocation_usage_counts_the_site_jobs_inside_the_period() -> None:
    jobs = jobs_frame([job(1, "a", "lumi", gpu_hours=100.0),
                       job(2, "a", "lumi", gpu_hours=50.0, start=24.0)])
    view = site_view(slurm_site(), "CSC", None, jobs, T0 + timedelta(days=2))
    assert view.allocation is not None
    assert view.allocation.forecast.used == 150.0
    assert view.allocation.forecast.granted == 1000.0


# -- burn ------------------------------------------------------------------------------


def usage_of(*points: tuple[datetime, float], start: datetime, end: datetime) -> pd.DataFrame:
    jobs = pd.DataFrame({"ended": [p[0] for p in points], "started": [p[0] for p in points],
                         "submitted": [p[0] for p in points], "gpu_hours": [p[1] for p in points]})
    return cumulative_usage(jobs, start, end)


def test_usage_accumulates_only_inside_the_period() -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 31))
    assert end == datetime(2026, 2, 1, tzinfo=UTC)  # the last day counts whole
    usage = usage_of((datetime(2025, 12, 31, tzinfo=UTC), 99.0),
                     (datetime(2026, 1, 5, tzinfo=UTC), 10.0),
                     (datetime(2026, 1, 31, 23, tzinfo=UTC), 5.0),
                     (datetime(2026, 2, 1, tzinfo=UTC), 77.0), start=start, end=end)
    assert list(usage["used"]) == [0.0, 10.0, 15.0]


# -- MLflow results and the language matrix -------------------------------------------


@dataclass
class FakeRun:
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int
    experiment_id: str = "1"
    status: str = "FINISHED"
    end_time: int | None = None
    data: Any = field(init=False)
    info: Any = field(init=False)

    def __post_init__(self) -> None:
        self.data = self
        self.info = self


def parent(run_id: str, day: int, metrics: dict[str, float]) -> FakeRun:
    start = int((T0 + timedelta(days=day)).timestamp() * 1000)
    return FakeRun(f"m-{run_id}", {"hpcfleet.run_id": run_id, "hpcfleet.run_name": "tiny",
                                   "hpcfleet.state": "COMPLETED"}, metrics, start)


def results() -> pd.DataFrame:
    runs = [
        parent("r2", 2, {"accuracy/fi": 0.8, "accuracy/bg": 0.7, "gpu_hours": 3.0}),
        parent("r1", 1, {"accuracy/fi": 0.6, "nll/fi": 3.0, "accuracy/xx": 0.1}),
        parent("r3", 3, {"accuracy/sv": 0.9}),
    ]
    parents, found = parents_and_results(runs, {"1": "tiny-llm"})
    assert list(parents["run_id"]) == ["r2", "r1", "r3"]
    assert parents.set_index("run_id").loc["r2", "gpu_hours"] == 3.0
    return found


def test_the_matrix_has_the_24_languages_in_order_and_runs_oldest_first() -> None:
    matrix = language_matrix(results(), "tiny-llm", "accuracy")
    assert list(matrix.index) == list(EU_LANGUAGES)
    assert list(matrix.columns) == ["tiny (r1)", "tiny (r2)", "tiny (r3)"]
    assert matrix.loc["fi", "tiny (r1)"] == 0.6
    assert math.isnan(matrix.loc["bg", "tiny (r1)"])  # a gap stays a gap
    assert matrix.loc["sv"].notna().sum() == 1
    assert "xx" not in matrix.index  # non-EU array values are not rows


def test_the_matrix_can_keep_only_the_newest_runs() -> None:
    matrix = language_matrix(results(), "tiny-llm", "accuracy", last=2)
    assert list(matrix.columns) == ["tiny (r2)", "tiny (r3)"]


def test_languages_covered_are_the_eu_languages_with_any_result() -> None:
    assert languages_covered(results()) == ["bg", "fi", "sv"]


# -- small things ------------------------------------------------------------------------


def test_links_point_at_the_run_pages_of_the_two_uis() -> None:
    assert mlflow_run_url("http://m:5000", "3", "abc") == "http://m:5000/#/experiments/3/runs/abc"
    assert prefect_flow_run_url("http://p:4200", "f-1") == "http://p:4200/runs/flow-run/f-1"


def test_configuration_follows_the_cli_variables_and_defaults(tmp_path: Path) -> None:
    config = load_config({"HPCFLEET_HOME": str(tmp_path)})
    assert config.store_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert config.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert config.mlflow_ui_url == "http://127.0.0.1:5000"
    assert config.prefect_ui_url == "http://127.0.0.1:4200"
    other = load_config({"HPCFLEET_DATABASE_URL": "postgresql://db/reg",
                         "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                         "PREFECT_API_URL": "http://prefect:4200/api",
                         "HPCFLEET_DASHBOARD_REFRESH": "0.1"})
    assert other.home == Path("~/.hpcfleet").expanduser().absolute()
    assert (other.store_url, other.tracking_uri) == ("postgresql://db/reg", "http://mlflow:5000")
    assert other.prefect_ui_url == "http://prefect:4200"
    assert other.refresh_seconds == 2.0  # never hammer the store


def test_passwords_in_urls_are_masked() -> None:
    assert safe_url("postgresql://fleet:s3cret@db:5432/reg") == "postgresql://fleet:***@db:5432/reg"
    assert safe_url("sqlite:////home/x/registry.db") == "sqlite:////home/x/registry.db"


def test_durations_read_like_a_person_would_say_them() -> None:
    assert [duration(s) for s in (None, 4, 250, 7500, 200_000)] == [
        "-", "4 s", "4 min 10 s", "2 h 05 min", "2 d 7 h"]


def test_a_log_tail_is_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "0.out"
    log.write_text("".join(f"line {n}\n" for n in range(1000)))
    assert tail(log, 3) == "line 997\nline 998\nline 999"


def test_the_dashboard_never_imports_ssh_or_slurm_code() -> None:
    """Every page module and the data layer load without paramiko, the site drivers or
    the sample-data writer."""
    probe = (
        "import importlib, sys\n"
        "from dashboard.navigation import PAGES\n"
        "import dashboard.cached, dashboard.charts\n"
        "for entry in PAGES:\n"
        "    importlib.import_module('dashboard.views.' + entry.module)\n"
        "bad = sorted(m for m in sys.modules if m in ('paramiko', 'tests.dashboard_sample') or "
        "m.startswith(('paramiko.', 'sites.ssh.transport', 'sites.slurm.scheduler', 'sites.driver', 'prefect')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=120, check=True)
    assert result.stdout.strip() == ""


def test_the_data_layer_loads_without_streamlit() -> None:
    """`dashboard.data` is plain Python: scripts and tests use it without an app."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import dashboard.data as data\n"
        "for module in pkgutil.iter_modules(data.__path__):\n"
        "    importlib.import_module('dashboard.data.' + module.name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=120, check=True)
    assert result.stdout.strip() == ""


def test_a_chart_of_usage_keeps_the_last_step_of_each_day() -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 31))
    usage = usage_of(*[(datetime(2026, 1, 2, h, tzinfo=UTC), 1.0) for h in range(24)],
                     (datetime(2026, 1, 3, 5, tzinfo=UTC), 2.0), start=start, end=end)
    assert list(daily(usage)["used"]) == [0.0, 24.0, 26.0]


# -- bulk reads and the parent-run index ------------------------------------------------


def test_bulk_reads_match_what_the_store_api_returns(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    store.put_partner(Partner(id="cuni", name="Charles University"))
    store.create_run("r1", SPEC, "cuni")
    store.create_run("r2", SPEC, "cuni")
    store.update_run("r1", state=RunState.FAILED, started=T0, ended=T0 + timedelta(hours=2),
                     reason="stage train failed", mlflow_run_id="m1")
    store.add_jobs([
        {"run_id": "r1", "stage": "train", "attempt": 1, "site": "lumi",
         "job_name": "hpcfleet-r1-train-1", "scheduler_id": "4711", "state": JobState.FAILED,
         "exit_code": 137, "submitted": T0, "started": T0, "ended": T0 + timedelta(hours=1),
         "gpu_hours": 8.0, "reason": "oom-kill"},
        {"run_id": "r1", "stage": "train", "attempt": 2, "site": "lumi",
         "job_name": "hpcfleet-r1-train-2", "scheduler_id": None,
         "state": JobState.SUBMITTING},
    ])
    bulk_jobs = load_jobs(store)
    record_jobs = jobs_frame(store.all_jobs())[bulk_jobs.columns]
    pd.testing.assert_frame_equal(bulk_jobs.astype(object).where(bulk_jobs.notna(), None),
                                  record_jobs.astype(object).where(record_jobs.notna(), None))
    bulk_runs = read_runs(store)
    record_runs = run_records_frame(store.list_runs())
    pd.testing.assert_frame_equal(bulk_runs.astype(object).where(bulk_runs.notna(), None),
                                  record_runs.astype(object).where(record_runs.notna(), None))
    store.close()


class Paged(list[Any]):
    token: str | None = None


class FakeSearch:
    def __init__(self) -> None:
        self.runs: list[FakeRun] = []
        self.filters: list[str] = []

    def search_experiments(self) -> list[Any]:
        return [type("Experiment", (), {"experiment_id": "1", "name": "tiny-llm"})()]

    def search_runs(self, ids: list[str], filter_string: str, **kwargs: Any) -> Paged:
        self.filters.append(filter_string)
        return Paged(self.runs)


def test_the_parent_index_reads_everything_once_then_only_what_changed() -> None:
    clock = [1000.0]
    client = FakeSearch()
    client.runs = [parent("r1", 1, {"accuracy/fi": 0.5})]
    index = ParentRunIndex(clock=lambda: clock[0])
    runs, experiments = index.sync(client)  # type: ignore[arg-type]
    assert [r.run_id for r in runs] == ["m-r1"] and experiments == {"1": "tiny-llm"}
    assert client.filters == [PARENT_FILTER]

    clock[0] += 30
    client.filters.clear()
    client.runs = [parent("r2", 2, {"accuracy/fi": 0.7})]  # only the changed run comes back
    runs, _ = index.sync(client)  # type: ignore[arg-type]
    assert sorted(r.run_id for r in runs) == ["m-r1", "m-r2"]
    since = 1000 * 1000 - CLOCK_SLACK_MS
    assert client.filters == [f"{PARENT_FILTER} AND attributes.end_time >= {since}",
                              f"{PARENT_FILTER} AND attributes.status = 'RUNNING'"]

    clock[0] += FULL_SYNC_SECONDS
    client.filters.clear()
    runs, _ = index.sync(client)  # type: ignore[arg-type]
    assert [r.run_id for r in runs] == ["m-r2"]  # a full read drops runs deleted since
    assert client.filters == [PARENT_FILTER]


# -- user text stays text ------------------------------------------------------------------

MARKDOWN_ALPHABET = st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(
    ["\n", "\r", "\t", "é", "→", "\u00a0"])
COMMONMARK = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def inline_children(source: str) -> list[Token]:
    """The inline tokens of a one-paragraph document (fails on anything else)."""
    blocks = COMMONMARK.parse(source)
    assert [t.type for t in blocks] == ["paragraph_open", "inline", "paragraph_close"], blocks
    return list(blocks[1].children or [])


# What GFM turns into links in text, after escapes are resolved (as mdast's transform).
AUTOLINK = re.compile(r"(?i)(https?://|www\.)|[-.\w+]+@[-\w]+\.")


@given(st.text(MARKDOWN_ALPHABET, min_size=1).filter(lambda s: s.strip()))
def test_plain_renders_any_text_as_exactly_that_text(value: str) -> None:
    children = inline_children("x " + plain(value))
    assert {c.type for c in children} == {"text"}
    shown = "".join(c.content for c in children)
    assert not AUTOLINK.search(shown)
    assert shown.replace(WORD_JOINER, "") == "x " + one_line(value).strip()


@given(st.text(MARKDOWN_ALPHABET, min_size=1).filter(lambda s: s.strip()))
def test_code_keeps_any_text_inside_one_code_span(value: str) -> None:
    children = inline_children("x " + code(value))
    assert [c.type for c in children] == ["text", "code_inline"]
    assert children[1].content == one_line(value)


def test_plain_escapes_what_would_become_links_images_html_and_directives() -> None:
    beacon = "![x](http://evil/b.png) [sign in](http://evil/) <img src=x onerror=f()>"
    assert plain(beacon).replace(WORD_JOINER, "") == (
        r"\!\[x\]\(http\:\/\/evil\/b\.png\) \[sign in\]\(http\:\/\/evil\/\)"
        r" \<img src\=x onerror\=f\(\)\>")
    assert plain(":red[x] $y$\n# heading") == r"\:red\[x\] \$y\$ \# heading"
    assert plain("www.evil.example a@evil.example") == (
        "www\u2060\\.evil\\.example a\u2060\\@evil\\.example")
    assert code("a ``b`` c") == "```a ``b`` c```"
    assert chart_text("<a href='http://evil'>x</a> & co") == (
        "&lt;a href='http://evil'&gt;x&lt;/a&gt; &amp; co")
