"""The one pydantic base of every spec model: unknown keys refused, values frozen, and no NaN or
infinity in a float field (they have no literal in the emitted script and no meaning in a spec)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
