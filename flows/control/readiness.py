"""Whether a piece of the control plane answers, over HTTP (standard library only)."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from flows.control.pieces import worker_name
from flows.control.plan import ControlPlaneConfig, Plan


def http_get(
    url: str, *, body: Mapping[str, Any] | None = None, timeout: float = 3.0
) -> bytes | None:
    """The body of a 2xx answer to GET (or POST of JSON `body`); None otherwise."""
    headers = {"Accept": "application/json"}
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth and "/api/" in url:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read()  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def probe(piece: str, plan: Plan, config: ControlPlaneConfig, worker_pid: int | None) -> bool:
    """Whether `piece` answers (the worker: whether the one started as `worker_pid` has
    registered with its pool)."""
    if piece == "prefect":
        return http_get(f"{plan.prefect_api}/health") is not None
    if piece == "mlflow":
        return http_get(f"{plan.mlflow_uri}/health") is not None
    if piece == "dashboard":
        return http_get(f"{plan.dashboard_url}/_stcore/health") is not None
    if worker_pid is None:
        return False
    answer = http_get(f"{plan.prefect_api}/work_pools/{config.work_pool}/workers/filter", body={})
    try:
        workers = json.loads(answer) if answer else []
    except ValueError:
        return False
    return any(
        w.get("name") == worker_name(worker_pid) and w.get("status") == "ONLINE" for w in workers
    )
