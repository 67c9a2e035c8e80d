"""The one record every stage reads: a (query, item) pair with an optional graded label."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .labels import to_level


def _json_type(v: Any) -> str:
    return {dict: "JSON object", list: "JSON list", tuple: "list"}.get(type(v), type(v).__name__)


class Record(BaseModel):
    """A query-item pair. Only `query` and `title` are required; `label` is needed to train/evaluate."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field("", description="Stable pair id (generated from the row number when absent).")
    query: str = Field(..., min_length=1, description="The user's search query.")
    title: str = Field(..., min_length=1, description="The item's title.")
    category: str | None = Field(None, description="Item category (leaf of the category tree).")
    brand: str | None = Field(None, description="Item brand.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Item attributes, e.g. colour, material.")
    price: float | None = Field(None, ge=0, allow_inf_nan=False, description="Item price (finite, >= 0).")
    description: str | None = Field(None, description="Free-text item description (HTML allowed).")
    label: int | None = Field(None, description="Gold level 1-4 (names and ESCI letters accepted).")
    query_type: str | None = Field(None,
                                   description="plain / attribute / negation / alternative / qa / knowledge / ...")

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> int | None:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        return to_level(v)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, v: Any) -> dict[str, str]:
        if v is None or v == "":
            return {}
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except RecursionError:
                raise ValueError("attributes: JSON nested too deeply") from None
        if isinstance(v, list) and all(isinstance(p, tuple) and len(p) == 2 for p in v):
            v = dict(v)  # a Parquet map<string, string> reads back as [(key, value), ...]
        if not isinstance(v, dict):
            raise ValueError(f"attributes must be a mapping of name -> value, not a {_json_type(v)}")
        out = {}
        for k, val in v.items():
            if isinstance(val, (dict, list, tuple)):
                raise ValueError(f"attribute {str(k)[:40]!r} is a {_json_type(val)}; expected text or a number")
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError(f"attribute {str(k)[:40]!r} is {val}; expected a finite number")
            text = ("true" if val else "false") if isinstance(val, bool) else None if val is None else str(val).strip()
            if text:
                out[str(k)] = text
        return out

    @field_validator("category", "brand", "description", "query_type", mode="before")
    @classmethod
    def _empty_to_none(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, float) and v != v:  # NaN from pandas
            return None
        s = str(v).strip()
        return s or None

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        if isinstance(v, bool):  # JSON true/false: not a price (pydantic would read true as 1.0)
            raise ValueError(f"expected a number, got {str(v).lower()}")
        if isinstance(v, float) and not math.isfinite(v):  # NaN, Infinity, 1e309
            raise ValueError(f"expected a finite number, got {v}")
        return v
