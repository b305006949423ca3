"""The one pydantic base of every spec model: unknown keys refused, values frozen, and no NaN or
infinity in a float field (they have no literal in the emitted script and no meaning in a spec).

No text or truth value becomes a number: pydantic's lax mode would read `dim: '512'` as 512 and
`dim: true` as 1, so a field whose type holds numbers but no text refuses them. (Pydantic's own
strict mode would also refuse a list for a tuple field, which every JSON round trip produces.)
No integer is larger than MAX_INT: the size model, FLOP counts and JSON work in floats, where a
bigger one overflows or loses its exact value."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

MAX_INT = 2**53          # the largest integer a float holds exactly


def _types(ann: Any) -> set:
    """The plain types a field annotation admits at its top level (through unions and Annotated)."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType) or origin is typing.Annotated:
        args = typing.get_args(ann)
        return set().union(*(_types(a) for a in (args[:1] if origin is typing.Annotated else args)))
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(ann)}
    return {origin or ann}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_text_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, (str, bool)):
            kinds = _types(cls.model_fields[info.field_name].annotation)
            if kinds & {int, float} and not kinds & {str, bool, Any}:
                if isinstance(v, str):
                    raise ValueError(f"a number is required, got the text {v[:40]!r}: write numbers without quotes")
                raise ValueError(f"a number is required, got {v}")
        elif isinstance(v, int) and abs(v) > MAX_INT:
            raise ValueError(f"{str(v)[:24]}{'...' if len(str(v)) > 24 else ''} is too large "
                             f"(numbers in a spec are at most 2**53 = {MAX_INT:,})")
        return v
