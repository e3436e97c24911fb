"""Drive the real SLURM + sshd test sandbox (``tests/sandbox/hpc-sandbox``) from Python.

The script starts two independent SLURM clusters, ``site-a`` and ``site-b``, each with its
own sshd on 127.0.0.1 (key-only login for one unprivileged user), and writes the client
side (key, known_hosts, ssh_config, ``sites.env``) under ``<base>/client``. This module
reads ``sites.env`` into :class:`SandboxSite` records and wraps the script's fault
injection commands. It needs root, like the script.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("hpc-sandbox")
DEFAULT_BASE_DIR = Path("/tmp/hpc-sandbox")
SITE_NAMES = ("site-a", "site-b")
SITE_DAEMONS = ("sshd", "slurmctld", "slurmd")
PARTITION_MODES = ("drop", "reject")
# Installing the packages on a fresh machine is the slow case of `up`.
SCRIPT_TIMEOUT_S = 900.0


class SandboxError(RuntimeError):
    """The sandbox script failed; ``output`` is everything it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n{output}".rstrip())
        self.summary = message
        self.output = output


@dataclass(frozen=True)
class SandboxSite:
    """How to reach one sandbox site, as a test (or a site config) needs it."""

    name: str
    host: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    ssh_config: Path
    host_key: str  # "ssh-ed25519 AAAA...", the sshd's public host key
    home: Path  # the user's home *on this site* ($HOME, cwd and sftp "." after login)
    slurm_conf: Path
    # SLURM node names: site-a has two (partition `multi`), site-b one.
    nodes: tuple[str, ...] = ()

    def ssh_args(self, *, connect_timeout: int = 5) -> list[str]:
        """``ssh`` argv up to the remote command: key only, BatchMode, strict host key."""
        return [
            "ssh",
            "-F", "/dev/null",
            "-p", str(self.port),
            "-i", str(self.key_path),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-l", self.user,
            self.host,
        ]  # fmt: skip


def parse_sites_env(text: str) -> dict[str, str]:
    """Parse the ``export NAME=value`` lines the script writes (values shell-quoted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            values[name] = value
    return values


def sites_from_env(values: Mapping[str, str]) -> dict[str, SandboxSite]:
    """Build one :class:`SandboxSite` per site named in ``HPC_SANDBOX_SITES``."""
    sites: dict[str, SandboxSite] = {}
    for name in values["HPC_SANDBOX_SITES"].split():
        prefix = "HPC_SANDBOX_SITE_" + name.removeprefix("site-").upper()
        sites[name] = SandboxSite(
            name=name,
            host=values["HPC_SANDBOX_HOST"],
            port=int(values[f"{prefix}_PORT"]),
            user=values["HPC_SANDBOX_USER"],
            key_path=Path(values["HPC_SANDBOX_KEY"]),
            known_hosts=Path(values["HPC_SANDBOX_KNOWN_HOSTS"]),
            ssh_config=Path(values["HPC_SANDBOX_SSH_CONFIG"]),
            host_key=values[f"{prefix}_HOST_KEY"],
            home=Path(values[f"{prefix}_HOME"]),
            slurm_conf=Path(values[f"{prefix}_SLURM_CONF"]),
            nodes=tuple(values.get(f"{prefix}_NODES", "").split()),
        )
    return sites


def _as_shell_command(command: str | Sequence[str]) -> str:
    """A string is taken as shell code; a sequence is quoted word by word."""
    return command if isinstance(command, str) else shlex.join(command)


class Sandbox:
    """One sandbox instance (one base dir); all methods run the script or read its files."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        script: Path = SCRIPT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = dict(os.environ if env is None else env)
        if base_dir is None:
            base_dir = Path(environ.get("HPC_SANDBOX_DIR") or DEFAULT_BASE_DIR)
        environ["HPC_SANDBOX_DIR"] = str(base_dir)
        self.base_dir = base_dir
        self.script = script
        self._env = environ
        self._sites: dict[str, SandboxSite] | None = None

    # ------------------------------------------------------------------ lifecycle

    def up(self) -> dict[str, SandboxSite]:
        """Start (or repair) everything; raises :class:`SandboxError` with the log tail."""
        self._script("up")
        self._sites = None
        return self.sites

    def down(self, *, purge: bool = False) -> None:
        """Stop everything; ``purge`` also deletes state, keys and the accounting DB."""
        self._script("down", *(["--purge"] if purge else []))
        self._sites = None

    def status(self) -> subprocess.CompletedProcess[str]:
        """The script's status table; ``returncode`` 0 means everything runs unpaused."""
        return self._script("status", check=False)

    @property
    def sites(self) -> dict[str, SandboxSite]:
        """Sites by name, read from ``client/sites.env`` (written by ``up``)."""
        if self._sites is None:
            env_file = self.base_dir / "client" / "sites.env"
            try:
                text = env_file.read_text()
            except FileNotFoundError:
                raise SandboxError(f"{env_file} is missing: run up first", "") from None
            self._sites = sites_from_env(parse_sites_env(text))
        return self._sites

    def site(self, site: str | SandboxSite) -> SandboxSite:
        return site if isinstance(site, SandboxSite) else self.sites[site]

    # ------------------------------------------------------------------ commands on a site

    def run_on(
        self, site: str | SandboxSite, command: str | Sequence[str], *, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command locally as the sandbox user, in the site's home with its SLURM_CONF.

        For test assertions (``sacct``, ``ls``) that should not depend on ssh.
        """
        target = self.site(site)
        user_env = {
            "HOME": str(target.home),
            "USER": target.user,
            "LOGNAME": target.user,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "SLURM_CONF": str(target.slurm_conf),
            "HPC_SITE": target.name,
        }
        argv = [
            "runuser", "-u", target.user, "--",
            "env", "-i", *(f"{name}={value}" for name, value in user_env.items()),
            "bash", "-c", _as_shell_command(command),
        ]  # fmt: skip
        return subprocess.run(
            argv, cwd=target.home, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ssh(
        self,
        site: str | SandboxSite,
        command: str | Sequence[str],
        *,
        timeout: float = 60.0,
        connect_timeout: int = 5,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command over real ssh (OpenSSH client, generated key, BatchMode)."""
        argv = [
            *self.site(site).ssh_args(connect_timeout=connect_timeout),
            _as_shell_command(command),
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    # ------------------------------------------------------------------ fault injection

    def stop(self, site: str, what: str) -> None:
        """Stop a daemon (``sshd`` also ends its open sessions); ``start`` or ``up`` undo it."""
        self._script("stop", site, what)

    def start(self, site: str, what: str) -> None:
        self._script("start", site, what)

    def pause(self, site: str, what: str) -> None:
        """SIGSTOP a daemon: connections hang instead of failing."""
        self._script("pause", site, what)

    def resume(self, site: str, what: str) -> None:
        self._script("resume", site, what)

    def partition(self, site: str, mode: str) -> None:
        """Cut the site's ssh port off on lo: ``drop`` (time-outs) or ``reject`` (refused)."""
        if mode not in PARTITION_MODES:
            raise ValueError(f"partition mode must be one of {PARTITION_MODES}, not {mode!r}")
        self._script("partition", site, mode)

    def heal(self, site: str, what: str | None = None) -> None:
        """Undo ``partition`` and ``pause`` on the site (``what`` is accepted and ignored)."""
        del what  # heal always restores the whole site
        self._script("heal", site)

    def restore(self) -> None:
        """Heal every site and restart whatever was stopped."""
        for name in SITE_NAMES:
            self.heal(name)
        self.up()

    # ------------------------------------------------------------------ plumbing

    def _script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.script), *args],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
        if check and result.returncode != 0:
            raise SandboxError(
                f"hpc-sandbox {' '.join(args)} failed with exit code {result.returncode}",
                result.stdout,
            )
        return result
