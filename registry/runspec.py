"""RunSpec: a DAG of stages (INTERFACE.md, "Run spec"), validated as a whole.

Besides field types, a spec is checked for duplicate stage names, `needs` that name
unknown stages, cycles, and `{placeholders}` in commands that nothing would fill.

Bounds (a stored spec is read by every partner's `run show` and by the engine): at most
`MAX_STAGES` stages and `MAX_ARRAY_VALUES` array values, checked in linear time; per
stage at most `MAX_NODES` nodes, `MAX_GPUS_PER_NODE` GPUs per node and
`MAX_CPUS_PER_TASK` CPUs per task, `MAX_TASKS_PER_NODE` tasks per node; time limits and
memory as in registry.common. Param
names are MLflow-safe words; an `env` that looks like a secret is refused
(registry.env_secrets).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    field_validator,
    model_serializer,
    model_validator,
)

from registry.common import (
    Identifier,
    StrictModel,
    Walltime,
    format_memory,
    parse_memory,
)
from registry.env_secrets import check_env
from registry.matrix import (
    EXCLUDE_KEY,
    FROM_KEY,
    apply_exclude,
    array_cells,
    cell_value,
    check_cells,
    matrix_array,
)
from registry.residency import Residency

StageKind = Literal["data", "train", "eval", "other"]
# Bounds that keep a stored spec cheap to read and to plan (docs in the module docstring).
MAX_STAGES = 1000
MAX_ARRAY_VALUES = 100_000
MAX_NODES = 100_000
MAX_GPUS_PER_NODE = 64
MAX_CPUS_PER_TASK = 4096
MAX_TASKS_PER_NODE = 1024
MAX_CHAIN = 50  # follow-up segments pre-queued at once (`chain: N`)
Scalar = str | int | float | bool

# `{name}` or `{params.name}`; `{{` and `}}` are literal braces.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,249}")
_PLACEHOLDER_NAME = re.compile(r"^(params\.)?[A-Za-z_][A-Za-z0-9_]*$")


class SiteRequirement(StrictModel):
    gpu_type: str | None = None
    min_gpus: Annotated[int, Field(ge=0)] = 0
    labels: dict[str, str] = {}


# sbatch options hpcfleet needs for itself: the name it finds jobs by, where logs go,
# the array of tasks, dependencies and node exclusions.
_OWN_SBATCH_OPTIONS = frozenset(
    {"--job-name", "-J", "--output", "-o", "--error", "-e", "--chdir", "-D", "--array", "-a"}
    | {"--dependency", "-d", "--kill-on-invalid-dep", "--exclude", "-x", "--wrap"}
)


def _stage_memory(value: Any) -> int:
    """`all` -> 0, as SLURM reads `--mem=0`: all the memory of each node."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return 0
    return parse_memory(value)


def _format_stage_memory(mib: int) -> str:
    return "all" if mib == 0 else format_memory(mib)


StageMemory = Annotated[
    int, BeforeValidator(_stage_memory), PlainSerializer(_format_stage_memory, return_type=str)
]


class SiteSelector(StrictModel):
    """Where a stage may run: one site by name, any of several, or by requirements.

    Written in a spec as `site: lumi`, `site: {any_of: [a, b]}` or
    `site: {require: {...}}`.
    """

    name: str | None = None
    any_of: list[Identifier] | None = None
    require: SiteRequirement | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("name", "any_of", "require") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of: a site name, {any_of: [...]}, or {require: {...}}"
            )
        if self.any_of is not None and not self.any_of:
            raise ValueError("any_of needs at least one site name")
        return self

    @model_serializer
    def _to_shorthand(self) -> Any:
        if self.name is not None:
            return self.name
        if self.any_of is not None:
            return {"any_of": list(self.any_of)}
        assert self.require is not None
        return {"require": self.require.model_dump(exclude_defaults=True)}

    def named_sites(self) -> list[str]:
        if self.name is not None:
            return [self.name]
        return list(self.any_of or [])


class Resources(StrictModel):
    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = 1
    tasks_per_node: Annotated[int, Field(ge=1, le=MAX_TASKS_PER_NODE)] = 1
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS_PER_NODE)] = 0  # per node
    cpus: Annotated[int, Field(ge=1, le=MAX_CPUS_PER_TASK)] = 1  # per task
    mem: StageMemory | None = None  # 0 (written `all`): all of each node's memory
    time: Walltime = 3600
    partition: str | None = None
    qos: str | None = None
    exclusive: bool = False
    constraint: str | None = None
    extra_flags: list[str] = []  # each one sbatch argument, e.g. "--hint=nomultithread"

    @field_validator("extra_flags")
    @classmethod
    def _flags_hpcfleet_leaves_free(cls, value: list[str]) -> list[str]:
        for flag in value:
            name = flag.split("=", 1)[0] if flag.startswith("--") else flag[:2]
            if not flag.startswith("-"):
                raise ValueError(f"{flag!r} is not an option (each flag starts with '-')")
            if name in _OWN_SBATCH_OPTIONS:
                raise ValueError(f"{flag!r}: hpcfleet sets {name} itself")
        return value


# What a `where: login` stage may not set (only `resources.time` applies on a login node).
LOGIN_REFUSED_RESOURCES = tuple(f for f in Resources.model_fields if f != "time")
LOGIN_REFUSED_STAGE_FIELDS = (
    "array",
    "exclude",
    "array_parallelism",
    "launcher",
    "chain",
    "checkpoints",
    "for_each",
)

# A checkpoint's glob: relative, wildcards (`*`, `?`) only in its last segment, so that a
# checkpoint's name (that segment) is unique; plain characters keep it one shell word.
_CHECKPOINT_GLOB = re.compile(
    r"^(?:[A-Za-z0-9_.][A-Za-z0-9_.-]*/)*[A-Za-z0-9_*?][A-Za-z0-9_.*?-]*$"
)
_READY_FILE = re.compile(r"^[A-Za-z0-9_+=@][A-Za-z0-9_.+=@-]{0,199}$")
CHECKPOINT_SOURCE = "checkpoint"  # the one value of `for_each`


class Checkpoints(StrictModel):
    """`checkpoints: {path: GLOB, ready: FILE}`: a directory under the stage's outputs
    matching `path` that holds `ready` is a finished checkpoint (training frameworks
    write that file last). The checkpoint's name is the directory's own name."""

    path: str
    ready: str

    @field_validator("path")
    @classmethod
    def _glob_inside_outputs(cls, value: str) -> str:
        parts = value.split("/")
        if (
            not _CHECKPOINT_GLOB.match(value)
            or any(p in (".", "..") for p in parts)
            or any(c in p for p in parts[:-1] for c in "*?")
        ):
            raise ValueError(
                f"{value[:200]!r}: give a glob relative to the stage's outputs, e.g. "
                "'checkpoints/iter_*' (letters, digits, '_.-', '/' between parts; "
                "'*' and '?' only in the last part; no '.' or '..' parts)"
            )
        return value

    @field_validator("ready")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not _READY_FILE.match(value) or value in (".", ".."):
            raise ValueError(
                f"{value[:200]!r}: give the name of the file written last in a checkpoint, "
                "e.g. 'model.safetensors' (letters, digits, '_.+=@-'; no '/')"
            )
        return value

    @property
    def parent(self) -> str:
        """The directory (relative to the outputs) the checkpoints appear in; "" for the
        outputs themselves."""
        return self.path.rpartition("/")[0]

    @property
    def pattern(self) -> str:
        """The glob a checkpoint's name matches."""
        return self.path.rpartition("/")[2]


class Stage(StrictModel):
    name: Identifier
    kind: StageKind = "other"
    site: SiteSelector
    resources: Resources = Resources()
    command: Annotated[list[str], Field(min_length=1)] | None = None
    script: str | None = None
    needs: list[str] = []
    # {key: [values], ...} (their product) or {from: FILE[, cells: [...]]}: registry.matrix
    array: dict[str, list[Scalar] | str | list[dict[str, Scalar]]] | None = None
    exclude: list[dict[str, Scalar]] = []  # cells of the array left out
    env: dict[str, str] = {}
    outputs: list[str] = []
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    resumable: bool = False
    max_resumes: Annotated[int, Field(ge=0, le=100)] = 5
    # Follow-up segments pre-queued behind the running one (flows.segments).
    chain: Annotated[int, Field(ge=1, le=MAX_CHAIN)] | None = None
    array_parallelism: Annotated[int, Field(ge=1)] | None = None  # --array=…%N
    residency: Residency | None = None  # where the outputs may live (registry.residency)
    declassifies: bool = False  # outputs are free of the residency of the inputs
    # Unset: srun when nodes > 1 or tasks_per_node > 1 (sites.launcher).
    launcher: Literal["srun", "none"] | None = None
    container: str | None = None  # unset: the site's; "none": no container; else an image
    # `login`: on the site's login node, for downloads (sites.login); `batch`: a job.
    where: Literal["batch", "login"] = "batch"
    checkpoints: Checkpoints | None = None  # checkpoints stream out while it runs
    # "checkpoint": runs once per checkpoint of the one needed stage they stream out of.
    for_each: Literal["checkpoint"] | None = None

    @field_validator("container")
    @classmethod
    def _container_image(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "\n\r\x00")):
            raise ValueError("give an image path, or 'none' to run without the site's container")
        return value

    _cells: list[dict[str, str]] | None = PrivateAttr(default=None)  # None: file not read

    @model_validator(mode="before")
    @classmethod
    def _exclude_inside_array(cls, value: Any) -> Any:
        """`array: {..., exclude: [...]}` is read as the stage's `exclude`."""
        array = value.get("array") if isinstance(value, dict) else None
        if isinstance(array, dict) and EXCLUDE_KEY in array:
            if "exclude" in value:
                raise ValueError("give exclude once: in the array or next to it")
            array = dict(array)
            value = {**value, "array": array, "exclude": array.pop(EXCLUDE_KEY)}
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        if isinstance(value, str):
            raise ValueError(
                "write the command as a list, e.g. [python3, train.py]; "
                "or use 'script:' for a bash script"
            )
        return value

    @field_validator("array")
    @classmethod
    def _array_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Checked (and cells written as text) by registry.matrix.
        return None if value is None else matrix_array(value)

    @field_validator("outputs")
    @classmethod
    def _relative_outputs(cls, value: list[str]) -> list[str]:
        for path in value:
            parts = path.strip("/").split("/") if path else []
            if not path or path.startswith("/") or ".." in parts:
                raise ValueError(
                    f"{path!r}: outputs are paths inside $HPCFLEET_OUTPUTS (relative, no '..')"
                )
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return check_env(value)

    @model_validator(mode="after")
    def _command_or_script(self) -> Self:
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of 'command' (a list) or 'script' (bash)")
        return self

    @model_validator(mode="after")
    def _login_stage_fields(self) -> Self:
        """A login-node stage is one process under a time limit: it has no SLURM
        resources to ask for, and no array or launcher to fan it out."""
        if self.where != "login":
            return self
        # Compared with the defaults, not "given": a stored spec is dumped in full.
        defaults = Resources()
        refused = [
            f"resources.{f}"
            for f in LOGIN_REFUSED_RESOURCES
            if getattr(self.resources, f) != getattr(defaults, f)
        ]
        refused += [
            f
            for f in LOGIN_REFUSED_STAGE_FIELDS
            if getattr(self, f) != Stage.model_fields[f].get_default(call_default_factory=True)
        ]
        if refused:
            raise ValueError(
                f"where: login runs one process on the login node and takes no "
                f"{', '.join(refused)} (only resources.time, its time limit)"
            )
        return self

    @model_validator(mode="after")
    def _matrix_cells(self) -> Self:
        if self.array is None:
            if self.exclude:
                raise ValueError("exclude needs an array")
            return self
        cells = array_cells(self.array)
        if cells is not None:
            keys = list(cells[0]) if cells else []
            cells = apply_exclude(cells, keys, self.exclude) if self.exclude else cells
            check_cells(cells)
        self._cells = cells
        return self

    @model_validator(mode="after")
    def _chain_of_one_resumable_job(self) -> Self:
        if self.chain is None:
            return self
        if not self.resumable:
            raise ValueError(
                "chain: pre-queued segments resume from a checkpoint; set resumable: true"
            )
        if self.array is not None:
            raise ValueError("chain: only a stage without an array can be chained")
        if self.chain > self.max_resumes:
            raise ValueError(
                f"chain: {self.chain} segments exceed max_resumes ({self.max_resumes}); "
                f"lower chain or raise max_resumes"
            )
        return self

    @property
    def array_keys(self) -> list[str]:
        """The keys of the array's cells ([] without an array or before its file is read)."""
        return list(self._cells[0]) if self._cells else []

    @property
    def array_key(self) -> str | None:
        """`HPCFLEET_ARRAY_KEY`: the key, or the keys joined by commas."""
        return ",".join(self.array_keys) if self.array else None

    @property
    def cells(self) -> list[dict[str, str]]:
        """The array's cells in spec order; array index i runs cells[i]."""
        return self._cells or []

    @property
    def array_values(self) -> list[str]:
        """The canonical value of each cell (HPCFLEET_ARRAY_VALUE), in spec order."""
        return [cell_value(c) for c in self.cells]

    @property
    def array_file(self) -> str | None:
        """The cells file of `array: {from: FILE}`, or None."""
        path = self.array.get(FROM_KEY) if self.array else None
        return path if isinstance(path, str) else None


class RunSpec(StrictModel):
    name: Identifier
    experiment: str | None = None
    description: str = ""
    params: dict[str, Scalar] = {}
    # Files next to the spec that travel with every stage, besides those commands name.
    files: list[str] = []
    stages: Annotated[list[Stage], Field(min_length=1, max_length=MAX_STAGES)]

    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check_dag(self) -> Self:
        names = [s.name for s in self.stages]
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                raise FieldError(f"stages[{index}].name", f"duplicate stage name {name!r}")
            seen.add(name)
        for index, stage in enumerate(self.stages):
            for j, need in enumerate(stage.needs):
                if need not in seen:
                    raise FieldError(
                        f"stages[{index}].needs[{j}]",
                        f"unknown stage {need!r}; stages are: {', '.join(names)}",
                    )
                if need == stage.name:
                    raise FieldError(f"stages[{index}].needs[{j}]", "a stage cannot need itself")
        self._order = _topological_order(self.stages)
        for index, stage in enumerate(self.stages):
            _check_for_each(index, stage, self)
            _check_placeholders(index, stage, self.params)
        return self

    @field_validator("files")
    @classmethod
    def _relative_files(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"{path!r}: files are paths next to the spec (relative, no '..')")
        return value

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        # They become MLflow param names and {params.NAME} placeholders.
        for name in value:
            if not _PARAM_NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:100]!r} is not a valid param name (a letter or '_', then "
                    "letters, digits, '_', '-' or '.'; at most 250 characters)"
                )
        return value

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def order(self) -> list[str]:
        """Stage names in an order where every stage comes after the ones it needs."""
        return list(self._order)

    def ordered_stages(self) -> list[Stage]:
        return [self.stage(name) for name in self._order]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def checkpoint_source(self, name: str) -> str | None:
        """For a `for_each: checkpoint` stage, the needed stage its checkpoints come
        from (the one declaring `checkpoints`, or a `for_each` stage before it in the
        chain); None for other stages."""
        stage = self.stage(name)
        if stage.for_each != CHECKPOINT_SOURCE:
            return None
        return next(n for n in stage.needs if _streams_checkpoints(self.stage(n)))

    def checkpoint_origin(self, name: str) -> str | None:
        """The stage that writes the checkpoints a `for_each` stage runs on (the start
        of its chain); None for other stages."""
        source = self.checkpoint_source(name)
        while source is not None and self.stage(source).checkpoints is None:
            source = self.checkpoint_source(source)
        return source

    def dependents(self, name: str) -> list[str]:
        """Stages that need `name`, directly or transitively."""
        found: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for stage in self.stages:
                if current in stage.needs and stage.name not in found:
                    found.append(stage.name)
                    frontier.append(stage.name)
        return found


class FieldError(ValueError):
    """A whole-document check failed at a specific field (reported with its path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def _topological_order(stages: list[Stage]) -> list[str]:
    remaining = {s.name: set(s.needs) for s in stages}
    order: list[str] = []
    while remaining:
        ready = [name for name, needs in remaining.items() if not needs]
        if not ready:
            cycle = " -> ".join(_find_cycle(remaining))
            index = next(i for i, s in enumerate(stages) if s.name in remaining)
            raise FieldError(f"stages[{index}].needs", f"the stages form a cycle: {cycle}")
        for name in ready:  # keep document order among stages that are ready together
            order.append(name)
            del remaining[name]
        for needs in remaining.values():
            needs.difference_update(ready)
    return order


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    start = next(iter(graph))
    path = [start]
    while True:
        nxt = sorted(graph[path[-1]])[0]
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def placeholders(text: str) -> list[str]:
    """Names of the `{placeholders}` in `text` (escaped braces excluded)."""
    return [m.group(1) for m in PLACEHOLDER.finditer(text) if m.group(1) is not None]


def _streams_checkpoints(stage: Stage) -> bool:
    return stage.checkpoints is not None or stage.for_each == CHECKPOINT_SOURCE


def _check_for_each(index: int, stage: Stage, spec: RunSpec) -> None:
    """A `for_each: checkpoint` stage needs exactly one stage its checkpoints come from."""
    if stage.for_each is None:
        return
    if stage.checkpoints is not None:
        raise FieldError(
            f"stages[{index}].for_each",
            "a stage that runs once per checkpoint cannot declare checkpoints itself",
        )
    sources = [n for n in stage.needs if _streams_checkpoints(spec.stage(n))]
    if len(sources) != 1:
        found = f"it needs {', '.join(sources)}" if sources else "none of its needs does"
        raise FieldError(
            f"stages[{index}].for_each",
            "for_each: checkpoint needs exactly one stage (in 'needs') that declares "
            "'checkpoints' or itself runs for_each: checkpoint; " + found,
        )


def _check_placeholders(index: int, stage: Stage, params: dict[str, Scalar]) -> None:
    known = {f"params.{p}" for p in params} | {"run_id", "stage", "attempt"}
    if stage.for_each == CHECKPOINT_SOURCE:
        known.add("checkpoint")
    known.update(stage.array_keys)
    # Keys of a cells file not read yet are checked once it is (flows.matrix).
    unread = stage.array is not None and not stage.array_keys
    for j, arg in enumerate(stage.command or []):
        for name in placeholders(arg):
            if unread and _PLACEHOLDER_NAME.match(name) and not name.startswith("params."):
                continue
            if not _PLACEHOLDER_NAME.match(name) or name not in known:
                raise FieldError(
                    f"stages[{index}].command[{j}]",
                    f"unknown placeholder {{{name}}}; known: "
                    + ", ".join("{" + k + "}" for k in sorted(known))
                    + " (write {{ and }} for literal braces)",
                )
