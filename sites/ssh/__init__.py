"""SSH transport: ~/.ssh/config resolution, pinned host keys, one multiplexed
connection per site, streamed transfers, and paramiko errors translated at one boundary.

Modules: `config` (resolve a route like `ssh -G`), `hostkeys` (pinned keys), `connect`
(open a route), `connection` (the shared per-site connection), `channel` (bounded exec
channels), `transfer` (tar/cat streams), `errors` (paramiko -> sites.errors).
"""

from __future__ import annotations

from sites.ssh.transport import SshTransport

__all__ = ["SshTransport"]
