"""Every dashboard page rendered by Streamlit's AppTest against a filled store and MLflow,
checked for what a steering-board member would see.

The data is `tests.dashboard_sample` (three partners, four sites, eight runs, three
milestones), written once per module into a fresh HPCFLEET_HOME.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.data.languages import EU_LANGUAGES, language_label
from registry.store import Store
from tests import dashboard_sample as sample

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
RENDER_TIMEOUT = 60.0  # the first page opens MLflow's store (several seconds cold)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A filled HPCFLEET_HOME, set in the environment the pages read."""
    path = tmp_path_factory.mktemp("home")
    sample.fill_home(path)
    with pytest.MonkeyPatch.context() as env:
        for name in ("HPCFLEET_DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL",
                     "PREFECT_UI_URL", "PREFECT_API_URL", "HPCFLEET_DASHBOARD_REFRESH"):
            env.delenv(name, raising=False)
        env.setenv("HPCFLEET_HOME", str(path))
        yield path


def render(view: str, **query: str) -> AppTest:
    at = AppTest.from_string(f"from dashboard.views import {view}\n{view}.main()\n",
                             default_timeout=RENDER_TIMEOUT)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def unescaped(markdown: str) -> str:
    """Markdown source with its backslash escapes resolved (user text is escaped)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def texts(at: AppTest) -> str:
    """Everything a page writes as text (markdown, captions, code, tables, labels)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "code", "text",
                 "info", "warning", "error", "success"):
        parts.extend(unescaped(str(element.value)) for element in getattr(at, kind))
    parts.extend(frame.value.to_string() for frame in at.dataframe)
    parts.extend(str(metric.label) + " " + str(metric.value) for metric in at.metric)
    parts.extend(str(p.proto.text) for p in at.get("progress"))
    return "\n".join(parts)


def table(at: AppTest, index: int = 0) -> pd.DataFrame:
    value = at.dataframe[index].value
    assert isinstance(value, pd.DataFrame)
    return value


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array: Any) -> list[Any]:
    """A plotly array as a list (plotly writes numeric arrays as base64 `bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return [float(v) for v in np.frombuffer(base64.b64decode(array["bdata"]),
                                                dtype=array["dtype"])]
    return list(array)


def run_with_state(home: Path, state: str) -> str:
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    try:
        return next(r.run_id for r in store.list_runs() if r.state.value == state)
    finally:
        store.close()


def test_the_app_opens_on_the_overview(home: Path) -> None:
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=RENDER_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Consortium overview"


def test_overview_shows_milestones_with_progress_due_dates_and_risk(
    home: Path,
) -> None:
    at = render("overview")
    shown = texts(at)
    for title in ("First model release", "Multilingual parity", "Deduplicated corpus v2"):
        assert title in shown
    progress = sorted((p.proto.value, p.proto.text) for p in at.get("progress"))
    assert progress[0] == (0, "0% · 0 of 1 criteria met")  # the overdue corpus milestone
    assert 0 < progress[1][0] < 100 and progress[1][1].endswith("0 of 1 criteria met")
    assert progress[2] == (100, "100% · 2 of 2 criteria met")
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert any("First model release" in b and "met" in b for b in badges)
    assert any("Multilingual parity" in b and "at risk" in b for b in badges)
    assert any("Deduplicated corpus v2" in b and "overdue" in b for b in badges)
    assert "20 days left" in shown and "5 days overdue" in shown
    assert "no run of data-v2 yet" in shown  # why the overdue milestone is not met


def test_overview_shows_consortium_totals(home: Path) -> None:
    at = render("overview")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "8"
    assert metrics["Languages covered"] == "24 / 24"
    assert metrics["Sites healthy"] == "1 / 4"  # only lumi's latest probe passed
    assert float(metrics["GPU-hours used"].replace(",", "")) > 0


def test_sites_show_owner_health_queue_key_and_allocation(home: Path) -> None:
    at = render("sites")
    rows = table(at).set_index("site")
    assert list(rows.index) == ["cuni-local", "karolina", "lumi", "marenostrum"]
    assert rows.loc["lumi", "owner"] == "CSC - IT Center for Science"
    assert rows.loc["lumi", "health"].endswith("ok")
    assert rows.loc["karolina", "health"].endswith("unreachable")
    assert rows.loc["marenostrum", "health"].endswith("problems")
    assert rows.loc["cuni-local", "health"].endswith("never checked")
    assert rows.loc["lumi", "queue depth"] == 42
    assert list(rows["host key pinned"]) == ["n/a (local)", "no", "yes", "yes"]
    assert rows.loc["lumi", "GPU-h granted"] == 900
    assert rows.loc["lumi", "GPU-h used"] > 0
    subheaders = [unescaped(s.value) for s in at.subheader]
    assert "lumi · CSC - IT Center for Science" in subheaders
    burn = figures(at)
    assert len(burn) == 3  # one burn chart per site with an allocation
    assert any(trace["name"].startswith("forecast") for trace in burn[0]["data"])


def test_sites_never_render_secrets(home: Path) -> None:
    shown = texts(render("sites"))
    assert sample.SECRET_ENV_VALUE not in shown
    assert "HF_TOKEN" in shown  # the variable's name is fine, its value never
    assert "~/.ssh/id_ed25519_lumi" in shown  # an identity file appears as its path
    assert sample.SAMPLE_HOST_KEY.split()[1] not in shown  # "pinned", not the key itself


def test_runs_table_filters_by_state_and_shows_a_timeline(home: Path) -> None:
    at = render("runs")
    states = {s.split()[-1] for s in table(at)["state"]}
    assert states == {"COMPLETED", "FAILED", "CANCELLED", "RUNNING", "PENDING"}
    assert len(table(at)) == 8
    at.multiselect(key="runs_filter_state").select("FAILED").run()
    assert not at.exception
    failed = table(at)
    assert len(failed) == 1 and failed["state"].iloc[0].endswith("FAILED")
    assert "1 of 8 runs" in texts(at)
    gantt = figures(at)[0]
    lanes = {y for trace in gantt["data"] for y in trace["y"]}
    assert lanes == {"marenostrum", "lumi"}  # prepare ran on one site, train on the other


def test_runs_filter_by_site_matches_any_site_of_a_run(home: Path) -> None:
    at = render("runs")
    at.multiselect(key="runs_filter_site").select("karolina").run()
    shown = table(at)
    assert len(shown) > 0
    assert all("karolina" in sites for sites in shown["sites"])


def test_run_detail_shows_jobs_exit_reasons_logs_and_links(home: Path) -> None:
    run_id = run_with_state(home, "FAILED")
    at = render("run_detail", run=run_id)
    shown = texts(at)
    assert f"`{run_id}`" in shown and "FAILED" in shown
    jobs = table(at, 1)
    train = jobs[jobs["stage"] == "train"]
    assert list(train["attempt"]) == [1, 2]
    assert all(s.endswith("OUT_OF_MEMORY") for s in train["state"])
    assert list(train["exit code"]) == [137, 137]
    assert all(len(sid) >= 7 for sid in train["scheduler id"])
    assert "oom-kill" in train["exit reason"].iloc[0]
    assert any("oom-kill" in code.value for code in at.code)  # failed jobs' logs first
    links = {b.proto.label: b.proto.url for b in at.get("link_button")}
    assert links["MLflow run"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert links["Prefect flow run"].startswith("http://127.0.0.1:4200/runs/flow-run/")


def test_run_detail_charts_results_and_loss_curves(home: Path) -> None:
    run_id = run_with_state(home, "COMPLETED")
    at = render("run_detail", run=run_id)
    stages = table(at, 0)
    assert list(stages["stage"]) == ["prepare", "train", "evaluate"]
    assert list(stages["tasks"]) == ["1/1", "1/1", "24/24"]
    charts = figures(at)
    per_language = [f["data"][0] for f in charts
                    if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "accuracy"]
    assert per_language and set(values(per_language[0]["x"])) <= set(EU_LANGUAGES)
    curves = [f["data"][0] for f in charts
              if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "loss"]
    assert curves and len(values(curves[0]["x"])) == sample.Scale().history_steps


def test_run_detail_links_follow_the_configured_ui_urls(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example.org/")
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example.org")
    at = render("run_detail", run=run_with_state(home, "COMPLETED"))
    links = {b.proto.label: b.proto.url for b in at.get("link_button")}
    assert links["MLflow run"].startswith("https://mlflow.example.org/#/experiments/")
    assert links["Prefect flow run"].startswith("https://prefect.example.org/runs/flow-run/")


def test_languages_heatmap_has_the_24_languages_in_order_with_gaps(
    home: Path,
) -> None:
    at = render("languages")
    coverage = table(at)
    assert list(coverage["language"]) == list(EU_LANGUAGES)
    heatmap = figures(at)[0]["data"][0]
    assert heatmap["y"] == [language_label(code) for code in EU_LANGUAGES]
    assert heatmap["y"][0] == "bg Bulgarian" and heatmap["y"][-1] == "sv Swedish"
    cells = values(heatmap["z"])
    assert len(heatmap["x"]) >= 2
    assert len(cells) == 24 * len(heatmap["x"])  # every language, in every run shown
    assert any(math.isnan(value) for value in cells)  # a missing result stays a gap
    assert "gap(s) shown in grey" in texts(at)


def test_languages_metric_can_be_switched(home: Path) -> None:
    at = render("languages")
    assert at.selectbox(key="languages_metric").value == "accuracy"
    at.selectbox(key="languages_metric").select("nll").run()
    assert not at.exception
    assert figures(at)[0]["data"][0]["colorbar"]["title"]["text"] == "nll"


def test_pages_still_show_the_registry_when_mlflow_is_down(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    at = render("overview")
    assert any("MLflow" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Runs"] == "8"
    assert "Deduplicated corpus v2" in texts(at)
    detail = render("run_detail", run=run_with_state(home, "COMPLETED"))
    assert any("metrics and logs are unavailable" in w.value for w in detail.warning)
    assert len(table(detail, 1)) > 0  # jobs still come from the registry


def test_evaluations_heatmap_shows_checkpoints_by_language_with_gaps(home: Path) -> None:
    at = render("evaluations")
    shown = texts(at)
    # coverage: the run's own summary text (mt's jobs completed without a result)
    assert re.search(
        r"\*\*evaluate\*\* — \d+/24 cells, \d+ missing \(1 failed, \d+ running\)", shown
    ), shown
    coverage, heatmap = figures(at)[:2]
    parts = {trace["name"] for trace in coverage["data"]}
    assert {"with results", "failed", "running"} <= parts
    trace = heatmap["data"][0]
    assert trace["x"] == list(sample.CHECKPOINTS)  # ordered by step
    assert trace["y"] == [language_label(code) for code in EU_LANGUAGES]
    rows = dict(zip(trace["y"], _rows(values(trace["z"]), len(trace["x"])), strict=True))
    assert all(math.isnan(v) for v in rows[language_label(sample.NO_RESULT_LANGUAGE)])
    late = rows[language_label(sample.LATE_LANGUAGE)]
    assert not math.isnan(late[0]) and math.isnan(late[-1])  # grey: newest not in yet
    assert at.selectbox(key="evaluations_evaluate_task").options == list(sample.RESULT_TASKS)
    assert at.selectbox(key="evaluations_evaluate_n_shot").options == list(sample.RESULT_SHOTS)
    assert "planned cell(s) without a result shown in grey" in shown
    # The training stage's checkpoints from the store, in the order they appeared.
    timeline = figures(at)[2]
    assert timeline["data"][0]["text"] == list(sample.CHECKPOINTS)


def test_evaluations_pickers_change_the_picture(home: Path) -> None:
    at = render("evaluations")
    before = values(figures(at)[1]["data"][0]["z"])
    at.selectbox(key="evaluations_evaluate_task").select("flores").run()
    assert not at.exception
    after = values(figures(at)[1]["data"][0]["z"])
    assert len(after) == len(before) and after != before


def _rows(cells: list[float], width: int) -> list[list[float]]:
    return [cells[i : i + width] for i in range(0, len(cells), width)]


TIMELINE_APP = """
from datetime import UTC, datetime, timedelta
from dashboard.views.evaluations import timeline_section
t0 = datetime(2026, 12, 1, tzinfo=UTC)
rows = [{"stage": "train", "name": f"iter_{n:06d}", "found": t0 + timedelta(minutes=n // 100),
         "sites": ["karolina"]} for n in (1000, 2000, 3000)]
timeline_section(rows[:COUNT])
"""


def test_the_checkpoint_timeline_shows_only_when_there_are_checkpoints() -> None:
    empty = AppTest.from_string(TIMELINE_APP.replace("COUNT", "0"))
    empty.run()
    assert not empty.exception and not figures(empty) and not empty.subheader
    shown = AppTest.from_string(TIMELINE_APP.replace("COUNT", "3"))
    shown.run()
    assert not shown.exception
    [chart] = figures(shown)
    assert chart["data"][0]["text"] == ["iter_001000", "iter_002000", "iter_003000"]
    assert list(table(shown)["step"]) == [1000, 2000, 3000]
