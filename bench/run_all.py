"""Run the benchmarks and assemble docs/benchmarks.md, the one results document.

    .venv/bin/python bench/run_all.py [--only bench_submit bench_polls ...] [--write]

Runs each `bench/bench_*.py` in turn (a separate process each, one at a time: they
share 2 cores and the sandbox), prints what each prints, and with `--write` replaces
those sections of docs/benchmarks.md, keeping the others (and those of scripts that
failed) as they were. The transfer benchmark (`bench_transfer.py`, slow: 256 MiB x 4
clients x 5 runs) is not run here; its own `--write` updates
docs/benchmarks-transfer.md, whose table is copied in.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
TRANSFER_DOC = ROOT / "docs" / "benchmarks-transfer.md"
# In the document's order; "bench_transfer" is copied from TRANSFER_DOC.
SECTIONS = (
    "bench_submit",
    "bench_logins",
    "bench_polls",
    "bench_transfer",
    "bench_watch_load",
    "bench_mlflow",
    "bench_documents",
    "bench_launcher",
    "bench_cli",
    "bench_login",
    "bench_results",
    "bench_matrix",
    "bench_checkpoint_latency",
)
RUNNABLE = tuple(name for name in SECTIONS if name != "bench_transfer")
TIMEOUT = 1800.0  # bench_matrix collects 9,600 jobs: 7-14 min on 2 shared cores
_MARK = re.compile(r"^<!-- section: (\w+) -->$", re.MULTILINE)

INTRO = """\
# Benchmarks

Results of the scripts in `bench/` (see bench/README.md), measured on the development
machine against the real sandbox (`tests/sandbox/hpc-sandbox`: two SLURM 22.05
clusters and two OpenSSH 9.2 servers on 127.0.0.1) and a real MLflow server on
127.0.0.1. Each section names its command, the machine, the date and the load. The
machine (2 cores) was shared with other work while these ran: the load averages show
how busy it was; the ratios (same machine, same minute, clients taking turns) are
steadier than the absolute times.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=RUNNABLE, default=list(RUNNABLE))
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    sections = _read_sections(DOC.read_text()) if DOC.exists() else {}
    failed = []
    for name in args.only:
        print(f"== {name}", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / f"{name}.py")],
            stdout=subprocess.PIPE, text=True, timeout=TIMEOUT, check=False, cwd=ROOT,
        )  # fmt: skip
        print(result.stdout)
        if result.returncode != 0:
            # Keep the section measured before; go on with the others.
            print(f"{name} failed with exit code {result.returncode}", file=sys.stderr)
            failed.append(name)
            continue
        sections[name] = result.stdout.strip() + "\n"
    if TRANSFER_DOC.exists():
        sections["bench_transfer"] = transfer_section(TRANSFER_DOC)
    if args.write:
        DOC.write_text(render(sections))
        print(f"written to {DOC}", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


def _read_sections(text: str) -> dict[str, str]:
    marks = list(_MARK.finditer(text))
    sections = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(text)
        sections[mark.group(1)] = text[mark.end() : end].strip() + "\n"
    return sections


def render(sections: dict[str, str]) -> str:
    parts = [INTRO, summary(sections)]
    for name in SECTIONS:
        if name in sections:
            parts.append(f"<!-- section: {name} -->\n{sections[name]}")
    return "\n".join(parts)


def summary(sections: dict[str, str]) -> str:
    """One table of every target, from the target tables of the sections."""
    lines = [
        "## Targets at a glance",
        "",
        "| benchmark | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for name in SECTIONS:
        text = sections.get(name)
        if text is None:
            continue
        title = text.splitlines()[0].removeprefix("## ").strip()
        in_targets = False
        for line in text.splitlines():
            if line.startswith("| target | measured | met |"):
                in_targets = True
                continue
            if in_targets:
                if not line.startswith("|"):
                    break
                if line.startswith("| ---"):
                    continue
                lines.append(f"| {title} {line}")
    return "\n".join(lines) + "\n"


def transfer_section(path: Path) -> str:
    """docs/benchmarks-transfer.md as a section, with its targets checked."""
    text = path.read_text()
    lines = text.splitlines()
    body = [line for line in lines[1:] if not line.startswith("# ")]
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    ratios = {
        kind: float(match.group(1))
        for kind in ("upload", "download")
        for line in lines
        if f"{kind}: hpcfleet {'put' if kind == 'upload' else 'get'} |" in line
        and (match := re.search(r"\| ([0-9.]+)x scp \|", line))
    }
    title = "## Issue 3 · 4. 256 MiB upload and download vs scp (`bench_transfer.py`)"
    targets = ["| target | measured | met |", "| --- | --- | --- |"]
    for kind, ratio in ratios.items():
        met = "yes" if ratio >= 0.7 else "**no**"
        targets.append(f"| ≥ 0.7× scp's throughput, {kind} | {ratio:.2f}× | {met} |")
    # The targets go right after the results table, before the notes.
    table_end = max(i for i, line in enumerate(body) if line.startswith("|")) + 1
    out = [
        title,
        "",
        f"Copied from `docs/benchmarks-transfer.md` (written by `bench/bench_transfer.py "
        f"--write`, {written:%Y-%m-%d %H:%M} UTC; load not recorded by that script).",
        *body[:table_end],
        "",
        *targets,
        *body[table_end:],
    ]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    main()
