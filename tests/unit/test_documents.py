"""The documents of INTERFACE.md: what they accept, and what their errors say."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.common import format_walltime, parse_memory, parse_walltime
from registry.errors import DocumentError
from registry.loading import load_document, parse_yaml, validate_document
from registry.milestone import Milestone
from registry.partner import Partner
from registry.runspec import RunSpec
from registry.site import Site

LUMI = """
name: lumi
partner: csc
description: LUMI-G, CSC
ssh:
  host: lumi.csc.fi
  port: 22
  user: jdoe
  identity_file: ~/.ssh/id_ed25519_lumi
  proxy_jump: [bastion.example.org]
  host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBRyHIWgtL0lC5BIe/AFzQZmHxZrGgsCk0F6yaVOY6X1"
scheduler: slurm
slurm:
  account: project_465000001
  qos: null
  partitions:
    - {name: small-g, gpus_per_node: 8, gpu_type: mi250x, max_time: "3-00:00:00"}
    - {name: small, gpus_per_node: 0, max_time: "3-00:00:00", default: true}
environment:
  workdir: /scratch/project_465000001/hpcfleet
  modules: [LUMI/24.03, partition/G]
  env: {HF_HOME: /scratch/project_465000001/hf}
  container: {runtime: apptainer, image: /appl/local/containers/pytorch.sif}
storage:
  s3: {endpoint: https://lumidata.eu, bucket: oellm, profile: lumi-o}
allocation: {gpu_hours: 500000, start: 2026-01-01, end: 2026-12-31}
shared_with: ["*"]
labels: {country: FI, interconnect: slingshot}
policy: {max_queued_jobs: 200, min_poll_interval: 30s}
"""

RUN = """
name: tiny-llm-v1
experiment: tiny-llm
params: {seed: 1}
stages:
  - name: prepare
    kind: data
    site: site-a
    resources: {cpus: 1, mem: 1G, time: "00:10:00"}
    command: [python3, prepare.py, --seed, "{params.seed}"]
    outputs: [data/]
  - name: train
    kind: train
    needs: [prepare]
    site: {require: {min_gpus: 1}}
    resources: {gpus: 1, time: "01:00:00"}
    command: [python3, train.py]
    retries: 2
    resumable: true
    outputs: [checkpoints/]
  - name: evaluate
    kind: eval
    needs: [train]
    site: {any_of: [site-a, site-b]}
    array: {language: [bg, cs, da, de, el, en, es, et, fi, fr, ga, hr, hu, it, lt, lv, mt, nl, pl, pt, ro, sk, sl, sv]}
    command: [python3, evaluate.py, --lang, "{language}"]
"""

MILESTONE = """
id: m1-first-release
title: First model release
due: 2026-06-30
partners: ["*"]
criteria:
  - {stage_completed: {run: tiny-llm-v1, stage: train}}
  - {metric: {experiment: tiny-llm, key: accuracy, min: 0.6, over: language, all_of: [bg, cs, da]}}
"""


def doc(text: str, model: type, source: str = "doc.yaml"):  # type: ignore[no-untyped-def]
    return validate_document(parse_yaml(text, source), model, source=source)


def error_of(text: str, model: type, source: str = "doc.yaml") -> str:
    with pytest.raises(DocumentError) as info:
        doc(text, model, source)
    return str(info.value)


def test_interface_examples_are_accepted() -> None:
    site = doc(LUMI, Site)
    assert site.slurm is not None and site.slurm.default_partition.name == "small"
    assert site.slurm.partitions[0].max_time == 3 * 86400
    assert site.storage and site.storage.s3 and site.storage.s3.profile == "lumi-o"
    spec = doc(RUN, RunSpec)
    assert spec.order == ["prepare", "train", "evaluate"]
    assert spec.stage("evaluate").array_values[-1] == "sv"
    assert spec.stage("prepare").resources.mem == 1024
    assert spec.experiment_name == "tiny-llm"
    milestone = doc(MILESTONE, Milestone)
    assert milestone.criteria[1].metric and milestone.criteria[1].metric.all_of == [
        "bg",
        "cs",
        "da",
    ]
    assert doc("id: cuni\nname: Charles University\ncountry: CZ\n", Partner).country == "CZ"


def test_site_round_trips_through_json() -> None:
    site = doc(LUMI, Site)
    assert Site.model_validate(site.model_dump(mode="json")) == site
    spec = doc(RUN, RunSpec)
    again = RunSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.order == spec.order


def test_unknown_key_names_the_field_and_the_valid_keys() -> None:
    message = error_of(LUMI.replace("  port: 22", "  prot: 22"), Site, "lumi.yaml")
    assert message.startswith("lumi.yaml: ssh.prot: unknown key 'prot'")
    assert "port" in message and "host_key" in message


def test_wrong_type_names_field_and_value() -> None:
    message = error_of(RUN.replace("gpus: 1,", "gpus: two,"), RunSpec, "runs/v1.yaml")
    assert message.startswith("runs/v1.yaml: stages[1].resources.gpus:")
    assert "'two'" in message


def test_dangling_needs() -> None:
    message = error_of(RUN.replace("needs: [train]", "needs: [trian]"), RunSpec)
    assert "stages[2].needs[0]: unknown stage 'trian'" in message
    assert "prepare, train, evaluate" in message


def test_cyclic_needs() -> None:
    text = RUN.replace("    kind: data\n", "    kind: data\n    needs: [evaluate]\n")
    message = error_of(text, RunSpec)
    assert "cycle" in message and "prepare" in message and "evaluate" in message


def test_duplicate_stage_names() -> None:
    message = error_of(RUN.replace("name: train", "name: prepare"), RunSpec)
    assert "stages[1].name: duplicate stage name 'prepare'" in message


def test_unknown_placeholder_is_refused() -> None:
    message = error_of(RUN.replace('"{language}"', '"{lang}"'), RunSpec)
    assert "stages[2].command[3]: unknown placeholder {lang}" in message
    assert "{language}" in message


def test_command_must_be_a_list() -> None:
    message = error_of(
        RUN.replace("command: [python3, train.py]", "command: python3 train.py"), RunSpec
    )
    assert "stages[1].command" in message and "list" in message


def test_site_selector_needs_exactly_one_form() -> None:
    message = error_of(
        RUN.replace("{any_of: [site-a, site-b]}", "{any_of: [site-a], require: {min_gpus: 1}}"),
        RunSpec,
    )
    assert "stages[2].site" in message and "exactly one" in message


def test_outputs_must_stay_inside_the_outputs_dir() -> None:
    assert "stages[0].outputs" in error_of(
        RUN.replace("outputs: [data/]", "outputs: [../x]"), RunSpec
    )
    assert "stages[0].outputs" in error_of(
        RUN.replace("outputs: [data/]", "outputs: [/etc]"), RunSpec
    )


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages: [\n  - name: a\n")
    with pytest.raises(DocumentError) as info:
        load_document(path, RunSpec)
    assert str(info.value).startswith(f"{path}: line ")
    assert "invalid YAML" in str(info.value)


def test_duplicate_yaml_keys_are_refused() -> None:
    message = error_of("id: a\nname: x\nname: y\n", Partner, "p.yaml")
    assert "duplicate key 'name'" in message and "line 3" in message


def test_clock_times_stay_strings_not_base_60_numbers() -> None:
    # YAML 1.1 reads an unquoted 01:00:00 as 3600; a time limit of 3600 minutes would follow.
    spec = doc(RUN.replace('time: "01:00:00"', "time: 01:00:00"), RunSpec)
    assert spec.stage("train").resources.time == 3600


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        load_document(tmp_path / "absent.yaml", Site)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(DocumentError, match="expected a mapping"):
        load_document(tmp_path / "empty.yaml", Site)


def test_site_consistency_rules() -> None:
    assert "needs a 'slurm:' section" in error_of("name: s\npartner: p\nscheduler: slurm\n", Site)
    assert "takes no 'ssh:'" in error_of(
        "name: s\npartner: p\nscheduler: local\nssh: {host: h}\n", Site
    )
    assert "end (2026-01-01) must come after start" in error_of(
        "name: s\npartner: p\nscheduler: local\n"
        "allocation: {gpu_hours: 1, start: 2026-02-01, end: 2026-01-01}\n",
        Site,
    )
    assert "public host key line" in error_of(
        "name: s\npartner: p\nscheduler: slurm\nslurm: {partitions: [{name: a}]}\n"
        "ssh: {host: h, host_key: 'AAAA'}\n",
        Site,
    )
    assert "not a valid name" in error_of("name: Bad Name\npartner: p\nscheduler: local\n", Site)


def test_private_key_material_is_not_accepted_as_host_key() -> None:
    header = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"  # split: no key-like line in the repo
    message = error_of(
        "name: s\npartner: p\nscheduler: slurm\nslurm: {partitions: [{name: a}]}\n"
        f"ssh: {{host: h, host_key: '{header} abc'}}\n",
        Site,
    )
    assert "ssh.host_key" in message
    assert "abc" not in message  # the offending value is not echoed


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 600),
        ("10:30", 630),
        ("01:00:00", 3600),
        ("2-00", 172800),
        ("1-02:03", 93780),
        ("3-00:00:00", 259200),
        (90, 5400),
    ],
)
def test_slurm_time_formats(text: object, seconds: int) -> None:
    assert parse_walltime(text) == seconds


def test_walltime_round_trip_and_errors() -> None:
    assert format_walltime(93784) == "1-02:03:04"
    assert format_walltime(600) == "00:10:00"
    for bad in ("1:61:00", "abc", "0", "-5"):
        with pytest.raises(ValueError):
            parse_walltime(bad)


def test_memory_units() -> None:
    assert parse_memory("512M") == 512
    assert parse_memory("4G") == 4096
    assert parse_memory("2000") == 2000
    with pytest.raises(ValueError):
        parse_memory("lots")


# -- hostile YAML: refused with a DocumentError naming the file (exit 2) -------------------


def test_deep_nesting_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(DocumentError, match="nested deeper than 64 levels") as info:
        load_document(path, RunSpec)
    assert str(info.value).startswith(f"{path}: line 1: ")


def test_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):  # 9^9 values once expanded: "billion laughs"
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    message = error_of("\n".join(lines) + "\n", RunSpec, "bomb.yaml")
    assert message.startswith("bomb.yaml: line ") and "expands to more than" in message


def test_aliases_that_point_into_themselves_are_refused() -> None:
    assert "refers to the node that contains it" in error_of("a: &a [*a]\n", RunSpec)


def test_ordinary_aliases_still_work() -> None:
    data = parse_yaml("base: &r {cpus: 2}\nother: *r\n", "ok.yaml")
    assert data == {"base": {"cpus": 2}, "other": {"cpus": 2}}


def test_huge_documents_and_numbers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\ndescription: '" + "x" * (11 * 1024 * 1024) + "'\n")
    with pytest.raises(DocumentError, match="larger than 10 MiB") as info:
        load_document(path, RunSpec)
    assert str(info.value).startswith(str(path))
    assert "invalid YAML" in error_of("seed: " + "1" * 5000 + "\n", RunSpec, "n.yaml")


def test_chain_is_a_bounded_count_of_segments_of_a_resumable_stage() -> None:
    chained = doc(RUN.replace("resumable: true", "resumable: true\n    chain: 3"), RunSpec)
    assert chained.stage("train").chain == 3
    for value, words in [("0", "greater than or equal to 1"), ("51", "less than or equal to 50")]:
        message = error_of(
            RUN.replace("resumable: true", f"resumable: true\n    chain: {value}"), RunSpec
        )
        assert "stages[1].chain" in message and words in message


def test_chain_says_what_it_needs() -> None:
    message = error_of(RUN.replace("resumable: true", "chain: 2"), RunSpec)
    assert "stages[1]" in message and "set resumable: true" in message
    message = error_of(RUN.replace("resumable: true", "resumable: true\n    chain: 9"), RunSpec)
    assert "chain: 9 segments exceed max_resumes (5)" in message
    raised = RUN.replace("resumable: true", "resumable: true\n    max_resumes: 9\n    chain: 9")
    assert doc(raised, RunSpec).stage("train").chain == 9
    arrayed = RUN.replace(
        "command: [python3, evaluate.py",
        "resumable: true\n    chain: 2\n    command: [python3, evaluate.py",
    )
    assert "only a stage without an array can be chained" in error_of(arrayed, RunSpec)
