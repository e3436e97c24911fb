"""Writing a run's provenance as a Workflow Run RO-Crate (profile 0.5).

    ro-crate-metadata.json
    run.yaml                      the run spec (the ComputationalWorkflow; secrets masked)
    files/<path>                  the files that travelled with the spec (sha256)
    scripts/<stage>/<site>-attempt-<n>.sh   each attempt's batch script on each site
    manifests/<stage>/<site>.json each stage's outputs on each site: path, size, sha256

One CreateAction for the run (its instrument is the spec), and one per job (a stage
attempt on one site, or an array cell): its object is the manifests of the outputs it
read, its result the manifest of the outputs it wrote, so every input links to the
output of the stage that made it. Data never goes into the crate: manifests do.
"""

from __future__ import annotations

import json
import logging
import tempfile
from hashlib import sha256
from pathlib import Path
from typing import Any

import yaml

from flows.context import RunContext
from flows.crate_entities import (
    PROFILES,
    context_entities,
    job_id,
    manifest_path,
    ref,
    script_path,
    single_values,
)
from flows.provenance import RunFacts, gather, metrics_from
from flows.redaction import masked_env
from registry.errors import HpcfleetError
from registry.records import RunRecord

log = logging.getLogger(__name__)

MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
RO_CRATE_VERSION = "1.1"  # what the Workflow Run Crate 0.5 profile builds on
WFRUN_TERMS = {
    "ContainerImage": "https://w3id.org/ro/terms/workflow-run#ContainerImage",
    "SIFImage": "https://w3id.org/ro/terms/workflow-run#SIFImage",
    "containerImage": "https://w3id.org/ro/terms/workflow-run#containerImage",
    "environment": "https://w3id.org/ro/terms/workflow-run#environment",
}


def write_crate(facts: RunFacts, out: Path) -> Path:
    """Write the crate to directory `out`, or to a zip file when `out` ends in .zip."""
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_terms.update(WFRUN_TERMS)
    with tempfile.TemporaryDirectory(prefix="hpcfleet-crate-") as tmp:
        staged = _stage_files(facts, Path(tmp))
        for relative, properties in staged.items():
            crate.add_file(Path(tmp) / relative, relative, properties=properties)
        for entity in context_entities(facts, staged):
            crate.add_jsonld(entity)
        _describe_root(crate, facts, staged)
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            crate.write_zip(out)
        else:
            crate.write(out)
    return out


def _stage_files(facts: RunFacts, root: Path) -> dict[str, dict[str, Any]]:
    """Write the crate's files under `root`; {relative path: entity properties}."""
    staged: dict[str, dict[str, Any]] = {}

    def put(relative: str, content: bytes, properties: dict[str, Any]) -> None:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        staged[relative] = {
            "contentSize": str(len(content)),
            "sha256": sha256(content).hexdigest(),
            **properties,
        }

    put("run.yaml", _spec_yaml(facts).encode(), single_values(_workflow_properties(facts)))
    for path, (content, _mode) in sorted(facts.files.items()):
        put(f"files/{path}", content, {"name": path, "description": "travelled with the spec"})
    for (stage, attempt, site), script in sorted(facts.scripts.items()):
        put(
            script_path(stage, attempt, site),
            script.encode(),
            {
                "name": f"batch script of {stage} attempt {attempt} on {site}",
                "encodingFormat": "text/x-shellscript",
            },
        )
    for (stage, site), document in sorted(_manifest_documents(facts).items()):
        put(
            manifest_path(stage, site),
            json.dumps(document, indent=1).encode(),
            {
                "name": f"outputs of {stage} on {site}",
                "encodingFormat": "application/json",
                "description": f"{len(document['files'])} files; residency: "
                + (document["residency"] or "none"),
                "exampleOfWork": ref(f"#output-{stage}"),
            },
        )
    return staged


def _spec_yaml(facts: RunFacts) -> str:
    document = facts.run.spec.model_dump(mode="json", exclude_defaults=True)
    for stage in document.get("stages", []):
        if "env" in stage:
            stage["env"] = masked_env(stage["env"])
    return yaml.safe_dump(document, sort_keys=False)


def _workflow_properties(facts: RunFacts) -> dict[str, Any]:
    spec = facts.run.spec
    properties: dict[str, Any] = {
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
        "name": spec.name,
        "description": spec.description or f"hpcfleet run spec {spec.name}",
        "encodingFormat": "application/yaml",
        "programmingLanguage": ref("#hpcfleet-runspec"),
        "input": [ref(f"#param-{name}") for name in spec.params],
        "output": [
            ref(f"#output-{stage.name}") for stage in spec.stages if _has_outputs(facts, stage.name)
        ],
        "hasPart": [ref(f"#stage-{stage.name}") for stage in spec.stages],
    }
    git = facts.launch.get("git")
    if git:
        properties["version"] = git["commit"]
        properties["additionalProperty"] = [ref("#git-dirty")]
    return properties


def _has_outputs(facts: RunFacts, stage: str) -> bool:
    return any(entry.stage == stage for entry in facts.outputs)


def _manifest_documents(facts: RunFacts) -> dict[tuple[str, str], dict[str, Any]]:
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in facts.outputs:
        key = (entry.stage, entry.site)
        if key not in documents:
            rules = facts.residency.get(entry.stage, ())
            documents[key] = {
                "run_id": facts.run.run_id,
                "stage": entry.stage,
                "site": entry.site,
                "attempt": entry.attempt,
                "residency": "; ".join(rule.describe() for rule in rules) or None,
                "files": [],
            }
        documents[key]["files"].append(
            {"path": entry.path, "size": entry.size, "sha256": entry.sha256}
        )
    return documents


def _describe_root(crate: Any, facts: RunFacts, staged: dict[str, dict[str, Any]]) -> None:
    run = facts.run
    root = crate.root_dataset
    root["name"] = f"hpcfleet run {run.run_id}: {run.name}"
    root["description"] = (
        f"Provenance of hpcfleet run {run.run_id} ({run.name}) launched by "
        f"{facts.partner.name}: every stage attempt and array cell, where and how it ran, "
        "and checksums of what it read and wrote."
    )
    root["license"] = ref("https://spdx.org/licenses/CC-BY-4.0")
    root["conformsTo"] = [ref(uri) for uri in PROFILES]
    root["mainEntity"] = ref("run.yaml")
    root["author"] = ref(f"#partner-{facts.partner.id}")
    root["publisher"] = ref(f"#partner-{facts.partner.id}")
    root["mentions"] = [ref(f"#run-{run.run_id}")] + [ref(job_id(j)) for j in facts.jobs]


def log_crate(ctx: RunContext, run: RunRecord | None = None) -> None:
    """Attach the run's crate, zipped, to its MLflow parent run (`provenance/`); `run` is
    the run's record as it ends, when that is not stored yet.

    Manifests, not data, so it stays small; one above `MAX_ARTIFACT_BYTES` is left out
    with a warning. A crate that cannot be written never fails the run.
    """
    try:
        facts = gather(
            ctx.store,
            ctx.run_id,
            driver_for=ctx.drivers.get,
            metrics=metrics_from(ctx.tracker),
            run=run,
        )
        path = write_crate(facts, ctx.scratch / "provenance" / f"{ctx.run_id}-ro-crate.zip")
        size = path.stat().st_size
        if size > MAX_ARTIFACT_BYTES:
            log.warning(
                "provenance crate of run %s is %d bytes (cap %d): not attached to MLflow; "
                "write it with 'hpcfleet run provenance %s'",
                ctx.run_id,
                size,
                MAX_ARTIFACT_BYTES,
                ctx.run_id,
            )
            return
        ctx.tracker.log_artifact(ctx.parent_mlflow_id, path, "provenance")
    except (HpcfleetError, OSError) as exc:
        log.warning("provenance crate of run %s not attached to MLflow: %s", ctx.run_id, exc)
    except Exception:
        # A fault in writing the record of a run must not undo the run's verdict.
        log.exception("provenance crate of run %s could not be written", ctx.run_id)
