"""The contextual entities of a run's crate (`flows.crate`): the partner, the spec's
parameters and outputs, the stages, the sites, and one CreateAction for the run and
for each job. Pure: from `RunFacts` and the crate's file list to JSON-LD dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flows.provenance import RunFacts
from flows.redaction import public_env, redact_text
from flows.source_facts import hpcfleet_version
from registry.records import JobRecord
from registry.site import Site
from registry.states import JobState, RunState

PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": "Workflow RO-Crate",
}
FORMAL_PARAMETER = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
STATUS = {RunState.COMPLETED: "CompletedActionStatus", JobState.COMPLETED: "CompletedActionStatus"}


def ref(identifier: str) -> dict[str, str]:
    return {"@id": identifier}


def script_path(stage: str, attempt: int, site: str) -> str:
    return f"scripts/{stage}/{site}-attempt-{attempt}.sh"


def manifest_path(stage: str, site: str) -> str:
    return f"manifests/{stage}/{site}.json"


def context_entities(facts: RunFacts, staged: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
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
            "version": facts.launch.get("hpcfleet_version") or hpcfleet_version(),
        }
    )
    entities.append(
        {
            "@id": "#hpcfleet",
            "@type": "SoftwareApplication",
            "name": "hpcfleet",
            "version": facts.launch.get("hpcfleet_version") or hpcfleet_version(),
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
                "conformsTo": ref(FORMAL_PARAMETER),
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
                    "conformsTo": ref(FORMAL_PARAMETER),
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
                "description": redact_text(" ".join(stage.command))
                if stage.command
                else "bash script",
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
        "description": f"state {run.state.value}"
        + (f": {redact_text(run.reason)}" if run.reason else ""),
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
    return [*metrics, single_values(action)]


def job_id(job: JobRecord) -> str:
    return f"#job-{job.id}"


def _job_values(facts: RunFacts, job: JobRecord) -> dict[str, Any]:
    """Where and how the job ran, as (name, value) properties of its action."""
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
        values[facts.run.spec.stage(job.stage).array_key or "array value"] = job.array_value
    for key, value in sorted(facts.metrics.get(job.mlflow_run_id or "", {}).items()):
        values[f"metric {key}"] = value
    return values


def _job_action(
    facts: RunFacts, job: JobRecord, staged: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    identifier = job_id(job)
    properties = [
        _property(f"{identifier}-{i}", name, value)
        for i, (name, value) in enumerate(_job_values(facts, job).items())
    ]
    needs = facts.run.spec.stage(job.stage).needs
    reads = [ref(p) for need in needs for p in staged if p.startswith(f"manifests/{need}/")]
    script, made = script_path(job.stage, job.attempt, job.site), manifest_path(job.stage, job.site)
    cell = f"[{job.array_value}]" if job.array_value is not None else ""
    action: dict[str, Any] = {
        "@id": identifier,
        "@type": "CreateAction",
        "name": f"{job.stage}{cell} attempt {job.attempt} on {job.site}",
        "description": f"job {job.job_name} ({job.scheduler_id or 'not submitted'}) on "
        f"{job.site}: {job.state.value}",
        "instrument": ref(f"#stage-{job.stage}"),
        "agent": ref(f"#partner-{facts.partner.id}"),
        "location": ref(f"#site-{job.site}"),
        "object": reads + ([ref(script)] if script in staged else []),
        "result": [ref(made)] if made in staged and job.state is JobState.COMPLETED else [],
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
        action["error"] = redact_text(job.reason)[:500]  # a job's last words may quote a URL
    return [*properties, single_values(action)]


def _times(action: dict[str, Any], started: datetime | None, ended: datetime | None) -> None:
    # Seconds and a numeric offset: the form the Process Run Crate shapes accept.
    if started:
        action["startTime"] = started.isoformat(timespec="seconds")
    if ended:
        action["endTime"] = ended.isoformat(timespec="seconds")


def single_values(entity: dict[str, Any]) -> dict[str, Any]:
    """RO-Crate 1.1 prefers `x` over `[x]`; empty lists are left out."""
    cleaned: dict[str, Any] = {}
    for key, value in entity.items():
        if isinstance(value, list) and len(value) <= 1:
            if value:
                cleaned[key] = value[0]
        else:
            cleaned[key] = value
    return cleaned
