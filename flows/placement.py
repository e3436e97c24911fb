"""Where on a site a stage goes: the partition and QOS whose limits it fits. Pure.

A partition fits when it has the GPUs (count and type) per node the stage asks for, and
the stage's nodes and wall time are within its limits. A partition may list the QOS a
job there can ask for; a QOS's own `max_time`/`max_nodes` replace the partition's (sites
grant longer walls, or short debug queues, through a QOS). Nothing is ever placed where
SLURM would refuse it or hold it forever: a 48-hour 4-node stage never lands on a
3-hour `dev-g`. Every choice comes with a sentence saying why, and why not the
partitions preferred before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from registry.common import format_walltime
from registry.runspec import Stage
from registry.site import Partition, QosLimit, Site, SlurmSettings


@dataclass(frozen=True)
class Placement:
    partition: str | None  # None: a local site (no partitions)
    qos: str | None  # None: the site's own default
    why: str


@dataclass(frozen=True)
class _Need:
    nodes: int
    gpus: int
    gpu_type: str | None
    seconds: int
    qos: str | None


def place(stage: Stage, site: Site) -> tuple[Placement | None, str]:
    """(where `stage` goes on `site`, "") or (None, why it fits nowhere there)."""
    if stage.where == "login":
        return Placement(None, None, "on the login node"), ""  # no partition, no QOS
    requirement = stage.site.require
    need = _Need(
        nodes=stage.resources.nodes,
        gpus=max(stage.resources.gpus, requirement.min_gpus if requirement else 0),
        gpu_type=requirement.gpu_type if requirement else None,
        seconds=stage.resources.time,
        qos=stage.resources.qos,
    )
    wanted = stage.resources.partition
    if site.slurm is None:
        return _place_locally(site, need, wanted)
    partitions = site.slurm.partitions
    if wanted is not None:
        partitions = [p for p in partitions if p.name == wanted]
        if not partitions:
            names = ", ".join(p.name for p in site.slurm.partitions)
            return None, f"no partition {wanted!r} (has {names})"
    skipped: list[str] = []
    for partition in _preferred(partitions, site.slurm, need):
        problem = _gpu_problem(partition, need)
        qos: QosLimit | None = None
        if problem is None:
            qos, problem = _pick_qos(partition, site.slurm, need)
        if problem is None:
            why = _why(partition, qos, need, wanted is not None)
            if skipped:
                why += "; not " + "; not ".join(skipped)
            return Placement(partition.name, qos.name if qos else need.qos, why), ""
        skipped.append(f"{partition.name}: {problem}")
    return None, "; ".join(skipped)


def _place_locally(site: Site, need: _Need, wanted: str | None) -> tuple[Placement | None, str]:
    if wanted is not None:
        return None, f"partition {wanted!r} given but the site is a local one"
    local_gpus, local_type = site.gpu_partitions()[0][1:]
    if local_gpus < need.gpus or (need.gpu_type is not None and local_type != need.gpu_type):
        kind = f" of type {need.gpu_type}" if need.gpu_type else ""
        return None, f"no partition with {need.gpus} GPU(s){kind} per node"
    return Placement(None, None, "local processes"), ""


def _preferred(
    partitions: Sequence[Partition], slurm: SlurmSettings, need: _Need
) -> list[Partition]:
    """The site's default first; a stage without GPUs tries CPU partitions before GPU
    ones (GPU nodes are dearer); otherwise the site's order."""
    default = slurm.default_partition.name
    return sorted(
        partitions,
        key=lambda p: (p.name != default, need.gpus == 0 and p.gpus_per_node > 0),
    )


def _gpu_problem(partition: Partition, need: _Need) -> str | None:
    if partition.gpus_per_node < need.gpus:
        return f"{partition.gpus_per_node} GPU(s) per node < {need.gpus}"
    if need.gpu_type is not None and partition.gpu_type != need.gpu_type:
        return f"GPU type {partition.gpu_type or 'none'}, not {need.gpu_type}"
    return None


def _limit_problem(max_time: int | None, max_nodes: int | None, need: _Need) -> str | None:
    if max_time is not None and need.seconds > max_time:
        return f"time {format_walltime(need.seconds)} > max_time {format_walltime(max_time)}"
    if max_nodes is not None and need.nodes > max_nodes:
        return f"{need.nodes} nodes > max_nodes {max_nodes}"
    return None


def _pick_qos(
    partition: Partition, slurm: SlurmSettings, need: _Need
) -> tuple[QosLimit | None, str | None]:
    """The QOS to ask for (None: the stage's or site's, unchecked), or why none fits."""
    if not partition.qos:
        return None, _limit_problem(partition.max_time, partition.max_nodes, need)
    allowed = [q.name for q in partition.qos]
    if need.qos is not None and need.qos not in allowed:
        return None, f"QOS {need.qos} not allowed (allows {', '.join(allowed)})"
    # The site's default QOS first, then the partition's order.
    options = sorted(partition.qos, key=lambda q: q.name != slurm.qos)
    problems = []
    for qos in options:
        if need.qos is not None and qos.name != need.qos:
            continue
        problem = _limit_problem(
            qos.max_time or partition.max_time, qos.max_nodes or partition.max_nodes, need
        )
        if problem is None:
            return qos, None
        problems.append(f"QOS {qos.name}: {problem}")
    return None, ", ".join(problems)


def _why(partition: Partition, qos: QosLimit | None, need: _Need, named: bool) -> str:
    max_time = (qos.max_time if qos else None) or partition.max_time
    max_nodes = (qos.max_nodes if qos else None) or partition.max_nodes
    facts = [f"{need.nodes} node(s)" + (f" <= {max_nodes}" if max_nodes else "")]
    facts.append(
        f"time {format_walltime(need.seconds)}"
        + (f" <= {format_walltime(max_time)}" if max_time else "")
    )
    if need.gpus:
        facts.append(f"{need.gpus} GPU(s)/node of {partition.gpus_per_node}")
    origin = "named in the stage" if named else "fits"
    text = f"partition {partition.name} ({origin}: {', '.join(facts)})"
    if qos is not None:
        text += f", QOS {qos.name}"
    elif need.qos is not None:
        text += f", QOS {need.qos}"
    return text
