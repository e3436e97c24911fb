"""Benchmark 5 (issue 4): HTTP requests to MLflow for 10,000 metric points.

    .venv/bin/python bench/bench_mlflow.py [--points 10000] [--keys 10]

Starts a real `mlflow server` on 127.0.0.1 (SQLite backend, in a temporary directory),
logs `--points` points (`--keys` keys x points/keys steps, as a training loop writes them)
through `flows.tracking.Tracker.log_metrics` to one run, and counts the requests in the
server's own access log (uvicorn) during that call, next to `Tracker.requests`. Then
reads the metric histories back to check that every point arrived, and, for scale,
times a few hundred one-point `MlflowClient.log_metric` calls (one request each).
The server is stopped at the end. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from benchlib import ROOT, Report

from flows.metrics import MetricPoint
from flows.tracking import BATCH_LIMIT, Tracker

START_TIMEOUT = 180.0  # a first start migrates the database: ~70 s on a busy 2-core box
NAIVE_CALLS = 100
_REQUEST = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()
    report = Report(
        "Issue 4 · MLflow requests for 10,000 metric points",
        f".venv/bin/python bench/bench_mlflow.py --points {args.points} --keys {args.keys}",
    )
    with tempfile.TemporaryDirectory(prefix="hpcfleet-bench-mlflow-") as scratch:
        log = Path(scratch) / "server.log"
        port = _free_port()
        server, startup = _start_server(Path(scratch), port, log)
        try:
            _measure(report, f"http://127.0.0.1:{port}", log, args.points, args.keys, startup)
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    print(report.markdown())


def _measure(report: Report, uri: str, log: Path, points: int, keys: int, startup: float) -> None:
    tracker = Tracker(uri)
    experiment = tracker.experiment_id("bench")
    run_id = tracker.start_run(experiment, "bench-metrics", {"hpcfleet.bench": "1"})
    steps = points // keys
    batch = [
        MetricPoint(f"metric_{k}", float(step) / (k + 1), step, 1_700_000_000_000 + step)
        for step in range(steps)
        for k in range(keys)
    ]
    before = _requests(log)
    started = time.perf_counter()
    tracker.log_metrics(run_id, batch)
    seconds = time.perf_counter() - started
    time.sleep(0.5)  # let the access log catch up
    during = _requests(log) - before
    stored = sum(len(tracker.client.get_metric_history(run_id, f"metric_{k}")) for k in range(keys))

    naive_run = tracker.start_run(experiment, "bench-naive", {"hpcfleet.bench": "1"})
    before_naive = _requests(log)
    started = time.perf_counter()
    for step in range(NAIVE_CALLS):
        tracker.client.log_metric(naive_run, "naive", float(step), step=step)
    naive = (time.perf_counter() - started) / NAIVE_CALLS
    time.sleep(0.5)
    naive_requests = sum((_requests(log) - before_naive).values())

    total = sum(during.values())
    report.header = ("measure", "value")
    report.row("points logged (keys x steps)", f"{len(batch)} ({keys} x {steps})")
    report.row("HTTP requests in the server's access log", f"{total} ({_describe(during)})")
    report.row("`Tracker.requests`", tracker.requests)
    report.row("points read back from the server", stored)
    report.row("time for `log_metrics`", f"{seconds:.2f} s")
    report.row(
        f"for scale: one `log_metric` call per point ({NAIVE_CALLS} calls, "
        f"{naive_requests} requests)",
        f"{naive * 1000:.1f} ms each: {points} points would take ≈ {naive * points:.0f} s",
    )
    report.row("server start-up (first start creates the database)", f"{startup:.0f} s")
    report.target(
        f"≤ 15 requests for {points} points",
        f"{total} (batches of ≤ {BATCH_LIMIT})",
        total <= 15 and stored == len(batch),
    )
    report.notes += [
        "The server is `mlflow server --backend-store-uri sqlite:///... --host 127.0.0.1 "
        "--workers 1`; requests are counted from its uvicorn access log, so retries or "
        "extra look-ups by the client would show.",
    ]


def _start_server(directory: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    mlflow = ROOT / ".venv" / "bin" / "mlflow"
    command = [
        str(mlflow if mlflow.exists() else "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
        "--default-artifact-root", str(directory / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    deadline = started + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    sys.exit(f"mlflow server did not answer within {START_TIMEOUT:.0f} s")


def _requests(log: Path) -> Counter[str]:
    """Requests so far in the access log, by "METHOD path"."""
    counts: Counter[str] = Counter()
    for match in _REQUEST.finditer(log.read_text(errors="replace")):
        counts[f"{match.group(1)} {match.group(2)}"] += 1
    return counts


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{n} × `{what}`" for what, n in counts.most_common())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
