"""SSH transport: ~/.ssh/config resolution, pinned host keys, one multiplexed
connection per site, streamed transfers, and paramiko errors translated at one boundary.

Modules: `config_file` (read ~/.ssh/config as OpenSSH does), `config` (resolve a route
like `ssh -G`), `hostkeys` (pinned keys, host CAs), `certificates` (OpenSSH host and user
certificates), `identities` (keys, agent, user certificates to offer), `connect` (open a
route), `connection` (the shared per-site connection), `channel` (bounded exec
channels), `transfer` (tar/cat streams), `errors` (paramiko -> sites.errors),
`resolved` (`site show --resolved`).
"""

from __future__ import annotations

from sites.ssh.transport import SshTransport

__all__ = ["SshTransport"]
