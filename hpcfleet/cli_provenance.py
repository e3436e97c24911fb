"""`hpcfleet run provenance` (a Workflow Run RO-Crate of a run) and `hpcfleet lineage`
(what made this file). The work is in `flows.provenance`, `flows.crate` and
`flows.lineage`; heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpcfleet import display
from hpcfleet.common import JsonOption, open_store, settings


def provenance(
    run_id: str,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="A directory, or a FILE.zip (default: ./<run id>-crate).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the run's provenance as a Workflow Run RO-Crate."""
    from flows.crate import write_crate
    from flows.provenance import gather, metrics_from
    from flows.tracking import Tracker
    from sites.driver import DriverPool

    config = settings()
    store = open_store()
    target = out or Path(f"{run_id}-crate")
    pool = DriverPool(config.home / "sites")
    try:
        facts = gather(
            store,
            run_id,
            driver_for=pool.get,
            metrics=metrics_from(Tracker(config.tracking_uri, config.artifact_root)),
        )
    finally:
        pool.close()
    write_crate(facts, target)
    for note in facts.notes:
        display.err.print(f"[yellow]note:[/] {note}")
    print(target)


def lineage(
    target: Annotated[str, typer.Argument(metavar="PATH-OR-SHA256")],
    json: JsonOption = False,
) -> None:
    """What made this file: the stages, sites, jobs and inputs behind it."""
    from flows.lineage import lineage as walk
    from flows.lineage import render

    steps = walk(open_store(), target)
    if json:
        display.print_json([step.as_dict() for step in steps])
        return
    for index, step in enumerate(steps):
        if index:
            print()
        for line in render(step):
            print(line)
