"""Host names, user names and ProxyJump entries as OpenSSH accepts them. Pure.

OpenSSH refuses host and user names with shell metacharacters (`valid_hostname` and
`valid_ruser` in ssh.c, since 9.6) because they are expanded (`%h`, `%r`, `%n`) into
`Match exec` and `ProxyCommand` lines that a shell runs: with `Match exec "nc -z %h 22"`
in ~/.ssh/config, a site whose host is `x;id>/tmp/f;#` would run `id` on whoever
checks it. paramiko expands them without checking, so hpcfleet checks them itself,
when a site is registered and again before every config lookup.
"""

from __future__ import annotations

# ssh.c: valid_hostname() refuses these, whitespace and control characters; we refuse
# them in user names too (valid_ruser's set, plus `$` and `\`).
_SHELL_CHARACTERS = frozenset("'`\"$\\;&<>|(){}")
MAX_NAME_LENGTH = 255


def check_host(value: str, what: str = "host name") -> str:
    """`value` if OpenSSH would accept it as a host name; else a `ValueError` saying why."""
    _check_name(value, what)
    return value


def check_user(value: str, what: str = "user name") -> str:
    """`value` if it is a user name that is safe to expand into a shell command."""
    _check_name(value, what)
    return value


def check_field(name: str, value: object) -> object:
    """Check an `SshSettings` field (`host`, `user` or `proxy_jump`) by the rules above."""
    if name == "host" and isinstance(value, str):
        check_host(value)
    elif name == "user" and isinstance(value, str):
        check_user(value)
    elif name == "proxy_jump" and isinstance(value, list):
        for spec in value:
            parse_jump_spec(str(spec))
    return value


def parse_jump_spec(spec: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump entry `[ssh://][user@]host[:port]` into (user, host, port),
    each checked as OpenSSH would; a `ValueError` names what is wrong."""
    text = spec.strip().removeprefix("ssh://")
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        check_user(user, f"user name in ProxyJump entry {spec!r}")
    port_text: str | None = None
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    if not host:
        raise ValueError(f"ProxyJump entry {spec!r} names no host")
    check_host(host, f"host in ProxyJump entry {spec!r}")
    return user or None, host, None if port_text is None else check_port(port_text, spec)


def check_port(text: str, spec: str) -> int:
    """A port number 1-65535 written in digits only."""
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} in {spec!r} is not a number from 1 to 65535")
    return int(text)


def _check_name(value: str, what: str) -> None:
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with '-' (it would read as an option)")
    for character in value:
        if character in _SHELL_CHARACTERS or character.isspace() or not character.isprintable():
            raise ValueError(
                f"{what} {value!r} contains {character!r}; OpenSSH refuses shell "
                "metacharacters, spaces and control characters in host and user names"
            )
