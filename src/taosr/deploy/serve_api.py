"""The service's request and response models, its settings, and the request checks that run before any work.

Input rules: the body is strict JSON in UTF-8 (`StrictJSONRoute`: invalid UTF-8, NaN or Infinity
-> 422 like any other malformed JSON), every text must be valid unicode without NUL characters (a
lone surrogate or a NUL -> 422, the loaders' rule: `data.rows.text_problem`), numbers finite, and a
boolean is not a price (`price: true` -> 422, as the loaders reject it); attribute values may be
text, numbers, booleans or null, read as the loaders read them. Validation errors are answered
without echoing the input (`validation_body`), so no input can make the error response itself fail.

`/docs` is `docs_page`: one self-contained HTML page built from the OpenAPI schema (no script or
style from a CDN, so it works offline); the schema itself is `/openapi.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints

from ..data.rows import text_problem


def _unicode(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


def _not_bool(value):
    if isinstance(value, bool):  # pydantic would read true as 1.0; the loaders reject it
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Str = Annotated[str, AfterValidator(_unicode)]
Text = Annotated[Str, StringConstraints(strip_whitespace=True, min_length=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Price = Annotated[Finite | None, BeforeValidator(_not_bool)]


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class StrictJSONRequest(Request):
    """A request whose JSON must be UTF-8 and standard (no NaN / Infinity); errors are JSON decode errors (422)."""

    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise json.JSONDecodeError(f"invalid UTF-8 (byte {e.start})", "", e.start) from None
            try:
                self._json = json.loads(text, parse_constant=_no_constant)
            except ValueError as e:
                if isinstance(e, json.JSONDecodeError):
                    raise
                raise json.JSONDecodeError(str(e), "", 0) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """FastAPI's documented custom route class: the endpoint reads its body through `StrictJSONRequest`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def loc_name(loc) -> str:
    parts = [p for p in loc if p != "body"]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or "body"


def validation_body(errors: list[dict]) -> dict:
    """The 422 body: type, location and message of each error (at most 20), never the input itself."""
    detail = [{"type": e.get("type"), "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
               "msg": _unicode_safe(str(e.get("msg", "")))}
              | ({"error": _unicode_safe(str(e["ctx"]["error"]))} if "error" in (e.get("ctx") or {}) else {})
              for e in errors[:20]]
    message = "; ".join(f"{loc_name(d['loc'])}: {d['msg']}" + (f" ({d['error']})" if "error" in d else "")
                        for d in detail[:5])
    return {"detail": detail, "message": message}


def _unicode_safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ItemIn(BaseModel):
    """One item to judge against the request's query."""

    id: Str | int | None = Field(None, description="Echoed back (as text); defaults to the item's position ('0', "
                                 "'1', ...).")
    title: Text = Field(..., description="Item title.")
    category: Str | None = Field(None, description="Leaf category.")
    brand: Str | None = Field(None, description="Brand.")
    attributes: dict[Str, Str | bool | int | Finite | None] = Field(
        default_factory=dict, description='Attributes, e.g. {"color": "red"} (booleans read as "true" / "false", '
        "null as absent).")
    price: Price = Field(None, ge=0, description="Price (a finite number >= 0; not a boolean).")
    description: Str | None = Field(None, description="Free text (HTML allowed).")


class RelevanceRequest(BaseModel):
    query: Text = Field(..., description="The search query.")
    items: list[ItemIn] = Field(..., min_length=1, description="Items to judge (at most max_items).")


class ItemResult(BaseModel):
    id: str = Field(..., description="The item's id (or its position).")
    probs: dict[str, float] = Field(..., description='P(level) for levels "1".."4"; sums to 1.')
    level: int = Field(..., description="CumPT level 1-4 with the served beta.")
    tier: str = Field(..., description="Good (4, 3) / Mid (2) / Bad (1).")


class RelevanceResponse(BaseModel):
    results: list[ItemResult] = Field(..., description="One per item, in request order.")
    rule: str = Field("cumpt", description="Level rule used: cumpt (threshold beta) or argmax.")
    beta: float = Field(..., description="CumPT threshold (used where rule is cumpt).")
    model: str = Field(..., description="Model name.")


def too_long(body: RelevanceRequest, limit: int) -> str | None:
    """The first text field over `limit` characters, as a message naming it; None if all fit."""
    fields = [("query", body.query)]
    for i, it in enumerate(body.items):
        fields += [(f"items[{i}].{k}", getattr(it, k)) for k in ("id", "title", "category", "brand", "description")]
        for k, v in it.attributes.items():
            fields += [(f"items[{i}].attributes (a key)", k), (f"items[{i}].attributes.{k[:40]}", str(v))]
    for name, value in fields:
        if isinstance(value, str) and len(value) > limit:
            return f"{name}: {len(value)} characters, over the limit of {limit} (max_text_chars)"
    return None



def docs_page(schema: dict) -> str:
    """The API as one self-contained HTML page (no script, no stylesheet from elsewhere): each operation with its
    summary, description and responses, then every schema as JSON. Built from FastAPI's OpenAPI document."""
    from html import escape

    info = schema.get("info", {})
    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = ", ".join(f"{code} {escape(r.get('description', ''))}"
                                  for code, r in op.get("responses", {}).items())
            rows.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}</p>"
                        f"<p>{escape(op.get('description', ''))}</p><p><b>Responses:</b> {responses}</p>")
    models = "".join(f"<h3>{escape(name)}</h3><pre>{escape(json.dumps(s, indent=1))}</pre>"
                     for name, s in schema.get("components", {}).get("schemas", {}).items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info.get('title', 'API'))}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}pre{background:#f4f4f4;padding:.5em;"
            "overflow:auto}</style></head><body>"
            f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>"
            f"<p>{escape(info.get('description', ''))}</p><p>Machine-readable schema: "
            "<a href='/openapi.json'>/openapi.json</a>.</p>" + "".join(rows) + "<h2>Schemas</h2>" + models
            + "</body></html>")
