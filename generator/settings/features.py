"""Settings of the ``features`` section: feature visualisation, dataset examples, DeepDream."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FeaturesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = False
