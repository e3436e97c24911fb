"""`checkpoints:` and `for_each: checkpoint` in a run spec: what they accept, what their
errors say, and what a for_each job is given."""

from __future__ import annotations

import pytest

from flows.jobs import build_request
from flows.layout import StageLayout
from registry.errors import DocumentError
from registry.loading import parse_yaml, validate_document
from registry.runspec import RunSpec
from sites.scheduler import JobRequest
from tests.helpers import local_site

SPEC = """
name: ckpt-run
stages:
  - name: train
    kind: train
    site: site-a
    command: [python3, train.py]
    checkpoints: {path: "checkpoints/iter_*", ready: model.safetensors}
  - name: convert
    site: site-a
    needs: [train]
    for_each: checkpoint
    command: [python3, convert.py, "{checkpoint}"]
  - name: evaluate
    kind: eval
    site: site-b
    needs: [convert]
    for_each: checkpoint
    array: {language: [fi, cs], task: [belebele, flores], n_shot: [0, 5]}
    command: [python3, eval.py, "{checkpoint}", "{language}", "{task}", "{n_shot}"]
"""


def spec_of(text: str) -> RunSpec:
    return validate_document(parse_yaml(text, "spec.yaml"), RunSpec, source="spec.yaml")


def error_of(text: str) -> str:
    with pytest.raises(DocumentError) as caught:
        spec_of(text)
    return str(caught.value)


def test_a_chain_of_for_each_stages_is_accepted_and_finds_its_origin() -> None:
    spec = spec_of(SPEC)
    train = spec.stage("train")
    assert train.checkpoints is not None
    assert (train.checkpoints.parent, train.checkpoints.pattern) == ("checkpoints", "iter_*")
    assert spec.checkpoint_source("convert") == "train"
    assert spec.checkpoint_source("evaluate") == "convert"
    assert spec.checkpoint_origin("evaluate") == "train"
    assert spec.checkpoint_source("train") is None
    # and it reads back what it stored
    assert RunSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_for_each_without_a_checkpoint_stage_is_refused_naming_the_field() -> None:
    text = SPEC.replace(
        '    checkpoints: {path: "checkpoints/iter_*", ready: model.safetensors}\n', ""
    )
    message = error_of(text)
    assert "stages[1].for_each" in message
    assert "exactly one stage" in message and "none of its needs does" in message


def test_for_each_with_two_checkpoint_stages_is_refused() -> None:
    text = SPEC.replace("needs: [convert]", "needs: [convert, train]")
    message = error_of(text)
    assert "stages[2].for_each" in message and "it needs convert, train" in message


def test_a_for_each_stage_cannot_declare_checkpoints() -> None:
    text = SPEC.replace(
        "    for_each: checkpoint\n    command: [python3, convert.py",
        '    for_each: checkpoint\n    checkpoints: {path: "c/*", ready: done}\n'
        "    command: [python3, convert.py",
    )
    assert "cannot declare checkpoints itself" in error_of(text)


def test_only_checkpoint_is_a_for_each_value() -> None:
    message = error_of(
        SPEC.replace(
            "for_each: checkpoint\n    command: [python3, convert",
            "for_each: cell\n    command: [python3, convert",
        )
    )
    assert "for_each" in message and "'checkpoint'" in message


def test_checkpoint_placeholder_only_in_for_each_stages() -> None:
    text = SPEC.replace("[python3, train.py]", '[python3, train.py, "{checkpoint}"]')
    message = error_of(text)
    assert "stages[0].command[2]: unknown placeholder {checkpoint}" in message


@pytest.mark.parametrize(
    "path",
    [
        "/abs/iter_*",
        "../iter_*",
        "checkpoints/../../x*",
        "ck*/iter_*",
        "a b/*",
        "c/$(id)*",
        "c/iter_*\nx",
        "./iter_*",
        "",
        "-x/*",
        "c/iter+*",
        "c/.hidden*",
    ],
)
def test_a_glob_that_could_leave_the_outputs_is_refused(path: str) -> None:
    text = SPEC.replace('"checkpoints/iter_*"', repr(path).replace("'", '"'))
    message = error_of(text)
    assert "checkpoints.path" in message and "relative to the stage's outputs" in message


@pytest.mark.parametrize("ready", ["a/b", "..", "", "x y", "-rf", "$(id)"])
def test_a_ready_file_is_one_plain_name(ready: str) -> None:
    message = error_of(SPEC.replace("ready: model.safetensors", f'ready: "{ready}"'))
    assert "checkpoints.ready" in message and "the file written last" in message


def test_ready_files_and_globs_that_are_fine() -> None:
    text = SPEC.replace('"checkpoints/iter_*"', '"step-??.ckpt"').replace(
        "model.safetensors", "DONE"
    )
    checkpoints = spec_of(text).stage("train").checkpoints
    assert checkpoints is not None and (checkpoints.parent, checkpoints.pattern) == (
        "",
        "step-??.ckpt",
    )


def test_a_for_each_job_sees_its_checkpoint_and_writes_its_own_outputs() -> None:
    run = spec_of(SPEC)
    stage = run.stage("evaluate")
    layout = StageLayout("/w", "r1", "evaluate")

    def request(checkpoint: tuple[str, str] | None) -> JobRequest:
        return build_request(
            run,
            stage,
            local_site("site-b", "cuni"),
            run_id="r1",
            attempt=4,
            layout=layout,
            partition=None,
            share=[(3, stage.array_values[3])],
            checkpoint=checkpoint,
        )

    ready = request(("iter_200", "/w/runs/r1/evaluate/inputs/convert/iter_200"))
    [task] = ready.tasks
    assert task.argv == ("python3", "eval.py", "iter_200", "fi", "flores", "5")
    assert ready.env["HPCFLEET_CHECKPOINT"] == "/w/runs/r1/evaluate/inputs/convert/iter_200"
    assert ready.env["HPCFLEET_OUTPUTS"] == "/w/runs/r1/evaluate/outputs/iter_200"
    # Rendered before any checkpoint exists (dry run, provenance): the placeholder stays.
    [shown] = request(None).tasks
    assert shown.argv[2] == "{checkpoint}"
