"""Which environment each piece of the control plane gets (`flows.control.environment`):
every credential reaches only the piece that needs it. Canary values stand for the
secrets; the operator's environment holds them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.control.environment import for_piece
from flows.control.plan import PIECES, ControlPlaneConfig, Plan

REGISTRY_PW = "canary-registry-pw"
PREFECT_PW = "canary-prefect-pw"
MLFLOW_PW = "canary-mlflow-pw"
S3_KEY_ID = "canary-s3-key-id"
S3_SECRET = "canary-s3-secret"
CANARIES = {
    "registry": REGISTRY_PW,
    "prefect": PREFECT_PW,
    "mlflow": MLFLOW_PW,
    "s3 key id": S3_KEY_ID,
    "s3 secret": S3_SECRET,
}
# Which secrets each piece needs, and nothing more.
NEEDS = {
    "prefect": {"prefect"},
    "mlflow": {"mlflow", "s3 key id", "s3 secret"},
    "worker": {"registry"},
    "dashboard": {"registry"},
}


@pytest.fixture
def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    registry = f"postgresql+psycopg://hpcfleet:{REGISTRY_PW}@db:5432/registry"
    prefect = f"postgresql+asyncpg://prefect:{PREFECT_PW}@db:5432/prefect"
    mlflow = f"postgresql+psycopg://mlflow:{MLFLOW_PW}@db:5432/mlflow"
    # What the operator who types `hpcfleet server up` has in their environment.
    operator = {
        "HPCFLEET_DATABASE_URL": registry,
        "HPCFLEET_PREFECT_DATABASE_URL": prefect,
        "HPCFLEET_MLFLOW_DATABASE_URL": mlflow,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "PGPASSWORD": REGISTRY_PW,
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "PATH": "/usr/bin:/bin",
    }
    for name, value in operator.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HPCFLEET_CONTROL_PLANE", raising=False)
    config = ControlPlaneConfig(
        home=tmp_path, store_url=registry, prefect_database_url=prefect,
        mlflow_database_url=mlflow, mlflow_artifacts="s3://bucket/mlflow")
    return {piece: for_piece(piece, config, Plan()) for piece in PIECES}


def test_each_piece_gets_only_the_secrets_it_needs(
    environments: dict[str, dict[str, str]],
) -> None:
    held = {
        piece: {what for what, canary in CANARIES.items()
                if any(canary in value for value in env.values())}
        for piece, env in environments.items()
    }
    assert held == NEEDS


def test_each_piece_finds_its_own_secret_where_it_reads_it(
    environments: dict[str, dict[str, str]],
) -> None:
    prefect, mlflow, worker = (environments[p] for p in ("prefect", "mlflow", "worker"))
    assert PREFECT_PW in prefect["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert MLFLOW_PW in mlflow["MLFLOW_BACKEND_STORE_URI"]
    assert (mlflow["AWS_ACCESS_KEY_ID"], mlflow["AWS_SECRET_ACCESS_KEY"]) == (S3_KEY_ID, S3_SECRET)
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"  # not a secret
    assert REGISTRY_PW in worker["HPCFLEET_DATABASE_URL"]
    assert worker["PREFECT_API_URL"] == Plan().prefect_api
    assert worker["MLFLOW_TRACKING_URI"] == Plan().mlflow_uri


def test_only_the_worker_is_marked_as_the_shared_control_plane(
    environments: dict[str, dict[str, str]],
) -> None:
    marked = {piece for piece, env in environments.items() if env.get("HPCFLEET_CONTROL_PLANE")}
    assert marked == {"worker"}
    assert environments["worker"]["HPCFLEET_CONTROL_PLANE"] == "1"
