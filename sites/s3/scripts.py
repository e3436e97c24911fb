"""The shell scripts sites run to move files through signed S3 URLs. Pure rendering;
every path and URL is shell-quoted. Scripts go to `bash -s` on stdin, so signed URLs
never appear in a command line, a process list or an error message. Paths come from a
site's manifest: each must be a normalised relative path (`sites.remote`), and goes in
as `./path`, so that none reads as an option or as `-` (stdin)."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Mapping

from sites.remote import safe_relative_path
from sites.s3.handoff import PART_SIZE, FileUpload

_MIB = 1024 * 1024
CURL = "curl --fail --silent --show-error --retry 3 --retry-delay 2"


def render_upload(directory: str, uploads: Iterable[FileUpload]) -> str:
    """Upload each file; print `PART <file index> <part number> <etag>` per multipart part."""
    lines = [
        "set -euo pipefail",
        f"cd {shlex.quote(directory)}",
        "part=$(mktemp)",
        "trap 'rm -f \"$part\"' EXIT",
    ]
    for index, upload in enumerate(uploads):
        path = _local_path(upload.path)
        if upload.put_url is not None:
            lines.append(f"{CURL} -X PUT -T {path} -o /dev/null {shlex.quote(upload.put_url)}")
            continue
        blocks = PART_SIZE // _MIB
        for number, url in enumerate(upload.part_urls, start=1):
            lines.append(
                f'dd if={path} of="$part" bs=1M skip={(number - 1) * blocks} count={blocks} '
                "status=none"
            )
            lines.append(
                f'etag=$({CURL} -X PUT -T "$part" -D - -o /dev/null {shlex.quote(url)} '
                "| tr -d '\\r' | awk 'tolower($1)==\"etag:\" {print $2}')"
            )
            lines.append(f'printf "PART {index} {number} %s\\n" "$etag"')
    return "\n".join(lines) + "\n"


def parse_part_etags(stdout: str) -> dict[int, dict[int, str]]:
    """{file index: {part number: etag}} from the upload script's output."""
    etags: dict[int, dict[int, str]] = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == "PART" and fields[3]:
            etags.setdefault(int(fields[1]), {})[int(fields[2])] = fields[3]
    return etags


def render_download(directory: str, urls: Mapping[str, str]) -> str:
    """Fetch each relative path from its signed URL into `directory`."""
    lines = [
        "set -euo pipefail",
        "umask 077",
        f"mkdir -p -- {shlex.quote(directory)}",
        f"cd {shlex.quote(directory)}",
    ]
    parents = sorted({posixpath.dirname(p) for p in urls} - {""})
    if parents:
        lines.append("mkdir -p -- " + " ".join(_local_path(p) for p in parents))
    for path, url in sorted(urls.items()):
        lines.append(f"{CURL} -o {_local_path(path)} {shlex.quote(url)}")
    return "\n".join(lines) + "\n"


def _local_path(path: str) -> str:
    """`./path`, quoted; a path that is not normalised and relative is a `ValueError`."""
    if safe_relative_path(path) != path:
        raise ValueError(f"refusing path {path!r}: not a normalised relative path")
    return shlex.quote(f"./{path}")
