"""What the benchmarks in `bench/` share: the machine they ran on, the sandbox sites as
hpcfleet `Site`s, a transport that counts the commands it carries, cleaning up jobs by
name, reading sshd's log, and rendering a result section as markdown.

Not a benchmark itself; each `bench/bench_*.py` imports it (the script's directory is
on `sys.path` when run as `.venv/bin/python bench/NAME.py`).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from registry.site import Site  # noqa: E402
from sites.scheduler import JobRequest, JobResources, TaskSpec  # noqa: E402
from sites.slurm.scheduler import SlurmScheduler  # noqa: E402
from sites.ssh.transport import ConnectionPool, SshTransport  # noqa: E402
from sites.transport import CommandResult, Transport  # noqa: E402
from tests.sandbox.documents import slurm_site_document  # noqa: E402
from tests.sandbox.sandbox import Sandbox, SandboxSite  # noqa: E402

# Every job a benchmark submits is named with this prefix and its pid, so that cleaning
# up (scancel --name) never touches anybody else's jobs on the shared sandbox.
JOB_PREFIX = f"hpcfleet-bench{os.getpid()}"


# -- the machine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    ram_gib: float
    kernel: str
    python: str

    def describe(self) -> str:
        return (
            f"{self.cpus} CPUs ({self.cpu_model}), {self.ram_gib:.0f} GiB RAM, "
            f"Linux {self.kernel}, Python {self.python}"
        )


def machine() -> Machine:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
    except OSError:
        pass
    return Machine(
        cpus=os.cpu_count() or 0,
        cpu_model=model,
        ram_gib=ram_kib / 1024 / 1024,
        kernel=platform.release(),
        python=platform.python_version(),
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# -- reporting ------------------------------------------------------------------------------


@dataclass
class Report:
    """One benchmark's section of docs/benchmarks.md."""

    title: str
    command: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_before: str = field(default_factory=load_average)
    header: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)
    # what, measured, met (None: no target was set, the row only reports)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, *cells: object) -> None:
        self.rows.append(tuple(str(c) for c in cells))

    def target(self, what: str, measured: str, met: bool | None) -> None:
        self.targets.append((what, measured, met))

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            f"- Command: `{self.command}`",
            f"- Machine: {machine().describe()}",
            f"- Date: {self.started:%Y-%m-%d %H:%M} UTC; load average (1/5/15 min) "
            f"{self.load_before} before, {load_average()} after",
            "",
        ]
        if self.rows:
            lines += [*_table(self.header, self.rows), ""]
        if self.targets:
            verdicts = [(what, got, _verdict(met)) for what, got, met in self.targets]
            lines += [*_table(("target", "measured", "met"), verdicts), ""]
        for note in self.notes:
            lines += [note, ""]
        return "\n".join(lines).rstrip() + "\n"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "yes" if met else "**no**"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


# -- the sandbox ----------------------------------------------------------------------------


def sandbox_site(sandbox: Sandbox, name: str, partner: str = "bench") -> tuple[SandboxSite, Site]:
    """A sandbox site and its hpcfleet `Site` (host key pinned, 1 s poll interval)."""
    site = sandbox.site(name)
    return site, Site.model_validate(slurm_site_document(site, partner))


def require_sandbox() -> Sandbox:
    """The running sandbox; exits with a message when it is not up (we never start it)."""
    if os.geteuid() != 0:
        sys.exit("the benchmarks use the SLURM sandbox, which needs root")
    sandbox = Sandbox()
    try:
        sandbox.sites  # noqa: B018 (reads client/sites.env)
    except Exception as exc:
        sys.exit(f"the sandbox is not up ({exc}); start it: tests/sandbox/hpc-sandbox up")
    return sandbox


def cancel_by_name(sandbox: Sandbox, site: str, names: Sequence[str], timeout: float = 60) -> None:
    """scancel every job with one of `names`, then wait until squeue lists none of them."""
    # scancel --name takes one name; squeue --name a list. Ids of arrays cancel all tasks.
    listed = ["squeue", "--noheader", "--format=%F", f"--name={','.join(names)}"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = sorted(set(sandbox.run_on(site, listed, timeout=timeout).stdout.split()))
        if not ids:
            return
        sandbox.run_on(site, ["scancel", *ids], timeout=timeout)
        time.sleep(0.5)
    left = ", ".join(names)
    print(f"warning: jobs named {left} still listed on {site} after {timeout} s", file=sys.stderr)


def remove_dir(sandbox: Sandbox, site: str, path: str) -> None:
    """Delete a benchmark's directory on the site, and its parent when left empty."""
    parent = path.rsplit("/", 1)[0]
    sandbox.run_on(site, ["bash", "-c", 'rm -rf -- "$1"; rmdir -- "$2" 2>/dev/null; true',
                          "remove", path, parent])  # fmt: skip


def sshd_log(site: SandboxSite) -> Path:
    """Where the sandbox's sshd of `site` logs (hpc-sandbox starts it with -E)."""
    return site.home.parent / "log" / "sshd.log"


_ACCEPTED = re.compile(r"Accepted publickey for \S+ from \S+ port (\d+)")


def accepted_logins(log: Path, offset: int) -> list[int]:
    """Source ports of the "Accepted publickey" lines written after byte `offset`."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", "replace")
    return [int(m.group(1)) for m in _ACCEPTED.finditer(text)]


# -- counting commands ------------------------------------------------------------------------


SLURM_TOOLS = ("sbatch", "sacct", "squeue", "scancel", "scontrol", "sinfo", "sacctmgr")


def command_kind(command: str) -> str:
    """The SLURM tool a command runs (sacct, squeue, sbatch, ...), else its first word.

    A plain split, not shlex: this runs inside the measured process on commands that
    carry hundreds of job ids, and must cost next to nothing."""
    words = command.split()
    for word in words:
        if word in SLURM_TOOLS:
            return word
    return words[0] if words else "?"


class CountingTransport:
    """A `Transport` that passes every call through and counts `run()` calls by tool."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.site = inner.site
        self.kinds: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.last: dict[str, CommandResult] = {}  # the latest answer of each kind
        self.failures: list[str] = []  # errors raised (site unreachable, ...)
        self._lock = threading.Lock()

    @property
    def runs(self) -> int:
        with self._lock:
            return sum(self.kinds.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.kinds)

    def time_spent(self) -> dict[str, float]:
        """Wall seconds spent in `run()` so far, by tool."""
        with self._lock:
            return dict(self.seconds)

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        started = time.perf_counter()
        kind = command_kind(command)
        try:
            result = self.inner.run(command, stdin=stdin, timeout=timeout)
        except Exception as exc:
            with self._lock:
                self.failures.append(f"{kind}: {exc}")
            raise
        finally:
            with self._lock:
                self.kinds[kind] += 1
                self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - started
        with self._lock:
            self.last[kind] = result
        return result

    def put(self, local: Path, remote: str) -> None:
        self.inner.put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self.inner.get(remote, local)

    def close(self) -> None:
        self.inner.close()


class ReplayTransport:
    """Answers every command with the latest recorded answer of its kind: no I/O, so
    that timing `SlurmScheduler.status()` over it measures hpcfleet's own work."""

    def __init__(self, answers: dict[str, CommandResult], site: str) -> None:
        self.answers = answers
        self.site = site

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        return self.answers[command_kind(command)]

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def describe_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"


def process_memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in KiB, from /proc/self/status."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


# -- jobs on the sandbox ------------------------------------------------------------------------


def hold_anchor(sandbox: Sandbox, site: str, name: str) -> str:
    """Submit a held job on `site` (as its user) and return its id. Jobs submitted with
    `afterok` on it stay PENDING (Reason=Dependency) without taking the node's CPUs away
    from whoever else uses the shared sandbox."""
    result = sandbox.run_on(
        site,
        ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null",
         "--wrap", "true"],
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"cannot submit the anchor job on {site}: {result.stderr.strip()}")
    return result.stdout.strip()


def open_slurm(site: Site) -> tuple[CountingTransport, SlurmScheduler]:
    """A `SlurmScheduler` over a counting `SshTransport` with a connection of its own."""
    assert site.ssh is not None and site.slurm is not None
    transport = CountingTransport(SshTransport(site.name, site.ssh, pool=ConnectionPool()))
    return transport, SlurmScheduler(site.name, transport, site.slurm, site.environment)


def sleep_request(
    name: str, workdir: str, *, tasks: int = 1, after_ok: str | None = None
) -> JobRequest:
    """`sleep 600` as one job or an array of `tasks` tasks."""
    values = [None] if tasks == 1 else [str(i) for i in range(tasks)]
    return JobRequest(
        name=name,
        workdir=f"{workdir}/work",
        tasks=tuple(TaskSpec(argv=("sleep", "600"), array_value=v) for v in values),
        log_dir=f"{workdir}/logs",
        resources=JobResources(time_seconds=900),
        after_ok=(after_ok,) if after_ok else (),
    )
