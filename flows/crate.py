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
from datetime import datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import yaml

from flows.context import RunContext
from flows.provenance import RunFacts, gather, metrics_from
from flows.redaction import masked_env, public_env
from registry.errors import HpcfleetError
from registry.records import JobRecord
from registry.site import Site
from registry.states import JobState, RunState

log = logging.getLogger(__name__)

MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
RO_CRATE_VERSION = "1.1"  # what the Workflow Run Crate 0.5 profile builds on
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": "Workflow RO-Crate",
}
WFRUN_TERMS = {
    "ContainerImage": "https://w3id.org/ro/terms/workflow-run#ContainerImage",
    "SIFImage": "https://w3id.org/ro/terms/workflow-run#SIFImage",
    "containerImage": "https://w3id.org/ro/terms/workflow-run#containerImage",
    "environment": "https://w3id.org/ro/terms/workflow-run#environment",
}
STATUS = {RunState.COMPLETED: "CompletedActionStatus", JobState.COMPLETED: "CompletedActionStatus"}


def ref(identifier: str) -> dict[str, str]:
    return {"@id": identifier}


def write_crate(facts: RunFacts, out: Path) -> Path:
    """Write the crate to directory `out`, or to a zip file when `out` ends in .zip."""
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_terms.update(WFRUN_TERMS)
    with tempfile.TemporaryDirectory(prefix="hpcfleet-crate-") as tmp:
        staged = _stage_files(facts, Path(tmp))
        for relative, properties in staged.items():
            crate.add_file(Path(tmp) / relative, relative, properties=properties)
        for entity in _context_entities(facts, staged):
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

    put("run.yaml", _spec_yaml(facts).encode(), _single_values(_workflow_properties(facts)))
    for path, (content, _mode) in sorted(facts.files.items()):
        put(f"files/{path}", content, {"name": path, "description": "travelled with the spec"})
    for (stage, attempt, site), script in sorted(facts.scripts.items()):
        put(
            _script_path(stage, attempt, site),
            script.encode(),
            {
                "name": f"batch script of {stage} attempt {attempt} on {site}",
                "encodingFormat": "text/x-shellscript",
            },
        )
    for (stage, site), document in sorted(_manifest_documents(facts).items()):
        put(
            _manifest_path(stage, site),
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


def _script_path(stage: str, attempt: int, site: str) -> str:
    return f"scripts/{stage}/{site}-attempt-{attempt}.sh"


def _manifest_path(stage: str, site: str) -> str:
    return f"manifests/{stage}/{site}.json"


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
    root["mentions"] = [ref(f"#run-{run.run_id}")] + [ref(_job_id(j)) for j in facts.jobs]


def _context_entities(facts: RunFacts, staged: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = [
        {"@id": uri, "@type": "CreativeWork", "name": name, "version": uri.rsplit("/", 1)[-1]}
        for uri, name in PROFILES.items()
    ]
    entities.append(
        {
            "@id": "https://spdx.org/licenses/CC-BY-4.0",
            "@type": "CreativeWork",
            "name": "Creative Commons Attribution 4.0",
        }
    )
    entities.append(
        {
            "@id": "#hpcfleet-runspec",
            "@type": "ComputerLanguage",
            "name": "hpcfleet run spec",
            "version": facts.launch.get("hpcfleet_version", "unknown"),
        }
    )
    entities.append(
        {
            "@id": "#hpcfleet",
            "@type": "SoftwareApplication",
            "name": "hpcfleet",
            "version": facts.launch.get("hpcfleet_version", "unknown"),
        }
    )
    entities.append(_partner(facts))
    if facts.launch.get("git"):
        entities.append(_property("#git-dirty", "git dirty", facts.launch["git"]["dirty"]))
    entities.extend(_parameters(facts))
    entities.extend(_outputs(facts, staged))
    entities.extend(_stages(facts))
    for site in facts.sites.values():
        entities.extend(_site(facts, site))
    entities.extend(_run_action(facts, staged))
    for job in facts.jobs:
        entities.extend(_job_action(facts, job, staged))
    return entities


def _partner(facts: RunFacts) -> dict[str, Any]:
    partner = facts.partner
    entity: dict[str, Any] = {
        "@id": f"#partner-{partner.id}",
        "@type": "Organization",
        "name": partner.name,
        "identifier": partner.id,
    }
    if partner.country:
        entity["addressCountry"] = partner.country
    return entity


def _property(identifier: str, name: str, value: Any) -> dict[str, Any]:
    return {"@id": identifier, "@type": "PropertyValue", "name": name, "value": value}


def _parameters(facts: RunFacts) -> list[dict[str, Any]]:
    entities = []
    for name, value in facts.run.spec.params.items():
        kind = {bool: "Boolean", int: "Integer", float: "Float"}.get(type(value), "Text")
        entities.append(
            {
                "@id": f"#param-{name}",
                "@type": "FormalParameter",
                "name": name,
                "additionalType": kind,
                "workExample": ref(f"#value-{name}"),
                "conformsTo": ref("https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"),
            }
        )
        entities.append(
            {**_property(f"#value-{name}", name, value), "exampleOfWork": ref(f"#param-{name}")}
        )
    return entities


def _outputs(facts: RunFacts, staged: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    entities = []
    for stage in facts.run.spec.stages:
        manifests = [ref(path) for path in staged if path.startswith(f"manifests/{stage.name}/")]
        if manifests:
            entities.append(
                {
                    "@id": f"#output-{stage.name}",
                    "@type": "FormalParameter",
                    "name": f"outputs of {stage.name}",
                    "additionalType": "File",
                    "workExample": manifests[0] if len(manifests) == 1 else manifests,
                    "conformsTo": ref(
                        "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
                    ),
                }
            )
    return entities


def _stages(facts: RunFacts) -> list[dict[str, Any]]:
    entities = []
    for stage in facts.run.spec.stages:
        rules = facts.residency.get(stage.name, ())
        properties = [
            _property(f"#stage-{stage.name}-kind", "kind", stage.kind),
            _property(
                f"#stage-{stage.name}-residency",
                "output residency",
                "; ".join(r.describe() for r in rules) or "none",
            ),
            _property(f"#stage-{stage.name}-declassifies", "declassifies", stage.declassifies),
        ]
        entities.extend(properties)
        entities.append(
            {
                "@id": f"#stage-{stage.name}",
                "@type": "SoftwareApplication",
                "name": stage.name,
                "description": " ".join(stage.command) if stage.command else "bash script",
                "additionalProperty": [ref(p["@id"]) for p in properties],
            }
        )
    return entities


def _site(facts: RunFacts, site: Site) -> list[dict[str, Any]]:
    identifier = f"#site-{site.name}"
    env = public_env(site.environment.env)
    properties = [
        _property(f"{identifier}-scheduler", "scheduler", site.scheduler),
        _property(f"{identifier}-partner", "partner", site.partner),
        _property(f"{identifier}-country", "country", site.labels.get("country", "not labelled")),
        _property(
            f"{identifier}-modules", "modules", ", ".join(site.environment.modules) or "none"
        ),
    ]
    properties += [
        _property(
            f"{identifier}-env-{name}",
            f"env {name}",
            value if value is not None else "(secret: not shown)",
        )
        for name, value in sorted(env.items())
    ]
    entities = [
        *properties,
        {
            "@id": identifier,
            "@type": "Place",
            "name": site.name,
            "description": site.description or site.name,
            "additionalProperty": [ref(p["@id"]) for p in properties],
        },
    ]
    image = facts.images.get(site.name)
    if image is not None:
        entity: dict[str, Any] = {
            "@id": f"#image-{site.name}",
            "@type": ["ContainerImage", "SIFImage"],
            "name": image.path,
            "additionalType": ref("https://w3id.org/ro/terms/workflow-run#SIFImage"),
        }
        if image.sha256:
            entity["sha256"] = image.sha256
        if image.size is not None:
            entity["contentSize"] = str(image.size)
        entities.append(entity)
    return entities


def _run_action(facts: RunFacts, staged: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    run = facts.run
    action: dict[str, Any] = {
        "@id": f"#run-{run.run_id}",
        "@type": "CreateAction",
        "name": f"hpcfleet run {run.run_id}",
        "description": f"state {run.state.value}" + (f": {run.reason}" if run.reason else ""),
        "instrument": ref("run.yaml"),
        "agent": ref(f"#partner-{facts.partner.id}"),
        "object": [ref(f"#value-{name}") for name in run.spec.params]
        + [ref(p) for p in staged if p.startswith("files/")],
        "result": [ref(p) for p in staged if p.startswith("manifests/")],
        "actionStatus": f"http://schema.org/{STATUS.get(run.state, 'FailedActionStatus')}",
    }
    _times(action, run.started, run.ended)
    metrics = [
        _property(f"#run-{run.run_id}-metric-{i}", f"metric {key}", value)
        for i, (key, value) in enumerate(sorted(facts.run_metrics.items()))
    ]
    action["additionalProperty"] = [ref(p["@id"]) for p in metrics]
    return [*metrics, _single_values(action)]


def _job_id(job: JobRecord) -> str:
    return f"#job-{job.id}"


def _job_action(
    facts: RunFacts, job: JobRecord, staged: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    identifier = _job_id(job)
    stage = facts.run.spec.stage(job.stage)
    values: dict[str, Any] = {
        "site": job.site,
        "partition": facts.partitions.get((job.stage, job.site)) or "default",
        "attempt": job.attempt,
        "scheduler job id": job.scheduler_id or "",
        "state": job.state.value,
        "gpu_hours": job.gpu_hours,
    }
    if job.node:
        values["nodes"] = job.node
    if job.exit_code is not None:
        values["exit code"] = job.exit_code
    if job.array_value is not None:
        values[stage.array_key or "array value"] = job.array_value
    for key, value in sorted(facts.metrics.get(job.mlflow_run_id or "", {}).items()):
        values[f"metric {key}"] = value
    properties = [
        _property(f"{identifier}-{i}", name, value)
        for i, (name, value) in enumerate(values.items())
    ]
    inputs = [ref(p) for need in stage.needs for p in staged if p.startswith(f"manifests/{need}/")]
    script = _script_path(job.stage, job.attempt, job.site)
    action: dict[str, Any] = {
        "@id": identifier,
        "@type": "CreateAction",
        "name": f"{job.stage}"
        + (f"[{job.array_value}]" if job.array_value is not None else "")
        + f" attempt {job.attempt} on {job.site}",
        "description": f"job {job.job_name} ({job.scheduler_id or 'not submitted'}) on "
        f"{job.site}: {job.state.value}",
        "instrument": ref(f"#stage-{job.stage}"),
        "agent": ref(f"#partner-{facts.partner.id}"),
        "location": ref(f"#site-{job.site}"),
        "object": inputs + ([ref(script)] if script in staged else []),
        "result": [ref(_manifest_path(job.stage, job.site))]
        if _manifest_path(job.stage, job.site) in staged and job.state is JobState.COMPLETED
        else [],
        "actionStatus": f"http://schema.org/{STATUS.get(job.state, 'FailedActionStatus')}",
        "additionalProperty": [ref(p["@id"]) for p in properties],
    }
    _times(action, job.started, job.ended)
    if job.site in facts.images:
        action["containerImage"] = ref(f"#image-{job.site}")
    if job.site in facts.sites:
        env = public_env(facts.sites[job.site].environment.env)
        action["environment"] = [ref(f"#site-{job.site}-env-{name}") for name in sorted(env)]
    if job.state is JobState.FAILED and job.reason:
        action["error"] = job.reason[:500]
    return [*properties, _single_values(action)]


def _times(action: dict[str, Any], started: datetime | None, ended: datetime | None) -> None:
    # Seconds and a numeric offset: the form the Process Run Crate shapes accept.
    if started:
        action["startTime"] = started.isoformat(timespec="seconds")
    if ended:
        action["endTime"] = ended.isoformat(timespec="seconds")


def _single_values(entity: dict[str, Any]) -> dict[str, Any]:
    """RO-Crate 1.1 prefers `x` over `[x]`; empty lists are left out."""
    cleaned: dict[str, Any] = {}
    for key, value in entity.items():
        if isinstance(value, list) and len(value) <= 1:
            if value:
                cleaned[key] = value[0]
        else:
            cleaned[key] = value
    return cleaned


def log_crate(ctx: RunContext) -> None:
    """Attach the run's crate, zipped, to its MLflow parent run (`provenance/`).

    Manifests, not data, so it stays small; one above `MAX_ARTIFACT_BYTES` is left out
    with a warning. A crate that cannot be written never fails the run.
    """
    try:
        facts = gather(
            ctx.store, ctx.run_id, driver_for=ctx.drivers.get, metrics=metrics_from(ctx.tracker)
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
    except (HpcfleetError, OSError, ValueError) as exc:
        log.warning("provenance crate of run %s not attached to MLflow: %s", ctx.run_id, exc)
