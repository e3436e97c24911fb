"""MLflow bookkeeping of a run: one parent run per hpcfleet run, one child per stage
attempt and array value, tagged as INTERFACE.md says. MLflow errors are translated
into `TrackingError` at this boundary.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from flows.metrics import MetricPoint, key_problem
from registry.errors import HpcfleetError
from registry.owner_only import private_dir, private_sqlite

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

BATCH_LIMIT = 1000  # MLflow's cap on metrics per log_batch request
PARENT_RUN_TAG = "mlflow.parentRunId"


class TrackingError(HpcfleetError):
    """The MLflow tracking server or store failed."""


@contextmanager
def _mlflow_errors(action: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        transient = code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")
        raise TrackingError(f"MLflow: cannot {action}: {exc.message}", transient=transient) from exc
    except OSError as exc:
        raise TrackingError(f"MLflow: cannot {action}: {exc}", transient=True) from exc


class Tracker:
    """A thin, thread-safe wrapper over `MlflowClient` for one tracking URI."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        # A local store and artifact directory are created owner-only (MLflow would use
        # the umask): they hold every partner's results and job logs. What cannot be
        # created here, MLflow reports in its own words.
        with suppress(OSError):
            private_sqlite(tracking_uri)
            if artifact_root is not None and artifact_root.startswith("file:"):
                private_dir(Path(unquote(urlparse(artifact_root).path)))
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        self.requests = 0  # metric-logging requests sent (for benchmarks)
        self.calls: Counter[str] = Counter()  # every request sent, by client method

    def experiment_id(self, name: str) -> str:
        with _mlflow_errors(f"open experiment {name!r}"):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return str(experiment.experiment_id)
            location = None
            if self.artifact_root is not None:
                location = f"{self.artifact_root.rstrip('/')}/{name}"
            return str(self.client.create_experiment(name, artifact_location=location))

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        parent: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        all_tags = dict(tags)
        if parent is not None:
            all_tags[PARENT_RUN_TAG] = parent
        with _mlflow_errors(f"start run {name!r}"):
            run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
            self.calls["create_run"] += 1
            run_id = str(run.info.run_id)
            if params:
                from mlflow.entities import Param

                self.calls["log_batch"] += 1
                self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            return run_id

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.calls["log_batch"] += 1
        with _mlflow_errors("set tags"):
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        """Log points in batches of at most 1,000 (one request each). A key MLflow would
        refuse is skipped with a warning: one bad key must not lose the whole batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for p in points:
            problem = key_problem(p.key)
            if problem:
                log.warning("metric %r skipped: MLflow takes %s", p.key[:100], problem)
                continue
            metrics.append(Metric(p.key, p.value, p.timestamp_ms or now, p.step))
        with _mlflow_errors("log metrics"):
            for start in range(0, len(metrics), BATCH_LIMIT):
                self.client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])
                self.requests += 1
                self.calls["log_batch"] += 1

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        self.calls["log_artifacts"] += 1
        with _mlflow_errors("log artifacts"):
            self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
        self.calls["log_artifact"] += 1
        with _mlflow_errors("log an artifact"):
            self.client.log_artifact(run_id, str(local_file), artifact_path)

    def finish(self, run_id: str, status: str) -> None:
        """End a run: status is FINISHED, FAILED or KILLED."""
        self.calls["set_terminated"] += 1
        with _mlflow_errors("end a run"):
            self.client.set_terminated(run_id, status=status)

    def children(self, experiment_id: str, hpcfleet_run_id: str) -> list[Any]:
        return self.search(experiment_id, f"tags.`hpcfleet.run_id` = '{hpcfleet_run_id}'")

    def search(self, experiment_id: str, filter_string: str) -> list[Any]:
        """Runs of the experiment matching `filter_string` (made of values we chose)."""
        self.calls["search_runs"] += 1
        with _mlflow_errors("search runs"):
            return list(
                self.client.search_runs(
                    [experiment_id], filter_string=filter_string, max_results=5000
                )
            )


MLFLOW_STATUS = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED"}
