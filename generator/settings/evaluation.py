"""Settings of the ``evaluation`` section: evaluation of attribution methods."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = False
