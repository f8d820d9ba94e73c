"""Settings of the validate_api role (section ``api``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ApiSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
