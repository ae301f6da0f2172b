"""The flywheel's config: YAML mapped onto typed models whose fields carry help text.

    chatloop flywheel --config configs/default/flywheel.yaml [--turn NAME] [--json]
"""

import importlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chatloop.errors import UsageError
from chatloop.models.loading import check_dtype

# the fields the flywheel sets itself in the stage's config (placeholders when the rest is checked at load)
SET_BY_FLYWHEEL = {"model": "NAME:VERSION", "data": ["export.jsonl"], "run_name": "turn"}


class GateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: str = Field(default="float32", description=(
        "Weights the evaluations run with (both versions alike). float32 gives the same answers on every CPU "
        "and run; auto's reduced-precision batches may shift a few greedy answers between runs."))
    limit: int | None = Field(default=None, ge=1, description="Only the first N items of each kind (faster).")

    @field_validator("dtype")
    @classmethod
    def _known(cls, v):
        try:
            return check_dtype(v)
        except UsageError as e:  # (pydantic reports ValueErrors, with the field)
            raise ValueError(str(e)) from None


def stage_config(method: str, fields: dict):
    """The training stage's config for `method` from `fields` (pydantic's ValidationError if invalid)."""
    module = importlib.import_module(f"chatloop.train.{method}")
    return (module.KTOStageConfig if method == "kto" else module.DPOStageConfig).model_validate(fields)


class FlywheelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(default="smollm2-135m-instruct",
                       description="The registered model name whose stable version is trained and released.")
    method: Literal["kto", "dpo"] = Field(
        default="kto", description="kto trains on thumbs up/down, dpo on better/worse pairs (comparisons and votes).")
    since: str | None = Field(default=None, description="Feedback given from this date (YYYY-MM-DD or ISO time).")
    until: str | None = Field(default=None, description="Feedback given before this date.")
    feedback_versions: list[str] = Field(
        default_factory=list, description="Only feedback on answers of these NAME:VERSIONs (default: all).")
    min_rows: int = Field(default=8, ge=1, description="Stop after the export if it has fewer training rows.")
    train: dict[str, Any] = Field(
        default_factory=lambda: {"lora": {"enabled": True}},
        description="Fields of the stage's config (`chatloop train kto --help-config`); `model` (the stable "
                    "version), `data` (the export) and `run_name` are set by the flywheel.")
    gate: GateOptions = Field(default_factory=GateOptions, description="How the candidate is evaluated.")
    canary_percent: int = Field(default=10, ge=1, le=100,
                                description="Share of new conversations the candidate gets if the gate passes.")

    @model_validator(mode="after")
    def _train_fields(self):
        """The stage's fields are checked now, not after the export (a typo once surfaced only then)."""
        from chatloop.train.config import validation_reason

        try:
            stage_config(self.method, {**self.train, **SET_BY_FLYWHEEL})
        except ValidationError as e:
            raise ValueError(f"train: {validation_reason(e)}") from None
        return self
