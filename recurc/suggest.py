"""Did-you-mean hints: the closest known name to a misspelt one (`model.dimm` → `dim`)."""
from __future__ import annotations

import difflib
import typing
from typing import Any, Iterable


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """`did you mean 'dim'?` when one candidate is close enough, else None."""
    close = difflib.get_close_matches(str(name), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def field_names(model: type, loc: tuple) -> list[str]:
    """The field names (and aliases) of the pydantic model that holds `loc[-1]`, found by
    walking `loc[:-1]` from `model` through annotations (Optional, unions, lists and dicts
    included); [] where the path leaves the models."""
    models = [model]
    for part in loc[:-1]:
        nxt: list[type] = []
        for m in models:
            fields = getattr(m, "model_fields", None)
            if fields is None:
                continue
            if isinstance(part, str) and part in fields:
                nxt += _models_in(fields[part].annotation)
            elif not isinstance(part, str) or part not in fields:
                nxt.append(m)            # a list index or dict key: stay on this model's items
        models = [m for m in nxt if hasattr(m, "model_fields")] or nxt
        if not models:
            return []
    names: list[str] = []
    for m in models:
        for fname, f in getattr(m, "model_fields", {}).items():
            names.append(f.alias or fname)
    return names


def _models_in(annotation: Any) -> list[type]:
    """The pydantic model classes inside an annotation (through Optional, Union, list, dict)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    out: list[type] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out
