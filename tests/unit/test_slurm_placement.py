"""Placement on real sites' partitions and QOS: never where SLURM would refuse the job
or hold it forever, and always with a reason that says so."""

from __future__ import annotations

from typing import Any

import pytest

from flows.placement import place
from flows.planning import plan_run
from registry.errors import DocumentError
from registry.runspec import RunSpec, Stage
from registry.site import Site

LUMI = Site.model_validate(
    {
        "name": "lumi",
        "partner": "csc",
        "scheduler": "slurm",
        "shared_with": ["*"],
        "ssh": {"host": "lumi.example.org"},
        "slurm": {
            "account": "project_465000001",
            "partitions": [
                {
                    "name": "dev-g",
                    "gpus_per_node": 8,
                    "max_time": "03:00:00",
                    "default": True,
                    "max_nodes": 16,
                },
                {"name": "small-g", "gpus_per_node": 8, "max_time": "3-00:00:00", "max_nodes": 1},
                {
                    "name": "standard-g",
                    "gpus_per_node": 8,
                    "max_time": "2-00:00:00",
                    "max_nodes": 1024,
                },
                {"name": "small", "max_time": "3-00:00:00", "max_nodes": 4},
            ],
        },
    }
)
LEONARDO = Site.model_validate(
    {
        "name": "leonardo",
        "partner": "cineca",
        "scheduler": "slurm",
        "shared_with": ["*"],
        "ssh": {"host": "login.leonardo.example.org"},
        "slurm": {
            "account": "EUHPC_X",
            "partitions": [
                {
                    "name": "boost_usr_prod",
                    "gpus_per_node": 4,
                    "gpu_type": "a100",
                    "max_time": "1-00:00:00",
                    "max_nodes": 64,
                    "qos": [
                        {"name": "normal"},
                        {"name": "boost_qos_dbg", "max_time": "00:30:00", "max_nodes": 2},
                        {"name": "boost_qos_bprod", "max_nodes": 256},
                        {"name": "boost_qos_lprod", "max_time": "4-00:00:00", "max_nodes": 3},
                    ],
                },
            ],
        },
    }
)


def stage(**resources: Any) -> Stage:
    return Stage.model_validate(
        {"name": "train", "site": "x", "command": ["true"], "resources": resources}
    )


def test_long_multi_node_stage_skips_the_short_default_partition() -> None:
    placement, _ = place(stage(nodes=4, gpus=8, time="2-00:00:00"), LUMI)
    assert placement is not None and placement.partition == "standard-g"
    assert "dev-g: time 2-00:00:00 > max_time 03:00:00" in placement.why
    assert "small-g: 4 nodes > max_nodes 1" in placement.why


def test_short_gpu_stage_takes_the_default_partition() -> None:
    placement, _ = place(stage(gpus=8, time="01:00:00"), LUMI)
    assert placement is not None and placement.partition == "dev-g"


def test_cpu_stage_prefers_a_cpu_partition_when_the_default_has_gpus() -> None:
    placement, _ = place(stage(time="10:00:00"), LUMI)
    assert placement is not None and placement.partition == "small"


def test_stage_too_big_for_every_partition_is_refused_with_each_reason() -> None:
    placement, why = place(stage(nodes=2000, gpus=8, time="01:00:00"), LUMI)
    assert placement is None
    assert "standard-g: 2000 nodes > max_nodes 1024" in why
    assert "dev-g: 2000 nodes > max_nodes 16" in why


def test_named_partition_is_checked_too() -> None:
    placement, why = place(stage(partition="dev-g", gpus=8, time="2-00:00:00"), LUMI)
    assert placement is None and "max_time 03:00:00" in why


def test_qos_is_chosen_by_its_own_limits() -> None:
    normal, _ = place(stage(nodes=8, gpus=4, time="12:00:00"), LEONARDO)
    assert normal is not None and (normal.partition, normal.qos) == ("boost_usr_prod", "normal")
    # 3 days: only the long-production QOS allows it (the partition alone says 24 h).
    long, _ = place(stage(nodes=2, gpus=4, time="3-00:00:00"), LEONARDO)
    assert long is not None and long.qos == "boost_qos_lprod"
    assert "QOS boost_qos_lprod" in long.why
    big, _ = place(stage(nodes=128, gpus=4, time="10:00:00"), LEONARDO)
    assert big is not None and big.qos == "boost_qos_bprod"


def test_a_qos_the_stage_names_must_fit_and_be_allowed() -> None:
    debug, _ = place(stage(nodes=1, gpus=4, time="00:20:00", qos="boost_qos_dbg"), LEONARDO)
    assert debug is not None and debug.qos == "boost_qos_dbg"
    placement, why = place(stage(nodes=1, gpus=4, time="02:00:00", qos="boost_qos_dbg"), LEONARDO)
    assert placement is None and "QOS boost_qos_dbg: time 02:00:00 > max_time 00:30:00" in why
    placement, why = place(stage(gpus=4, qos="premium"), LEONARDO)
    assert placement is None and "QOS premium not allowed" in why


def test_plan_records_qos_and_why_and_refuses_what_fits_nowhere() -> None:
    def spec(time: str) -> RunSpec:
        resources = {"nodes": 2, "gpus": 4, "time": time}
        document = {"name": "train", "site": "leonardo", "resources": resources}
        return RunSpec.model_validate({"name": "r", "stages": [{**document, "command": ["true"]}]})

    plan = plan_run(spec("3-00:00:00"), [LEONARDO], "cuni")["train"]
    assert plan.qos == {"leonardo": "boost_qos_lprod"}
    assert "partition boost_usr_prod" in plan.explanation
    with pytest.raises(DocumentError, match="max_time"):
        plan_run(spec("5-00:00:00"), [LEONARDO], "cuni")
