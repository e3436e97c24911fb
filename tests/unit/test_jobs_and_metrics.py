"""Job requests built from stages, command placeholders, metric lines."""

from __future__ import annotations

from flows.commands import substitute
from flows.jobs import build_request, job_name
from flows.layout import StageLayout
from flows.metrics import parse_metrics
from registry.runspec import RunSpec
from tests.helpers import local_site

SPEC = RunSpec.model_validate(
    {
        "name": "r",
        "params": {"seed": 7, "flag": True},
        "stages": [
            {
                "name": "eval",
                "site": "site-a",
                "array": {"language": ["fi", "sv"]},
                "command": [
                    "python3",
                    "e.py",
                    "--lang",
                    "{language}",
                    "--seed={params.seed}",
                    "{{literal}}",
                    "{params.flag}",
                ],
                "env": {"A": "1"},
                "resources": {"gpus": 1, "mem": "2G", "time": "00:30:00"},
            }
        ],
    }
)


def test_substitute_escapes_braces() -> None:
    assert substitute("{{x}} {a}", {"a": "1"}) == "{x} 1"


def test_request_for_an_array_share() -> None:
    layout = StageLayout("/w", "abcd", "eval")
    request = build_request(
        SPEC,
        SPEC.stage("eval"),
        local_site("site-a", "cuni", environment={"env": {"B": "2"}}),
        run_id="abcd",
        attempt=2,
        layout=layout,
        partition=None,
        share=[(1, "sv")],
    )
    assert request.name == job_name("abcd", "eval", 2) == "hpcfleet-abcd-eval-2"
    [task] = request.tasks
    assert task.argv == ("python3", "e.py", "--lang", "sv", "--seed=7", "{literal}", "true")
    assert task.env["HPCFLEET_ARRAY_VALUE"] == "sv"
    assert task.env["HPCFLEET_METRICS"] == "/w/runs/abcd/eval/attempt-2/metrics/1.jsonl"
    assert request.env["HPCFLEET_INPUTS"] == "/w/runs/abcd/eval/inputs"
    assert request.env["HPCFLEET_OUTPUTS"] == "/w/runs/abcd/eval/outputs"
    # The site's env is rendered by its scheduler, where its $VAR expand (test_launcher.py).
    assert request.env["A"] == "1" and "B" not in request.env
    assert request.workdir == "/w/runs/abcd/eval/work"
    assert (request.resources.gpus, request.resources.mem_mb, request.resources.time_seconds) == (
        1,
        2048,
        1800,
    )
    assert request.is_array


def test_metric_lines_good_and_bad() -> None:
    parsed = parse_metrics(
        '{"key": "loss", "value": 2.5, "step": 1}\n'
        '{"key": "loss", "value": 1.5, "step": 2}\n'
        "not json\n"
        '{"key": "acc", "value": "high"}\n'
        '{"key": "acc", "value": NaN}\n'
        '{"key": "acc", "value": 0.9}\n'
    )
    assert parsed.last_values() == {"loss": 1.5, "acc": 0.9}
    assert len(parsed.rejected) == 3
    assert parsed.rejected[0].startswith("line 3: not JSON")
