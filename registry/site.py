"""Site: a compute site owned by one partner (INTERFACE.md, "Site").

Secrets are never part of a site: only references to where they live (an identity file
path, the ssh-agent, an AWS profile name).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from registry import sshnames
from registry.common import DAY_SECONDS, Duration, Identifier, StrictModel, Walltime
from registry.env_secrets import check_env

ALL_PARTNERS = "*"
MAX_GPUS_PER_NODE = 64
MAX_QUEUED_JOBS = 100_000
MAX_LOGIN_TASKS = 8
MAX_GPU_HOURS = 1e12
MIN_POLL_SECONDS = 0.1  # local sites; a SLURM login node is polled at most once a second
MIN_SLURM_POLL_SECONDS = 1.0
# The file-creation mask of everything hpcfleet creates on a site (job directories,
# outputs, logs) unless the site's `environment.umask` says otherwise: owner-only, since
# a shared /scratch is readable by every member of a project's group.
DEFAULT_UMASK = "077"
_HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


def public_key_line(value: str, *, check_blob: bool = True) -> str:
    """`TYPE BASE64` of a public key line (comment dropped); with `check_blob`, only if
    the base64 part is a key of that type (`host_key` predates the check)."""
    import base64
    import binascii

    parts = value.split()
    if "PRIVATE KEY" in value:
        raise ValueError("looks like private key material; give the public host key")
    if len(parts) < 2 or parts[0] not in _HOST_KEY_TYPES:
        raise ValueError(
            "must be a public host key line such as 'ssh-ed25519 AAAAC3Nza...' "
            f"(key types: {', '.join(_HOST_KEY_TYPES)})"
        )
    if not check_blob:
        return " ".join(parts[:2])
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ValueError(f"the {parts[0]} key is not valid base64") from None
    name = parts[0].encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name:
        raise ValueError(f"the base64 part is not an {parts[0]} public key")
    return " ".join(parts[:2])


class SshSettings(StrictModel):
    """How to log in. `host` may be an alias of ~/.ssh/config; then the other fields
    left unset come from there."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: str | None = None
    identity_file: str | None = None
    proxy_jump: list[str] = []
    host_key: str | None = None
    known_hosts: str | None = None
    # Several pinned keys (round-robin login nodes each have their own).
    host_keys: list[Annotated[str, AfterValidator(public_key_line)]] = []
    host_ca: str | None = None  # trust host certificates signed by this CA
    certificate_file: str | None = None  # a (short-lived) user certificate

    @field_validator("host", "user", "proxy_jump")
    @classmethod
    def _names_openssh_accepts(cls, value: object, info: ValidationInfo) -> object:
        """These reach the `Match exec` lines of ~/.ssh/config: see registry.sshnames."""
        return sshnames.check_field(str(info.field_name), value)

    @field_validator("host_key")
    @classmethod
    def _host_key_is_public_key_line(cls, value: str | None) -> str | None:
        return None if value is None else public_key_line(value, check_blob=False)

    @field_validator("host_ca")
    @classmethod
    def _host_ca_is_public_key_line(cls, value: str | None) -> str | None:
        return None if value is None else public_key_line(value)


class QosLimit(StrictModel):
    """A QOS a partition accepts. Its limits, where given, replace the partition's (as
    sites grant a longer wall time, or a short debug queue, through a QOS)."""

    name: Annotated[str, Field(min_length=1)]
    max_time: Walltime | None = None
    max_nodes: Annotated[int, Field(ge=1)] | None = None


class Partition(StrictModel):
    name: Annotated[str, Field(min_length=1)]
    gpus_per_node: Annotated[int, Field(ge=0, le=MAX_GPUS_PER_NODE)] = 0
    gpu_type: str | None = None
    max_time: Walltime | None = None
    default: bool = False
    max_nodes: Annotated[int, Field(ge=1)] | None = None
    qos: list[QosLimit] = []  # the QOS a job here may ask for; empty: not checked


class SlurmSettings(StrictModel):
    account: str | None = None
    qos: str | None = None
    partitions: Annotated[list[Partition], Field(min_length=1)]
    extra_flags: list[str] = []
    srun_flags: list[str] = []  # for the srun launcher (sites.launcher), e.g. --cpu-bind=cores

    @model_validator(mode="after")
    def _partitions_unique(self) -> Self:
        counts = Counter(p.name for p in self.partitions)
        duplicates = sorted(n for n, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate partition names: {', '.join(duplicates)}")
        if sum(p.default for p in self.partitions) > 1:
            raise ValueError("at most one partition can be the default")
        return self

    @property
    def default_partition(self) -> Partition:
        return next((p for p in self.partitions if p.default), self.partitions[0])


class LocalSettings(StrictModel):
    """A site that runs jobs as processes on the machine itself."""

    slots: Annotated[int, Field(ge=1, le=256)] = 2
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS_PER_NODE)] = 0
    gpu_type: str | None = None


class Container(StrictModel):
    runtime: Literal["apptainer", "singularity"] = "apptainer"
    image: Annotated[str, Field(min_length=1)]
    options: list[str] = []
    binds: list[str] = []  # -> --bind a,b,c

    @field_validator("binds")
    @classmethod
    def _one_path_per_bind(cls, value: list[str]) -> list[str]:
        for bind in value:
            if not bind or "," in bind or any(c in bind for c in "\n\r\x00"):
                raise ValueError(f"{bind!r}: a bind is one path or src:dest[:opts], without commas")
        return value


def _umask(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-7]{3,4}", value):
        raise ValueError(
            f"{value!r} is not a umask: write 3 or 4 octal digits in quotes, e.g. '077'"
        )
    if int(value, 8) & 0o700:
        raise ValueError(
            f"{value!r} would take the owner's own rights away: its owner digit "
            "(third from the right) must be 0"
        )
    return value


class Environment(StrictModel):
    workdir: str | None = None  # local sites default to $HPCFLEET_HOME/sites/<name>
    # The site owner's own shell lines, run before `module load` (trusted configuration).
    setup: list[str] = []
    modules: list[str] = []
    env: dict[str, str] = {}  # values may use $VAR / ${VAR}, expanded in the job
    container: Container | None = None
    # None: DEFAULT_UMASK. A site may open its files to its project group, e.g. "027".
    umask: (
        Annotated[
            str,
            Field(
                pattern=r"^[0-7]{3,4}$",
                description='umask of what jobs create on the site; default "077"',
            ),
            BeforeValidator(_umask),
        ]
        | None
    ) = None

    @property
    def effective_umask(self) -> str:
        """The umask jobs and their directories are created with on this site."""
        return self.umask or DEFAULT_UMASK

    offline: bool = False  # compute nodes without internet: HF_*_OFFLINE=1, WANDB_MODE

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if name.startswith("HPCFLEET_"):
                raise ValueError(f"{name!r}: HPCFLEET_* variables are set by hpcfleet")
            _check_expandable(name, value[name])
        return check_env(value)


_EXPANSION = re.compile(r"\$(\{[^}]*\}?|\(|\[)")
_SIMPLE_BRACES = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _check_expandable(name: str, value: str) -> None:
    """A site's env value expands `$VAR` and `${VAR}` in the job, and nothing else: no
    command substitution, arithmetic or `${VAR:-...}` forms (those belong in `setup`)."""
    if "`" in value:
        raise ValueError(f"{name}: backticks are not allowed; run commands in 'setup:' lines")
    for match in _EXPANSION.finditer(value):
        if not _SIMPLE_BRACES.fullmatch(match.group(1)):
            raise ValueError(
                f"{name}: {match.group(0)!r} is not allowed; a value may use $VAR or ${{VAR}} "
                "only (run commands in 'setup:' lines)"
            )


class S3Store(StrictModel):
    endpoint: str | None = None
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    profile: str | None = None  # the AWS profile name; credentials never live here
    prefix: str = "hpcfleet"
    region: str | None = None


class Storage(StrictModel):
    s3: S3Store | None = None


class Billing(StrictModel):
    """How the site counts what a job costs: per GPU-hour or per node-hour, times
    `factor` (LUMI bills one MI250X, i.e. two GCDs: `{per: gpu, factor: 0.5}`)."""

    per: Literal["gpu", "node"] = "gpu"
    factor: Annotated[float, Field(gt=0)] = 1.0


class Allocation(StrictModel):
    gpu_hours: Annotated[float, Field(ge=0, le=MAX_GPU_HOURS)]  # in the site's billing unit
    start: date
    end: date
    billing: Billing = Billing()

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must come after start ({self.start})")
        return self


def _poll_interval(seconds: float) -> float:
    if not MIN_POLL_SECONDS <= seconds <= DAY_SECONDS:
        raise ValueError("a poll interval is 0.1s to 1d (SLURM sites: 1s or more)")
    return seconds


class Policy(StrictModel):
    max_queued_jobs: Annotated[int, Field(ge=1, le=MAX_QUEUED_JOBS)] = 200
    max_running_tasks: Annotated[int, Field(ge=1)] | None = None  # per array: --array=…%N
    # `where: login` stages running at once on the login node (others wait): a shared
    # machine, so a small number.
    login_tasks: Annotated[int, Field(ge=1, le=MAX_LOGIN_TASKS)] = 1
    # None: 30 s for SLURM sites (be gentle with a shared login node), 0.5 s for local ones.
    min_poll_interval: Annotated[Duration, AfterValidator(_poll_interval)] | None = None


class Site(StrictModel):
    name: Identifier
    partner: Identifier
    description: str = ""
    ssh: SshSettings | None = None
    scheduler: Literal["slurm", "local"]
    slurm: SlurmSettings | None = None
    local: LocalSettings | None = None
    environment: Environment = Environment()
    storage: Storage | None = None
    allocation: Allocation | None = None
    shared_with: list[str] = []
    labels: dict[str, str] = {}
    policy: Policy = Policy()

    @model_validator(mode="after")
    def _scheduler_section(self) -> Self:
        if self.scheduler == "slurm" and self.slurm is None:
            raise ValueError("scheduler 'slurm' needs a 'slurm:' section with partitions")
        if self.scheduler == "slurm" and self.local is not None:
            raise ValueError("'local:' only applies to scheduler 'local'")
        if self.scheduler == "local" and self.slurm is not None:
            raise ValueError("'slurm:' only applies to scheduler 'slurm'")
        if self.scheduler == "local" and self.ssh is not None:
            raise ValueError("scheduler 'local' runs on this machine and takes no 'ssh:'")
        interval = self.policy.min_poll_interval
        if self.scheduler == "slurm" and interval is not None and interval < 1:
            raise ValueError("policy.min_poll_interval: poll a SLURM login node 1s apart or more")
        return self

    @field_validator("shared_with")
    @classmethod
    def _shared_with(cls, value: list[str]) -> list[str]:
        from registry.common import _identifier

        for entry in value:
            if entry != ALL_PARTNERS:
                _identifier(entry)
        return value

    @property
    def poll_interval(self) -> float:
        if self.policy.min_poll_interval is not None:
            return self.policy.min_poll_interval
        return 30.0 if self.scheduler == "slurm" else 0.5

    def gpu_partitions(self) -> list[tuple[str, int, str | None]]:
        """(partition name, GPUs per node, GPU type) for every place a GPU job can go."""
        if self.slurm is not None:
            return [(p.name, p.gpus_per_node, p.gpu_type) for p in self.slurm.partitions]
        local = self.local or LocalSettings()
        return [("local", local.gpus, local.gpu_type)]
