"""Milestone: a dated goal of the programme with machine-checkable criteria."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Self

from pydantic import Field, model_validator

from registry.common import Identifier, StrictModel


class StageCompletedCriterion(StrictModel):
    run: Identifier  # the run spec's name
    stage: Identifier


class MetricCriterion(StrictModel):
    experiment: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    min: float | None = None
    max: float | None = None
    over: str | None = None  # an array key, e.g. "language"
    all_of: list[str] = []

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.all_of and not self.over:
            raise ValueError("'all_of' needs 'over' (the array key, e.g. language)")
        return self


class Criterion(StrictModel):
    stage_completed: StageCompletedCriterion | None = None
    metric: MetricCriterion | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.stage_completed is None) == (self.metric is None):
            raise ValueError("each criterion is either {stage_completed: ...} or {metric: ...}")
        return self


class Milestone(StrictModel):
    id: Identifier
    title: Annotated[str, Field(min_length=1)]
    description: str = ""
    due: date
    partners: list[str] = ["*"]
    criteria: Annotated[list[Criterion], Field(min_length=1)]
