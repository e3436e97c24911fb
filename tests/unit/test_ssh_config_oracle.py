"""OpenSSH is the oracle: what hpcfleet resolves from an ssh config equals `ssh -G`.

Every `# query: HOST [USER [PORT]]` line of `tests/data/ssh_config/*.conf` is resolved
both ways; each field hpcfleet uses must agree (`ssh -G` prints IdentityFile,
CertificateFile, ProxyJump and ProxyCommand as written, the others expanded).
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

import pytest

from registry.site import SshSettings
from sites.ssh.config import jump_specs, resolve_route
from sites.ssh.config_file import OpenSshConfig

DATA = Path(__file__).parent.parent / "data" / "ssh_config"
SSH = shutil.which("ssh")
# What `ssh -G` lists when no IdentityFile applies (OpenSSH 9.x).
DEFAULT_IDENTITIES = [
    f"~/.ssh/id_{name}"
    for name in ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss", "dsa")
]

pytestmark = pytest.mark.skipif(SSH is None, reason="needs the OpenSSH client (ssh -G)")


def _queries() -> list[tuple[str, str, str | None, int | None]]:
    found = []
    for path in sorted(DATA.glob("*.conf")):
        for line in path.read_text().splitlines():
            if line.startswith("# query:"):
                host, *rest = line.removeprefix("# query:").split()
                user = rest[0] if rest else None
                port = int(rest[1]) if len(rest) > 1 else None
                found.append((path.name, host, user, port))
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus with `@DIR@` pointing at its copy (Include needs absolute paths:
    relative ones are relative to the real ~/.ssh)."""
    copy = tmp_path_factory.mktemp("ssh_config")
    for source in DATA.rglob("*"):
        if source.is_file():
            target = copy / source.relative_to(DATA)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source.read_text().replace("@DIR@", str(copy)))
    return copy


def ssh_g(config: Path, host: str, user: str | None, port: int | None) -> dict[str, list[str]]:
    """`ssh -G` as {option: [values]} (an option printed several times has several)."""
    command = [str(SSH), "-F", str(config), "-G"]
    command += ["-l", user] if user else []
    command += ["-p", str(port)] if port else []
    completed = subprocess.run(
        [*command, host], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True
    )
    options: dict[str, list[str]] = {}
    for line in completed.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, []).append(value)
    return options


def hpcfleet_view(
    config: Path, host: str, user: str | None, port: int | None
) -> dict[str, list[str]]:
    """The same fields, from hpcfleet's resolution of a site with `host`/`user`/`port`."""
    local_user = getpass.getuser()
    parsed = OpenSshConfig.from_path(config)
    target = resolve_route(
        SshSettings(host=host, user=user, port=port), parsed, local_user=local_user
    ).target
    entry = parsed.lookup(host, user=user, port=port, local_user=local_user)
    view = {
        "hostname": [target.hostname],
        "port": [str(target.port)],
        "user": [target.user],
        "identityfile": entry.all("identityfile") or DEFAULT_IDENTITIES,
        "userknownhostsfile": [" ".join(str(p) for p in target.known_hosts_files)],
    }
    optional = {
        "certificatefile": entry.all("certificatefile"),
        "proxyjump": [",".join(jump_specs(entry))],
        # As written (ssh -G does not expand it); not at all when `none` or jumped over.
        "proxycommand": [entry.get("proxycommand") or "" if target.proxy_command else ""],
        "identityagent": [target.identity_agent or ""],
    }
    view.update({key: values for key, values in optional.items() if any(values)})
    return view


@pytest.mark.parametrize(("name", "host", "user", "port"), _queries())
def test_hpcfleet_resolves_what_openssh_resolves(
    corpus: Path, name: str, host: str, user: str | None, port: int | None
) -> None:
    ours = hpcfleet_view(corpus / name, host, user, port)
    theirs = ssh_g(corpus / name, host, user, port)

    assert ours == {key: theirs.get(key, []) for key in ours}
    for key in ("certificatefile", "proxyjump", "proxycommand", "identityagent"):
        assert (key in ours) == (key in theirs), key


def test_the_corpus_exercises_each_feature() -> None:
    text = "\n".join(p.read_text() for p in DATA.rglob("*.conf"))
    for feature in ("Include", "Match exec", "originalhost", "Match final", "ProxyCommand"):
        assert feature in text
