"""Settings of the ``data`` section: prototypes and criticisms, influential examples, decision-set surrogates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DataSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = False
