"""Where a run's files live on a site. Pure path arithmetic, no I/O.

<workdir>/runs/<run_id>/<stage>/
    work/                 the job's cwd; the files that travel with the spec
    outputs/              HPCFLEET_OUTPUTS (kept across attempts: a resumed job
                          finds its checkpoints)
    outputs/<checkpoint>/ HPCFLEET_OUTPUTS of a `for_each: checkpoint` stage's job
    inputs/<needed>/      HPCFLEET_INPUTS/<needed>: outputs of needed stages
    attempt-<n>/logs/<i>.out|.err
    attempt-<n>/metrics/<i>.jsonl    HPCFLEET_METRICS of task i
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class StageLayout:
    workdir: str
    run_id: str
    stage: str

    @property
    def root(self) -> str:
        return posixpath.join(self.workdir, "runs", self.run_id, self.stage)

    @property
    def work(self) -> str:
        return posixpath.join(self.root, "work")

    @property
    def outputs(self) -> str:
        return posixpath.join(self.root, "outputs")

    def checkpoint_outputs(self, checkpoint: str) -> str:
        """The outputs of a `for_each: checkpoint` stage's work on `checkpoint`."""
        return posixpath.join(self.outputs, checkpoint)

    @property
    def inputs(self) -> str:
        return posixpath.join(self.root, "inputs")

    def input_of(self, needed_stage: str) -> str:
        return posixpath.join(self.inputs, needed_stage)

    def attempt_dir(self, attempt: int) -> str:
        return posixpath.join(self.root, f"attempt-{attempt}")

    def logs(self, attempt: int) -> str:
        return posixpath.join(self.attempt_dir(attempt), "logs")

    def metrics(self, attempt: int) -> str:
        return posixpath.join(self.attempt_dir(attempt), "metrics")

    def metrics_file(self, attempt: int, index: int) -> str:
        return posixpath.join(self.metrics(attempt), f"{index}.jsonl")
