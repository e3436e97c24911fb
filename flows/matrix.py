"""Reading the cells files of a spec at launch (`array: {from: tasks.csv}`).

The file's cells are written into the stored spec (`registry.matrix`), so the engine,
`results` and `run fill` never read it again; the file itself travels with the run like
the other files next to the spec.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from registry.errors import DocumentError
from registry.matrix import CELLS_KEY, FROM_KEY, MAX_CSV_BYTES, MatrixError, read_cells_csv
from registry.runspec import RunSpec


def resolve_cells_files(spec: RunSpec, spec_dir: Path, source: str) -> RunSpec:
    """`spec` with the cells of every `array: {from: FILE}` read from FILE next to it."""
    document = spec.model_dump(mode="json", exclude_defaults=True)
    changed = False
    for index, stage in enumerate(spec.stages):
        name = stage.array_file
        if name is None or stage.cells:
            continue
        field = f"stages[{index}].array.from"
        path = spec_dir / name
        if not path.is_file():
            raise DocumentError(f"no file {name!r} next to the spec", source=source, field=field)
        if path.stat().st_size > MAX_CSV_BYTES:
            raise DocumentError(
                f"{name} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB",
                source=source,
                field=field,
            )
        try:
            cells = read_cells_csv(path.read_text(errors="replace"), name)
        except MatrixError as exc:
            raise DocumentError(str(exc), source=source, field=field) from None
        document["stages"][index]["array"] = {FROM_KEY: name, CELLS_KEY: cells}
        if name not in document.setdefault("files", []):
            document["files"].append(name)
        changed = True
    if not changed:
        return spec
    try:
        return RunSpec.model_validate(document)
    except (ValidationError, ValueError) as exc:
        raise DocumentError(_first_error(exc), source=source) from None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else str(error["msg"])
    return str(exc)
