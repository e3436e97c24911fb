"""Probes of a SLURM site for `hpcfleet site check`: command builders and their parsers.

Pure: each `*_command()` builds a shell command; the matching `parse_*()` reads what it
printed. `SlurmScheduler.versions()/partitions()/associations()` run them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from registry.common import parse_walltime

VERSION_TOOLS = ("sbatch", "sacct", "squeue", "scancel", "sinfo")
SINFO_FORMAT = "%P|%a|%l|%G"  # partition (default marked "*"), up/down, time limit, GRES
_VERSION = re.compile(r"slurm(?:-wlm)?\s+(\d+(?:\.\d+)+\S*)", re.IGNORECASE)


def versions_command(tools: Sequence[str] = VERSION_TOOLS) -> str:
    """One line per tool: "TOOL slurm 22.05.8", or "TOOL missing"."""
    names = " ".join(shlex.quote(tool) for tool in tools)
    return (
        f'for tool in {names}; do printf "%s " "$tool"; '
        'if command -v "$tool" >/dev/null 2>&1; then "$tool" --version 2>&1 | head -n 1; '
        "else echo missing; fi; done"
    )


def parse_versions(stdout: str) -> dict[str, str | None]:
    """Lines "TOOL slurm-wlm 22.05.8" or "TOOL missing" -> {tool: version or None}."""
    versions: dict[str, str | None] = {}
    for line in stdout.splitlines():
        tool, _, rest = line.strip().partition(" ")
        if not tool:
            continue
        match = _VERSION.search(rest)
        versions[tool] = match.group(1) if match else None
    return versions


@dataclass(frozen=True)
class PartitionInfo:
    """A partition as `sinfo` describes it."""

    name: str
    available: bool
    default: bool
    max_time_seconds: int | None  # None: no limit
    gpus_per_node: int
    gpu_types: tuple[str, ...]


def partitions_command() -> str:
    """Partitions with availability, time limit and GRES (`parse_sinfo`)."""
    return f"sinfo --noheader --format={shlex.quote(SINFO_FORMAT)}"


def parse_gres_gpus(gres: str) -> tuple[int, tuple[str, ...]]:
    """sinfo's GRES column ("gpu:a100:4(S:0-1),shard:8" or "(null)") -> (GPUs, types)."""
    count, types = 0, []
    for item in re.split(r",(?![^()]*\))", gres):
        parts = item.split("(", 1)[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        if parts[-1].isdigit():
            count += int(parts[-1])
        if len(parts) == 3:
            types.append(parts[1])
    return count, tuple(types)


def parse_sinfo(stdout: str) -> dict[str, PartitionInfo]:
    """`partitions_command()` output -> partitions by name.

    sinfo prints one line per group of alike nodes; a partition's GPUs per node is the
    largest count among its groups.
    """
    partitions: dict[str, PartitionInfo] = {}
    for line in stdout.splitlines():
        row = [field.strip() for field in line.split("|")]
        if len(row) != 4:
            continue
        raw_name, available, limit, gres = row
        name = raw_name.rstrip("*")
        gpus, types = parse_gres_gpus(gres)
        previous = partitions.get(name)
        if previous is not None:
            gpus = max(gpus, previous.gpus_per_node)
            types = tuple(dict.fromkeys(previous.gpu_types + types))
        partitions[name] = PartitionInfo(
            name=name,
            available=available == "up",
            default=raw_name.endswith("*"),
            max_time_seconds=_parse_limit(limit),
            gpus_per_node=gpus,
            gpu_types=types,
        )
    return partitions


def _parse_limit(text: str) -> int | None:
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    try:
        return parse_walltime(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Association:
    """One row of `sacctmgr show assoc`: the user may submit under this account."""

    account: str
    partition: str | None
    qos: tuple[str, ...]


def account_check_command(account: str | None = None) -> str:
    """The user's associations (for one account if given): what it may submit under."""
    where = f" account={shlex.quote(account)}" if account else ""
    return (
        'sacctmgr --noheader --parsable2 show assoc user="$(id -un)"'
        f"{where} format=Account,Partition,QOS"
    )


def parse_associations(stdout: str) -> list[Association]:
    """`account_check_command()` output -> one Association per row."""
    associations = []
    for line in stdout.splitlines():
        row = line.split("|")
        if len(row) != 3:
            continue
        account, partition, qos = (field.strip() for field in row)
        associations.append(
            Association(
                account=account,
                partition=partition or None,
                qos=tuple(q for q in qos.split(",") if q),
            )
        )
    return associations
