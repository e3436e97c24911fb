"""Read ~/.ssh/config the way OpenSSH (9.x, `readconf.c`) does, for the keys hpcfleet uses.

paramiko's `SSHConfig` has no `Include`, treats an unknown `Match` criterion as
matching every host, and expands `%h` unquoted into `Match exec`. This module keeps
OpenSSH's rules instead, and `tests/unit/test_ssh_config_oracle.py` compares it with
`ssh -G` on the configs under `tests/data/ssh_config/`:

- the first value obtained for a keyword wins; `IdentityFile` and `CertificateFile`
  accumulate; `ProxyJump` and `ProxyCommand` exclude each other (first one wins, but
  `ProxyJump none` leaves room for a ProxyCommand);
- `Host` patterns match the name as given, case-sensitively; `Match host` patterns
  are lower-cased; `!` negates; `Include` globs, relative to ~/.ssh, and an `Include`
  inside a block that does not apply contributes nothing;
- `Match all|host|originalhost|user|localuser|exec|canonical|final`; any other
  criterion is an error naming the file and line; `exec` runs `/bin/sh -c` with every
  `%` token quoted, only when the criteria before it matched;
- `Match final` (or `canonical`) makes a second pass with the final host name.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_INCLUDE_DEPTH = 16
EXEC_TIMEOUT = 30.0
_MULTI_VALUED = frozenset({"identityfile", "certificatefile"})
_RAW_VALUED = frozenset({"proxycommand"})  # the rest of the line, unsplit
_MATCH_WITH_ARGUMENT = frozenset({"host", "originalhost", "user", "localuser", "exec"})
_MATCH_WITHOUT_ARGUMENT = frozenset({"all", "canonical", "final"})
_LINE = re.compile(r"\s*([^\s=]+)\s*=?\s*(.*)")

# Runs a `Match exec` command line; True when it exits 0.
ExecRunner = Callable[[str], bool]


class SshConfigError(ValueError):
    """A line of an ssh config that OpenSSH would refuse too (names file and line)."""


@dataclass(frozen=True)
class ConfigLine:
    path: str
    number: int
    keyword: str  # lower-cased
    args: tuple[str, ...]
    raw: str  # the text after the keyword

    @property
    def where(self) -> str:
        return f"{self.path} line {self.number}"


@dataclass
class HostConfig:
    """The options that apply to one host, first value first (OpenSSH's `Options`)."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def get(self, keyword: str) -> str | None:
        """The single value of `keyword` (its arguments joined by spaces), if set."""
        args = self.values.get(keyword)
        return " ".join(args) if args is not None else None

    def args(self, keyword: str) -> tuple[str, ...]:
        return self.values.get(keyword, ())

    def all(self, keyword: str) -> list[str]:
        """Every value of a keyword that accumulates (`IdentityFile`, `CertificateFile`)."""
        return list(self.lists.get(keyword, []))

    def apply(self, line: ConfigLine) -> None:
        if line.keyword in _MULTI_VALUED:
            known = self.lists.setdefault(line.keyword, [])
            if line.args and line.args[0] not in known:  # OpenSSH skips duplicates too
                known.append(line.args[0])
            return
        if line.keyword == "proxyjump" and "proxycommand" in self.values:
            return
        jump = self.get("proxyjump")
        if line.keyword == "proxycommand" and jump is not None and jump.lower() != "none":
            return  # (`ProxyJump none` does not hide a later ProxyCommand: ssh -G says so)
        value = (line.raw,) if line.keyword in _RAW_VALUED else line.args
        self.values.setdefault(line.keyword, value)


@dataclass(frozen=True)
class _Context:
    host: str  # what Host lines match: the name given, or the final host name
    original_host: str
    local_user: str
    final: bool


class OpenSshConfig:
    """A parsed ssh config file (and the files it includes, read when looked up)."""

    def __init__(
        self,
        lines: list[ConfigLine],
        *,
        ssh_dir: Path | None = None,
        run_exec: ExecRunner | None = None,
    ) -> None:
        self._lines = lines
        self._ssh_dir = ssh_dir or Path("~/.ssh").expanduser()
        self._run_exec = run_exec or run_match_exec
        self._includes: dict[str, list[ConfigLine]] = {}

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        name: str = "<config>",
        ssh_dir: Path | None = None,
        run_exec: ExecRunner | None = None,
    ) -> OpenSshConfig:
        return cls(parse_config(text, name), ssh_dir=ssh_dir, run_exec=run_exec)

    @classmethod
    def from_path(cls, path: Path, *, ssh_dir: Path | None = None) -> OpenSshConfig:
        path = Path(path).expanduser()
        return cls.from_text(path.read_text(), name=str(path), ssh_dir=ssh_dir)

    def lookup(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        local_user: str | None = None,
    ) -> HostConfig:
        """The options for `host`; `user`/`port` act as `ssh -l USER -p PORT` (they win
        over the file, and `Match user` sees them)."""
        config = HostConfig()
        if user is not None:
            config.values["user"] = (user,)
        if port is not None:
            config.values["port"] = (str(port),)
        local = local_user or _local_user()
        first = _Context(host, host, local, final=False)
        want_final = self._evaluate(self._lines, config, first, active=True, depth=0)
        if want_final:
            final = _Context(final_hostname(config, host), host, local, final=True)
            self._evaluate(self._lines, config, final, active=True, depth=0)
        return config

    def _evaluate(
        self,
        lines: list[ConfigLine],
        config: HostConfig,
        ctx: _Context,
        *,
        active: bool,
        depth: int,
    ) -> bool:
        """Apply `lines` to `config`; True if a `Match final`/`canonical` was seen."""
        never_match = not active
        want_final = False
        for line in lines:
            if line.keyword == "host":
                active = not never_match and host_line_matches(line.args, ctx.host)
            elif line.keyword == "match":
                matched, final_seen = self._match(line, config, ctx, skip=never_match)
                active, want_final = not never_match and matched, want_final or final_seen
            elif line.keyword == "include":
                for included in self._included(line, depth):
                    want_final |= self._evaluate(
                        included, config, ctx, active=active, depth=depth + 1
                    )
            elif active:
                config.apply(line)
        return want_final

    def _match(
        self, line: ConfigLine, config: HostConfig, ctx: _Context, *, skip: bool
    ) -> tuple[bool, bool]:
        criteria = parse_match(line)
        result, want_final = True, False
        for negate, name, argument in criteria:
            if name == "all":
                matched = True
            elif name in ("canonical", "final"):
                want_final |= name == "final"
                matched = ctx.final
            elif name == "exec":
                if not result or skip:
                    continue  # OpenSSH runs no command once the line cannot match
                matched = self._run_exec(expand_tokens(argument, config, ctx, line))
            else:
                matched = _criterion_matches(name, argument, config, ctx)
            if matched == negate:
                result = False
        return result, want_final

    def _included(self, line: ConfigLine, depth: int) -> list[list[ConfigLine]]:
        if depth >= MAX_INCLUDE_DEPTH:
            raise SshConfigError(f"{line.where}: Include nested too deeply")
        files: list[list[ConfigLine]] = []
        for pattern in line.args:
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = str(self._ssh_dir / pattern)
            for path in sorted(glob.glob(pattern)):
                if path not in self._includes:
                    self._includes[path] = parse_config(Path(path).read_text(), path)
                files.append(self._includes[path])
        return files


def parse_config(text: str, name: str) -> list[ConfigLine]:
    """Split a config text into keyword lines; a line OpenSSH cannot split is an error."""
    lines = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        stripped = raw_line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        found = _LINE.fullmatch(stripped)
        if found is None:  # pragma: no cover - the pattern matches any non-blank line
            continue
        keyword, rest = found.group(1).lower(), found.group(2).strip()
        try:
            args = tuple(shlex.split(rest, comments=False, posix=True))
        except ValueError as exc:
            raise SshConfigError(f"{name} line {number}: {exc}") from None
        lines.append(ConfigLine(name, number, keyword, args, rest))
    return lines


def parse_match(line: ConfigLine) -> list[tuple[bool, str, str]]:
    """`Match` criteria as (negated, name, argument); unknown ones are an error."""
    criteria: list[tuple[bool, str, str]] = []
    args = list(line.args)
    while args:
        word = args.pop(0)
        negate = word.startswith("!")
        name = word.lstrip("!").lower()
        if name in _MATCH_WITHOUT_ARGUMENT:
            criteria.append((negate, name, ""))
        elif name in _MATCH_WITH_ARGUMENT:
            if not args:
                raise SshConfigError(f"{line.where}: Match {name} needs an argument")
            criteria.append((negate, name, args.pop(0)))
        else:
            known = ", ".join(sorted(_MATCH_WITH_ARGUMENT | _MATCH_WITHOUT_ARGUMENT))
            raise SshConfigError(
                f"{line.where}: unsupported Match criterion {word!r} "
                f"(OpenSSH refuses it too; known: {known})"
            )
    if not criteria:
        raise SshConfigError(f"{line.where}: Match without criteria")
    if any(name == "all" for _, name, _ in criteria) and not all(
        name in ("all", "canonical", "final") for _, name, _ in criteria
    ):
        raise SshConfigError(f"{line.where}: Match all cannot be combined with {line.raw!r}")
    return criteria


def host_line_matches(patterns: tuple[str, ...], host: str) -> bool:
    """A `Host` line: some pattern matches and no negated one does (case-sensitive)."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _glob_matches(pattern[1:] if negated else pattern, host):
            if negated:
                return False
            matched = True
    return matched


def pattern_list_matches(patterns: str, value: str, *, lower: bool) -> bool:
    """OpenSSH's `match_pattern_list`: comma-separated, `!` negates; `lower` lower-cases
    the patterns (as `Match host` does)."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if _glob_matches(pattern.lower() if lower else pattern, value):
            if negated:
                return False
            matched = True
    return matched


def final_hostname(config: HostConfig, host: str) -> str:
    """The host name dialled: `HostName` with `%h` expanded, else `host`; lower-cased."""
    return _expanded_hostname(config, host).lower()


def expand_tokens(text: str, config: HostConfig, ctx: _Context, line: ConfigLine) -> str:
    """`%` tokens of a `Match exec` line, each value shell-quoted."""
    values = token_values(config, _match_host(config, ctx), ctx.original_host, ctx.local_user)
    return expand_percent(text, values, line.where, quote=True)


def token_values(
    config: HostConfig, host: str, original_host: str, local_user: str
) -> dict[str, str]:
    """The `%` tokens OpenSSH offers in `Match exec` and `ProxyCommand`."""
    return {
        "h": host,
        "n": original_host,
        "p": config.get("port") or "22",
        "r": config.get("user") or local_user,
        "u": local_user,
        "d": str(Path("~").expanduser()),
        "l": socket.gethostname().split(".")[0],
        "L": socket.gethostname().split(".")[0],
    }


def expand_percent(text: str, values: dict[str, str], where: str, *, quote: bool) -> str:
    """Replace `%x` tokens; an unknown token is an error, as in OpenSSH."""

    def replace(found: re.Match[str]) -> str:
        token = found.group(1)
        if token == "%":
            return "%"
        if token not in values:
            raise SshConfigError(f"{where}: unknown token %{token}")
        return shlex.quote(values[token]) if quote else values[token]

    return re.sub(r"%(.)", replace, text)


def run_match_exec(command: str) -> bool:
    """Run a `Match exec` command as OpenSSH does (`/bin/sh -c`), without our stdin."""
    try:
        completed = subprocess.run(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def _criterion_matches(name: str, argument: str, config: HostConfig, ctx: _Context) -> bool:
    if name == "host":
        return pattern_list_matches(argument, _match_host(config, ctx), lower=True)
    if name == "originalhost":
        return pattern_list_matches(argument, ctx.original_host, lower=True)
    if name == "user":
        return pattern_list_matches(argument, config.get("user") or ctx.local_user, lower=False)
    return pattern_list_matches(argument, ctx.local_user, lower=False)  # localuser


def _match_host(config: HostConfig, ctx: _Context) -> str:
    # readconf.c match_cfg_line(): the final name in the final pass, else HostName with
    # %h expanded (not yet lower-cased), else the name as given.
    return ctx.host if ctx.final else _expanded_hostname(config, ctx.host)


def _expanded_hostname(config: HostConfig, host: str) -> str:
    configured = config.get("hostname")
    if configured is None:
        return host
    return configured.replace("%%", "\0").replace("%h", host).replace("\0", "%")


def _glob_matches(pattern: str, value: str) -> bool:
    regex = ".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _local_user() -> str:
    import getpass

    return getpass.getuser()
