"""Partner: an organisation of the consortium."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from registry.common import Identifier, StrictModel


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError(f"{value!r} is not a country code: use ISO 3166 alpha-2, e.g. 'CZ'")
    return value


class Partner(StrictModel):
    id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    country: Annotated[str, AfterValidator(_country)] | None = None
