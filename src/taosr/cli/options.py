"""Command options generated from the stage configs, and `--config FILE.yaml` with the flags as overrides.

A stage's pydantic config is the one place its settings are defined (name, type, default, help).
`config_command` turns its fields into typer options: `SFTStageConfig.max_steps` becomes
`--max-steps`, a nested model's fields get the nested field's name in front (`lora.r` ->
`--lora-r`; `pairs.pairs_per_prompt` -> `--pairs-per-prompt`, the repeated word written once), a
bool `--x/--no-x`. `--config FILE.yaml` reads the same settings from YAML (`settings.read_yaml`);
flags given on the command line override it, and whatever neither sets keeps the config's default
(as TRL's `TrlParser` does). Fields whose type a flag cannot carry (mappings, lists, unions of
several types) are set through `--config` only.

    @config_command(app, "sft", SFTStageConfig, model=(ModelConfig, {"name_or_path", "seed"}))
    def sft(cfg: SFTStageConfig, model_cfg: ModelConfig, data: Path = typer.Option(...)): ...

Sections other than the main one (`model=` above) are prefixed (`--model-vocab-size`) and are a
mapping of their own in the YAML file (`model: {vocab_size: 400}`).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..errors import InputError
from ..settings import read_yaml, validate

SCALARS = (bool, int, float, str, Path)
CONFIG_HELP = "YAML file with this command's settings (field names as keys); flags given here override it."


@dataclass(frozen=True)
class Flag:
    """One generated option: the Python parameter, and where its value goes in the config."""

    param: inspect.Parameter
    section: str  # "" for the command's main config, else the section's keyword
    path: tuple[str, ...]  # field names from the section's config down to this field


def cli_type(annotation) -> Any | None:
    """The type a flag carries for a field annotation (Optional kept), or None when a flag cannot carry it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = cli_type(rest[0]) if len(rest) == 1 else None
        return Optional[inner] if inner is not None else None
    if origin is Literal and all(isinstance(a, str) for a in args):
        return annotation
    return annotation if annotation in SCALARS else None


def is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def flag_name(prefix: tuple[str, ...], name: str) -> str:
    """`--lora-r` for (lora, r); the nested field's name is not repeated (`--pairs-per-prompt`)."""
    words = [*prefix, name]
    for i in range(len(words) - 1, 0, -1):
        if words[i].startswith(words[i - 1] + "_"):
            words.pop(i - 1)
    return "_".join(words)


def config_flags(model: type[BaseModel], section: str = "", exclude: set[str] = frozenset(),
                 prefix: tuple[str, ...] = (), path: tuple[str, ...] = ()) -> list[Flag]:
    """The options of `model`'s fields (nested models flattened), in field order."""
    flags = []
    for name, field in model.model_fields.items():
        if name in exclude and not path:
            continue
        if is_model(field.annotation):
            flags += config_flags(field.annotation, section, exclude, (*prefix, name), (*path, name))
            continue
        kind = cli_type(field.annotation)
        if kind is None:
            continue
        param = flag_name(prefix, name)
        flag = "--" + param.replace("_", "-")
        is_bool = kind is bool or kind == Optional[bool]
        default = None if field.default is PydanticUndefined else field.default
        option = typer.Option(default, f"{flag}/--no-{flag[2:]}" if is_bool else flag, help=field.description,
                              show_default=field.default is not PydanticUndefined)
        flags.append(Flag(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind),
                          section, (*path, name)))
    return flags


def read_config(path: Path | None) -> dict:
    """The mapping of a `--config` YAML file ({} without one); a bad file is an `InputError` naming it."""
    return {} if path is None else read_yaml(path)


def _fields(tree: dict, model: type[BaseModel]) -> dict:
    """The settings of `tree` that are fields of `model` (the top level is shared with flat sections)."""
    return {k: v for k, v in tree.items() if k in model.model_fields}


def _put(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def config_command(app: typer.Typer, name: str | None, main: type[BaseModel], *, exclude: set[str] = frozenset(),
                   flat: set[str] = frozenset(), **sections: tuple[type[BaseModel], set[str]]) -> Callable:
    """Register `fn` as command `name` with options for every field of `main` (and of each extra section).

    `fn(cfg, <section>_cfg..., **own options)` receives the validated configs; its own parameters (inputs,
    outputs) stay typer options as written. `exclude` leaves fields of `main` to the command (set there); a
    section is `(config class, fields left out)`; a section named in `flat` has unprefixed flags and reads
    its settings from the top level of the YAML file, like the main config.
    """

    def register(fn: Callable) -> Callable:
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [p.replace(kind=keyword) for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "cfg" and not p.name.endswith("_cfg")]
        flags = config_flags(main, "", exclude)
        for key, (model, skip) in sections.items():
            flags += config_flags(model, key, skip, prefix=() if key in flat else (key,))
        names = [p.name for p in own] + [f.param.name for f in flags]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"command {name or fn.__name__}: options defined twice: {', '.join(repeated)}")
        top = set(main.model_fields).union(*(sections[k][0].model_fields for k in flat), set(sections) - set(flat))
        config = inspect.Parameter("config", keyword, annotation=Optional[Path],
                                   default=typer.Option(None, "--config", help=CONFIG_HELP))
        context = inspect.Parameter("ctx", keyword, annotation=typer.Context)

        @functools.wraps(fn)
        def command(ctx: typer.Context, **kwargs):
            path = kwargs.pop("config")
            data = read_config(path)
            where = f"{path} (--config) and the options" if path else f"the options of `{ctx.info_name}`"
            if unknown := sorted(set(data) - top):
                raise InputError(f"{path}: unknown setting(s) {', '.join(unknown)} for `{ctx.info_name}` (misspelt?); "
                                 "fix the file (`--help` lists the settings)")
            trees = {"": data, **{key: dict(data if key in flat else data.get(key) or {}) for key in sections}}
            for flag in flags:
                value = kwargs.pop(flag.param.name)
                source = ctx.get_parameter_source(flag.param.name)
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):  # given on the command line
                    _put(trees[flag.section], flag.path, value)
            configs = {"cfg": validate(main, _fields(trees[""], main), where)}
            configs |= {f"{key}_cfg": validate(model, _fields(trees[key], model), where)
                        for key, (model, _) in sections.items()}
            return fn(**configs, **kwargs)

        command.__signature__ = inspect.Signature([context, *own, *(f.param for f in flags), config])
        command.__annotations__ = {}
        del command.__wrapped__  # typer reads the signature above, not `fn`'s
        app.command(name)(command)
        return fn

    return register
