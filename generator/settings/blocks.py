"""Settings of the ``blocks`` section: Building Blocks interfaces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BlocksSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = False
