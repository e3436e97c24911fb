"""Validating a crate with `rocrate-validator` without network access.

The validator resolves the crate's JSON-LD `@context` over HTTP, through its
requests-cache. We seed a cache with the RO-Crate contexts made from local files and
run the validator with `--offline --cache-path`; where we may (root), inside a network
namespace with no network at all (`unshare -n`), so that a fetch we did not foresee
fails the test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ROCRATE_13 = "https://w3id.org/ro/crate/1.3/context"
ROCRATE_11 = "https://w3id.org/ro/crate/1.1/context"
# The four terms whose IRIs changed between the RO-Crate 1.1 and 1.3 contexts (the
# IRIs the validator's Workflow RO-Crate and Workflow Run Crate shapes check).
TERMS_11 = {
    "ComputationalWorkflow": "https://bioschemas.org/ComputationalWorkflow",
    "FormalParameter": "https://bioschemas.org/FormalParameter",
    "input": "https://bioschemas.org/ComputationalWorkflow#input",
    "output": "https://bioschemas.org/ComputationalWorkflow#output",
}


def context_documents() -> dict[str, bytes]:
    """URL -> JSON-LD document. The `rocrate` package ships the 1.3 context; the 1.1
    context is a stand-in made from it with the 1.1 IRIs of `TERMS_11` (these machines
    have no network to fetch the published one)."""
    shipped = resources.files("rocrate").joinpath("data/ro-crate.jsonld").read_bytes()
    stand_in = json.loads(shipped)
    stand_in["@id"] = ROCRATE_11
    stand_in["version"] = "1.1 (offline stand-in)"
    stand_in["@context"].update(TERMS_11)
    return {ROCRATE_13: shipped, ROCRATE_11: json.dumps(stand_in).encode()}


ACCEPT = "application/ld+json, application/json, */*;q=0.1"  # what the validator sends
PROFILE = "workflow-run-crate-0.5"
VALIDATOR = Path(sys.executable).with_name("rocrate-validator")


@dataclass
class Report:
    passed: bool
    issues: list[str]
    command: list[str]


def seed_cache(cache_name: Path) -> None:
    """A requests-cache database holding the JSON-LD contexts, served from local files."""
    from requests.adapters import BaseAdapter, HTTPAdapter
    from requests_cache import CachedSession
    from urllib3 import HTTPResponse

    documents = context_documents()

    class LocalContexts(BaseAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            body = documents[request.url]
            raw = HTTPResponse(
                body=io.BytesIO(body),
                status=200,
                headers={"Content-Type": "application/ld+json"},
                preload_content=False,
                request_url=request.url,
            )
            return HTTPAdapter().build_response(request, raw)

        def close(self) -> None:
            pass

    session = CachedSession(
        cache_name=str(cache_name),
        backend="sqlite",
        expire_after=-1,
        allowable_methods=("GET",),
        allowable_codes=(200, 302, 404),
    )
    session.mount("https://w3id.org/", LocalContexts())
    for url in documents:
        session.get(url, headers={"Accept": ACCEPT}, allow_redirects=True).raise_for_status()
    session.close()


def validate_offline(crate: Path, profile: str = PROFILE) -> Report:
    with tempfile.TemporaryDirectory(prefix="crate-validation-") as tmp:
        cache = Path(tmp) / "http"
        seed_cache(cache)
        out = Path(tmp) / "report.json"
        command = [
            str(VALIDATOR),
            "-y",
            "validate",
            "--no-paging",
            "--offline",
            "--cache-path",
            str(cache),
            "-p",
            profile,
            "-f",
            "json",
            "-o",
            str(out),
            str(crate),
        ]
        if os.geteuid() == 0 and shutil.which("unshare"):
            command = ["unshare", "-n", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if not out.exists():
            return Report(False, [result.stdout[-2000:], result.stderr[-2000:]], command)
        report = json.loads(out.read_text())
    issues = [
        f"{issue.get('check', {}).get('name', '?')}: {issue.get('message', '')}"
        for issue in report.get("issues", [])
    ]
    return Report(bool(report.get("passed")) and result.returncode == 0, issues, command)
