"""Record what the `sites.remote` commands print on the sandbox's site-a (real sshd,
GNU find, openssl) into tests/data/remote/recorded/, for tests/unit/test_remote.py.

    .venv/bin/python tests/data/remote/record.py      # as root, sandbox up; a few seconds

Scenarios: an ordinary tree (with a link, a dash name and a space), an empty one, the
forged-line attack (a directory whose name holds a newline and a fake manifest line),
declared outputs partly missing, and the queue depth.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from sites import remote  # noqa: E402
from tests.sandbox.sandbox import Sandbox  # noqa: E402

OUT = Path(__file__).resolve().parent / "recorded"
BASE = "hpcfleet-record-remote"
FORGED = "x\n5 " + "0" * 64 + " ../other-stage/model.bin"


def main() -> None:
    sandbox = Sandbox()
    site = sandbox.site("site-a")
    setup = [
        f"rm -rf {BASE}",
        f"mkdir -p {BASE}/tree/sub {BASE}/empty",
        f"printf hello > {BASE}/tree/a.txt",
        f"printf '' > {BASE}/tree/sub/empty.bin",
        f"printf dash > {BASE}/tree/-dash",
        f"printf 'with space' > '{BASE}/tree/sub/it is.txt'",
        f"ln -s a.txt {BASE}/tree/link",
        f"mkdir -p {BASE}/forged/{shlex.quote(FORGED)}",
        f"printf real > {BASE}/forged/{shlex.quote(FORGED)}/f",
        f"printf model > {BASE}/forged/model.bin",
    ]
    sandbox.run_on(site, " && ".join(setup)).check_returncode()
    scenarios = {
        "manifest_tree": remote.manifest_command(f"{BASE}/tree"),
        "manifest_tree_paths": remote.manifest_command(f"{BASE}/tree", ["sub/", "a.txt"]),
        "manifest_empty": remote.manifest_command(f"{BASE}/empty"),
        "manifest_forged": remote.manifest_command(f"{BASE}/forged"),
        "manifest_missing_dir": remote.manifest_command(f"{BASE}/nope"),
        "missing_paths": remote.missing_paths_command(
            f"{BASE}/tree", ["a.txt", "sub/", "nope", "it's gone"]
        ),
        "queue_depth": remote.queue_depth_command(),
        "free_space": remote.free_space_command("."),
    }
    OUT.mkdir(exist_ok=True)
    for name, command in scenarios.items():
        result = sandbox.run_on(site, command)
        (OUT / f"{name}.stdout").write_text(result.stdout)
        (OUT / f"{name}.stderr").write_text(result.stderr)
        (OUT / f"{name}.rc").write_text(f"{result.returncode}\n")
    sandbox.run_on(site, f"rm -rf {BASE}")


if __name__ == "__main__":
    main()
