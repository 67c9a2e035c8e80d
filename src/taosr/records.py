"""The one record every stage reads: a (query, item) pair with an optional graded label."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .labels import to_level


class Record(BaseModel):
    """A query-item pair. Only `query` and `title` are required; `label` is needed to train/evaluate."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field("", description="Stable pair id (generated from the row number when absent).")
    query: str = Field(..., min_length=1, description="The user's search query.")
    title: str = Field(..., min_length=1, description="The item's title.")
    category: str | None = Field(None, description="Item category (leaf of the category tree).")
    brand: str | None = Field(None, description="Item brand.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Item attributes, e.g. colour, material.")
    price: float | None = Field(None, ge=0, description="Item price.")
    description: str | None = Field(None, description="Free-text item description (HTML allowed).")
    label: int | None = Field(None, description="Gold level 1-4 (names and ESCI letters accepted).")
    query_type: str | None = Field(None, description="plain / attribute / negation / alternative / qa / knowledge / ...")

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
            import json

            v = json.loads(v)
        if not isinstance(v, dict):
            raise ValueError("attributes must be a mapping of name -> value")
        return {str(k): str(val) for k, val in v.items() if val is not None and str(val).strip()}

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
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v):
            return None
        return v
