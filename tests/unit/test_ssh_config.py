"""Resolving SshSettings against an ~/.ssh/config text (no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from registry.errors import DocumentError
from registry.loading import validate_document
from registry.site import Site, SshSettings
from sites.errors import SiteUnreachable
from sites.ssh.config import SshEndpoint, load_ssh_config, parse_jump_spec, resolve_route
from sites.ssh.config_file import OpenSshConfig, SshConfigError
from sites.ssh.connection import resolve_site_route

CONFIG = """
Host lumi
    HostName lumi.csc.fi
    Port 2200
    User jdoe
    IdentityFile ~/.ssh/id_lumi
    UserKnownHostsFile /etc/hpc/known_hosts /etc/hpc/known_hosts2
    ProxyJump bastion,alice@gate.example.org:2022

Host bastion
    HostName bastion.example.org
    User bob
    IdentityFile /keys/bastion

Host direct
    HostName 10.1.2.3
    ProxyJump none

Host aliased
    HostName 10.9.9.9
    Port 2201
    HostKeyAlias login.cluster
"""


def resolve(settings: SshSettings, config: str = CONFIG) -> tuple[SshEndpoint, list[SshEndpoint]]:
    route = resolve_route(settings, OpenSshConfig.from_text(config), local_user="me")
    return route.target, list(route.jumps)


def test_an_alias_fills_every_unset_field_from_the_config() -> None:
    target, jumps = resolve(SshSettings(host="lumi"))

    assert (target.hostname, target.port, target.user) == ("lumi.csc.fi", 2200, "jdoe")
    assert target.identity_files == (Path("~/.ssh/id_lumi").expanduser(),)
    assert target.known_hosts_files == (
        Path("/etc/hpc/known_hosts"),
        Path("/etc/hpc/known_hosts2"),
    )
    assert [j.hostname for j in jumps] == ["bastion.example.org", "gate.example.org"]


def test_fields_set_in_the_site_win_over_the_config() -> None:
    settings = SshSettings(
        host="lumi",
        port=22,
        user="other",
        identity_file="/keys/site",
        known_hosts="/site/known_hosts",
        proxy_jump=["jump.example.org"],
    )

    target, jumps = resolve(settings)

    assert (target.hostname, target.port, target.user) == ("lumi.csc.fi", 22, "other")
    assert target.identity_files == (Path("/keys/site"),)
    assert target.known_hosts_files == (Path("/site/known_hosts"),)
    assert [(j.hostname, j.port) for j in jumps] == [("jump.example.org", 22)]


def test_each_jump_is_itself_resolved_through_the_config() -> None:
    _, (bastion, gate) = resolve(SshSettings(host="lumi"))

    assert (bastion.name, bastion.hostname, bastion.user) == (
        "bastion",
        "bastion.example.org",
        "bob",
    )
    assert bastion.identity_files == (Path("/keys/bastion"),)
    assert (gate.user, gate.hostname, gate.port) == ("alice", "gate.example.org", 2022)


def test_a_jump_without_its_own_identity_uses_the_sites_key() -> None:
    settings = SshSettings(host="lumi", identity_file="/keys/site")

    _, (_, gate) = resolve(settings)

    assert gate.identity_files == (Path("/keys/site"),)


def test_a_host_unknown_to_the_config_gets_ssh_defaults() -> None:
    target, jumps = resolve(SshSettings(host="cluster.example.org"))

    assert (target.hostname, target.port, target.user) == ("cluster.example.org", 22, "me")
    assert target.identity_files == ()  # the agent is used
    assert target.known_hosts_files[0] == Path("~/.ssh/known_hosts").expanduser()
    assert jumps == []


def test_proxyjump_none_means_a_direct_connection() -> None:
    target, jumps = resolve(SshSettings(host="direct"))

    assert target.hostname == "10.1.2.3"
    assert jumps == []


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [("example.org", None, "example.org"), ("example.org", 2222, "[example.org]:2222")],
)
def test_known_hosts_name_follows_openssh(host: str, port: int | None, expected: str) -> None:
    target, _ = resolve(SshSettings(host=host, port=port))

    assert target.known_hosts_name == expected


def test_host_key_alias_replaces_the_known_hosts_name() -> None:
    target, _ = resolve(SshSettings(host="aliased"))

    assert (target.hostname, target.port) == ("10.9.9.9", 2201)
    assert target.known_hosts_name == "login.cluster"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("host", (None, "host", None)),
        ("user@host", ("user", "host", None)),
        ("user@host:2022", ("user", "host", 2022)),
        ("ssh://user@host:2022", ("user", "host", 2022)),
        ("[::1]:2200", (None, "::1", 2200)),
        ("a@b@host", ("a@b", "host", None)),
    ],
)
def test_parse_jump_spec(spec: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_jump_spec(spec) == expected


def test_a_jump_spec_without_host_is_rejected() -> None:
    with pytest.raises(ValueError, match="names no host"):
        parse_jump_spec("user@")


def test_load_ssh_config_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host x\n    HostName 192.0.2.1\n")

    assert load_ssh_config(path).lookup("x").get("hostname") == "192.0.2.1"


def test_an_unusable_route_is_a_permanent_unreachable(tmp_path: Path) -> None:
    settings = SshSettings.model_construct(host="h", proxy_jump=["user@"])

    with pytest.raises(SiteUnreachable, match="cannot resolve ssh host 'h'") as caught:
        resolve_site_route("lumi", settings, tmp_path / "missing-config")

    assert caught.value.transient is False


# --------------------------------------------------------------------------- names


HOSTILE_NAMES = [
    "x;touch {marker};#",
    "$(touch {marker})",
    "`touch {marker}`",
    "x|touch {marker}",
    "x&&touch {marker}",
    "x\ntouch {marker}",
    "x touch {marker}",
    "-oProxyCommand=touch {marker}",
]


def _match_exec_config(marker: Path) -> OpenSshConfig:
    """A common ~/.ssh/config idiom: pick settings by whether a host answers."""
    ran = marker.with_name("ran")
    text = f'Match exec "test -n %h && touch {ran}"\n    User matched\nHost *\n    Port 22\n'
    return OpenSshConfig.from_text(text)


@pytest.mark.parametrize("template", HOSTILE_NAMES)
@pytest.mark.parametrize("where", ["host", "user", "jump host", "jump user"])
def test_a_hostile_name_never_reaches_match_exec(tmp_path: Path, template: str, where: str) -> None:
    marker = tmp_path / "pwned"
    name = template.format(marker=marker)
    settings = SshSettings.model_construct(
        host=name if where == "host" else "ok",
        user=name if where == "user" else None,
        proxy_jump={"jump host": [f"u@{name}"], "jump user": [f"{name}@gate"]}.get(where, []),
    )

    with pytest.raises(ValueError, match=r"refuses shell metacharacters|starts with '-'"):
        resolve_route(settings, _match_exec_config(marker), local_user="me")

    assert not marker.exists()


def test_a_valid_name_still_runs_match_exec(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    target = resolve_route(SshSettings(host="login.example.org"), _match_exec_config(marker)).target

    assert target.user == "matched"
    assert (tmp_path / "ran").exists()


def test_a_hostile_hostname_in_the_ssh_config_is_not_dialled() -> None:
    config = OpenSshConfig.from_text("Host lumi\n    HostName x;reboot\n")

    with pytest.raises(ValueError, match="HostName of 'lumi'"):
        resolve_route(SshSettings(host="lumi"), config, local_user="me")


@pytest.mark.parametrize(
    ("ssh", "field"),
    [
        ({"host": "x;id>/tmp/f;#"}, "ssh.host"),
        ({"host": "-oProxyCommand=id"}, "ssh.host"),
        ({"host": "h", "user": "$(id)"}, "ssh.user"),
        ({"host": "h", "proxy_jump": ["gate", "u@x|id"]}, "ssh.proxy_jump"),
        ({"host": "h", "proxy_jump": ["gate:22x"]}, "ssh.proxy_jump"),
    ],
)
def test_site_add_refuses_a_name_openssh_would_refuse(ssh: dict[str, object], field: str) -> None:
    document = {
        "name": "lumi",
        "partner": "csc",
        "scheduler": "slurm",
        "ssh": ssh,
        "slurm": {"partitions": [{"name": "gpu"}]},
    }

    with pytest.raises(DocumentError) as caught:
        validate_document(document, Site, source="lumi.yaml")

    assert caught.value.field == field


@pytest.mark.parametrize(
    "ssh",
    [
        {
            "host": "lumi.csc.fi",
            "user": "jdoe",
            "proxy_jump": ["ssh://alice@gate:2022", "[::1]:22"],
        },
        {"host": "fe80::1%eth0", "user": "first.last@REALM"},
    ],
)
def test_ordinary_names_are_accepted(ssh: dict[str, object]) -> None:
    assert SshSettings.model_validate(ssh).host == ssh["host"]


# --------------------------------------------------------------------------- OpenSSH features


def test_an_unknown_match_criterion_is_an_error_naming_the_line() -> None:
    config = OpenSshConfig.from_text("Host *\n  Port 22\nMatch hots lumi\n  User x\n", name="cfg")

    with pytest.raises(SshConfigError, match=r"cfg line 3: unsupported Match criterion 'hots'"):
        config.lookup("lumi")


def test_a_relative_include_is_read_from_the_ssh_directory(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "lumi.conf").write_text("Host lumi\n  HostName lumi.csc.fi\n")
    (tmp_path / "conf.d" / "other.txt").write_text("Host lumi\n  HostName wrong\n")
    config = OpenSshConfig.from_text("Include conf.d/*.conf\n", ssh_dir=tmp_path)

    assert config.lookup("lumi").get("hostname") == "lumi.csc.fi"


def recorder(commands: list[str]) -> Callable[[str], bool]:
    """A `Match exec` runner that records the command lines and says they succeeded."""

    def run(command: str) -> bool:
        commands.append(command)
        return True

    return run


def test_match_exec_gets_each_token_quoted() -> None:
    commands: list[str] = []
    config = OpenSshConfig.from_text(
        'Match exec "probe %h %n %r %p"\n  User x\n', run_exec=recorder(commands)
    )

    entry = config.lookup("lumi*", user="me", port=2200)

    assert commands == ["probe 'lumi*' 'lumi*' me 2200"]
    assert entry.get("user") == "me"  # the site's own user wins, as `ssh -l` does


def test_match_exec_does_not_run_once_the_line_cannot_match() -> None:
    commands: list[str] = []
    config = OpenSshConfig.from_text(
        'Match host other exec "probe"\n  User x\n', run_exec=recorder(commands)
    )

    assert config.lookup("lumi").get("user") is None
    assert commands == []


def test_a_jump_host_with_its_own_jump_host_is_dialled_through_it() -> None:
    config = OpenSshConfig.from_text(
        "Host leonardo\n  HostName login.leonardo.cineca.it\n  ProxyJump inner\n"
        "Host inner\n  HostName inner.cineca.it\n  ProxyJump outer\n"
        "Host outer\n  HostName outer.cineca.it\n  ProxyCommand nc %h %p\n"
    )

    route = resolve_route(SshSettings(host="leonardo"), config, local_user="me")

    assert [hop.hostname for hop in route.hops] == [
        "outer.cineca.it",
        "inner.cineca.it",
        "login.leonardo.cineca.it",
    ]
    assert route.hops[0].proxy_command == "nc outer.cineca.it 22"
    assert route.hops[1].proxy_command is None


def test_a_proxyjump_loop_is_an_error() -> None:
    config = OpenSshConfig.from_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")

    with pytest.raises(ValueError, match="ProxyJump chain longer"):
        resolve_route(SshSettings(host="a"), config, local_user="me")


def test_proxycommand_tokens_are_shell_quoted_once() -> None:
    config = OpenSshConfig.from_text("Host lumi\n  ProxyCommand connect %h %p %r %%\n")

    target = resolve_route(SshSettings(host="lumi", user="j*"), config, local_user="me").target

    assert target.proxy_command == "connect lumi 22 'j*' %"


def test_host_names_are_lower_cased_as_openssh_does() -> None:
    config = OpenSshConfig.from_text("Host LUMI\n  HostName LUMI.CSC.fi\n  User JDoe\n")

    target = resolve_route(SshSettings(host="LUMI"), config, local_user="me").target

    assert (target.hostname, target.user) == ("lumi.csc.fi", "JDoe")


def test_certificate_file_and_identity_agent_come_from_the_config(tmp_path: Path) -> None:
    config = OpenSshConfig.from_text(
        f"Host lumi\n  CertificateFile ~/.ssh/%r-cert.pub\n  IdentityAgent {tmp_path}/%u.sock\n"
    )

    target = resolve_route(SshSettings(host="lumi", user="jdoe"), config, local_user="me").target

    assert target.certificate_files == (Path("~/.ssh/jdoe-cert.pub").expanduser(),)
    assert target.identity_agent == f"{tmp_path}/me.sock"


def test_the_resolved_view_shows_the_jump_chain_and_host_key_policy() -> None:
    from datetime import UTC, datetime

    from sites.ssh.resolved import render_resolved, resolved_connection

    config = OpenSshConfig.from_text(
        "Host leonardo\n  HostName login.leonardo.cineca.it\n  User jdoe\n  ProxyJump inner\n"
        "Host inner\n  HostName inner.cineca.it\n  ProxyJump gate@outer.cineca.it:2022\n"
    )
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM8HrxlyUhlcatX7YGh93FKQ/6xRO5BG/GaJ0zb0j2ZG"
    settings = SshSettings(host="leonardo", host_keys=[host_key])
    route = resolve_route(settings, config, local_user="me")

    text = render_resolved(resolved_connection(settings, route, datetime.now(UTC)))

    assert text.splitlines()[:4] == [
        "host leonardo",
        "hostname login.leonardo.cineca.it",
        "port 22",
        "user jdoe",
    ]
    assert "proxyjump gate@outer.cineca.it:2022,me@inner.cineca.it:22" in text
    assert "identityfile ~/.ssh/id_ed25519 (default)" in text
    assert "hostkey pinned ssh-ed25519 SHA256:9jmBY6qYu7558MZRTZhiOVkOaq9Ew1SwoUiTkPEhzOU" in text


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM8HrxlyUhlcatX7YGh93FKQ/6xRO5BG/GaJ0zb0j2ZG"


@pytest.mark.parametrize(
    ("ssh", "field", "says"),
    [
        ({"host_keys": [ED25519, "ssh-ed25519 AAAA"]}, "ssh.host_keys[1]", "not an ssh-ed25519"),
        ({"host_keys": ["ssh-ed25519 not-base64!"]}, "ssh.host_keys[0]", "not valid base64"),
        ({"host_ca": "ssh-rsa " + ED25519.split()[1]}, "ssh.host_ca", "not an ssh-rsa"),
        ({"host_ca": "-----BEGIN " + "OPENSSH PRIVATE KEY-----"}, "ssh.host_ca", "private key"),
    ],
)
def test_site_add_refuses_host_keys_that_do_not_parse(
    ssh: dict[str, object], field: str, says: str
) -> None:
    document = {
        "name": "leonardo",
        "partner": "cineca",
        "scheduler": "slurm",
        "ssh": {"host": "login.leonardo.cineca.it", **ssh},
        "slurm": {"partitions": [{"name": "boost_usr_prod"}]},
    }

    with pytest.raises(DocumentError, match=says) as caught:
        validate_document(document, Site, source="leonardo.yaml")

    assert caught.value.field == field


def test_the_certificate_fields_are_accepted_and_comments_dropped() -> None:
    settings = SshSettings(
        host="leonardo",
        host_keys=[f"{ED25519} login01", ED25519],
        host_ca=f"{ED25519} smallstep CA",
        certificate_file="~/.ssh/id_ed25519-cert.pub",
    )

    assert settings.host_keys == [ED25519, ED25519]
    assert settings.host_ca == ED25519
