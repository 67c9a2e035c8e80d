"""`StrictConfig`: the base of every taosr config, and the number types its fields use.

A setting that taosr does not know is refused (`extra="forbid"`), so a misspelt key in a YAML file
(`max_stepz: 3`) is an error naming the key instead of a run with the default; a boolean is never
read as a number (`max_steps: true` is not 1), also inside mappings and lists of numbers. The number
types say what a count may be: `Count` (at least 1), `Steps` (at least 1, or -1 where a budget in
epochs applies), `Seed` (at least 0). `read_yaml` and `validate` turn a malformed YAML file or a
refused setting into one `InputError` that names the file and the key.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import InputError

M = TypeVar("M", bound=BaseModel)
Count = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)]


def _steps(v: int) -> int:
    if v < 1 and v != -1:
        raise ValueError(f"expected a number of steps >= 1 (or -1: the epoch budget decides), got {v}")
    return v


Steps = Annotated[int, AfterValidator(_steps)]


def takes_bool(annotation: Any) -> bool:
    """Whether a field of this annotation reads True / False as themselves (bool, Any, or a union with either)."""
    if annotation is bool or annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return takes_bool(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(takes_bool(a) for a in args)
    return origin is typing.Literal and any(isinstance(a, bool) for a in args)


def is_number(annotation: Any) -> bool:
    """Whether the annotation is (or, as a union, includes) int or float."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return is_number(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(is_number(a) for a in args)
    return isinstance(annotation, type) and issubclass(annotation, (int, float)) and annotation is not bool


def bool_problem(annotation: Any, value: Any) -> str | None:
    """Why `value` is refused for `annotation` because a boolean stands where a number is expected, or None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return bool_problem(args[0], value)
    if isinstance(value, bool):
        bad = is_number(annotation) and not takes_bool(annotation)
        return f"expected a number, got {str(value).lower()}" if bad else None
    if origin in (typing.Union, types.UnionType):  # a container inside a union: check against each container type
        return next((p for a in args if (p := bool_problem(a, value))), None)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return next((p for v in value.values() if (p := bool_problem(args[1], v))), None)
    if origin in (list, tuple) and isinstance(value, (list, tuple)) and args:
        return next((p for v in value if (p := bool_problem(args[0], v))), None)
    return None


class StrictConfig(BaseModel):
    """Base of every config: unknown settings are errors, booleans are not numbers."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and (problem := bool_problem(field.annotation, value)):
            raise ValueError(problem)
        return value


def errors_text(e: ValidationError, prefix: str = "") -> str:
    """A validation error as one line: `key.path: problem; ...` (an unknown key says so)."""
    parts = []
    for x in e.errors():
        key = prefix + ".".join(map(str, x["loc"]))
        msg = x["msg"].removeprefix("Value error, ")
        msg = "unknown setting (misspelt?)" if x["type"] == "extra_forbidden" else msg
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts[:8]) + (f"; and {len(parts) - 8} more" if len(parts) > 8 else "")


def read_yaml(path: str | Path) -> dict:
    """The mapping of settings in a YAML file (`yaml.safe_load`); a missing, unreadable or malformed file, or one
    that is not a mapping, is an `InputError` naming the file and the line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e}); pass a UTF-8 YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or type(e).__name__
        raise InputError(f"{path}: not valid YAML ({what}{where}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings (key: value lines), got a {type(data).__name__}")
    return data


def validate(model: type[M], data: dict, source: str) -> M:
    """`model` validated from `data`; a refused setting is an `InputError` naming `source` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(f"{source}: {errors_text(e)}; fix the setting (`--help` lists them)") from None


def read_json_model(model: type[M], path: str | Path, what: str, fix: str, besides: tuple[str, ...] = ()) -> M:
    """A settings file written by taosr (JSON of `model`, plus the keys `besides` that other readers use); a damaged
    one is an `InputError` saying `what` it should be and the `fix`."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in besides}
        return model.model_validate(data)
    except (ValidationError, ValueError, UnicodeDecodeError) as e:
        why = errors_text(e) if isinstance(e, ValidationError) else str(e)
        raise InputError(f"{path}: not a valid {what} ({why}); {fix}") from None
