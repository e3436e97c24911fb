"""Benchmark: `run list` with one stored 20,000-value run (security issue, finding 5).

    .venv/bin/python bench/bench_documents.py [--values 20000] [--runs 50] [--rounds 3]

Builds a throw-away store (SQLite, in a temporary HPCFLEET_HOME) holding one run whose
stage has a `--values`-value array and `--runs` ordinary runs, then measures:

1. the store and validation work of `run list`: `Store.open` + `scan_runs()` in this
   process (median of `--rounds`), which is what the CLI does after its imports;
2. validating that big spec once (`RunRecord.spec`, as `run show` does), and the old
   quadratic uniqueness check on a quarter of the values, extrapolated (x16);
3. the CLI's wall time, `python -m hpcfleet run list --json` as a subprocess, and the
   cost of its imports alone (`python -c "import hpcfleet.cli"`), which dominates.

Needs no sandbox; touches nothing outside its temporary directory. Prints a markdown
section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchlib import ROOT, Report

from registry.partner import Partner
from registry.runspec import RunSpec
from registry.site import Site
from registry.store import Store

TARGET_SECONDS = 0.2


def spec(name: str, values: int) -> RunSpec:
    stage: dict[str, object] = {"name": "eval", "site": "site-a", "command": ["echo", "{stage}"]}
    if values:
        stage["array"] = {"lang": [f"v{i}" for i in range(values)]}
        stage["command"] = ["echo", "{lang}"]
    return RunSpec.model_validate({"name": name, "stages": [stage]})


def populate(url: str, values: int, runs: int) -> str:
    store = Store.open(url)
    store.put_partner(Partner(id="bench", name="Bench"))
    site = {"name": "site-a", "partner": "bench", "scheduler": "local"}
    store.put_site(Site.model_validate(site), "bench")
    for index in range(runs):
        store.create_run(f"small{index:03d}", spec("small", 0), "bench")
    store.create_run("big00001", spec("big", values), "bench")
    store.close()
    return "big00001"


def timed(action: Callable[[], object], rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def store_work(url: str) -> int:
    store = Store.open(url)
    try:
        return len(store.scan_runs().records)
    finally:
        store.close()


def old_uniqueness_seconds(values: int) -> float:
    """The check every read used to run: `texts.count(t)` for each value (O(n^2)),
    timed on a quarter of the values and scaled by 16."""
    texts = [f"v{i}" for i in range(values // 4)]
    started = time.perf_counter()
    sorted({t for t in texts if texts.count(t) > 1})
    return (time.perf_counter() - started) * 16


def cli_seconds(env: dict[str, str], args: list[str], rounds: int) -> tuple[float, list[float]]:
    def run() -> None:
        subprocess.run(args, env=env, cwd=ROOT, check=True, capture_output=True)

    return timed(run, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report = Report(
        title=f"Security · 5. `run list` with one stored {args.values:,}-value run",
        command=f".venv/bin/python bench/bench_documents.py --values {args.values} "
        f"--runs {args.runs} --rounds {args.rounds}",
        header=("measure", "median", "runs (s)"),
    )
    with tempfile.TemporaryDirectory(prefix="hpcfleet-bench-docs-") as home:
        url = f"sqlite:///{home}/registry.db"
        big = populate(url, args.values, args.runs)
        work, work_runs = timed(lambda: store_work(url), args.rounds)
        report.row(
            f"store + validation work of `run list` ({args.runs + 1} runs)",
            f"{work * 1000:.0f} ms",
            ", ".join(f"{t:.3f}" for t in work_runs),
        )
        store = Store.open(url)
        spec_time, spec_runs = timed(lambda: store.get_run(big).spec, args.rounds)
        store.close()
        report.row(
            f"validating the {args.values:,}-value spec once (`run show`, the engine)",
            f"{spec_time * 1000:.0f} ms",
            ", ".join(f"{t:.3f}" for t in spec_runs),
        )
        old = old_uniqueness_seconds(args.values)
        report.row("for scale: the old O(n²) uniqueness check on those values", f"{old:.1f} s", "")
        env = {**os.environ, "HPCFLEET_HOME": home, "PREFECT_HOME": f"{home}/prefect"}
        env.pop("HPCFLEET_DATABASE_URL", None)
        python = [sys.executable]
        cli, cli_runs = cli_seconds(env, [*python, "-m", "hpcfleet", "run", "list", "--json"], 3)
        report.row(
            "CLI wall time, `hpcfleet run list --json` (subprocess)",
            f"{cli:.2f} s",
            ", ".join(f"{t:.2f}" for t in cli_runs),
        )
        imports, import_runs = cli_seconds(env, [*python, "-c", "import hpcfleet.cli"], 3)
        report.row(
            "of which imports alone (`python -c 'import hpcfleet.cli'`)",
            f"{imports:.2f} s",
            ", ".join(f"{t:.2f}" for t in import_runs),
        )
    report.target(
        f"≤ {TARGET_SECONDS} s of store/validation work for `run list`",
        f"{work * 1000:.0f} ms",
        work <= TARGET_SECONDS,
    )
    report.notes.append(
        "`run list` no longer validates specs: `RunRecord.spec` is validated when first "
        "asked for (`run show`, the engine), and the array checks are linear (a Counter, "
        "not `list.count` per value). The CLI's wall time is mostly its imports (Prefect, "
        "MLflow, pydantic models; no bytecode cache on this machine, see "
        "shared/notes/facts.md), which another change cuts; the difference between the "
        "two CLI rows is the command's own work, store open included."
    )
    print(report.markdown())


if __name__ == "__main__":
    main()
