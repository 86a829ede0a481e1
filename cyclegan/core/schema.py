"""Declared settings: a dataclass whose fields say their help, allowed values and bounds (``setting``),
read with one set of coercions and validated with errors that name the key and the value. The options
(``config.Config``) and the experiment file's search settings (``experiment.Search``) are such dataclasses.
Also the YAML they are read from: bounded, without aliases."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A bad option: the message names the key and the value."""


SECRET_WORDS = ("secret", "token", "password", "credential", "key")  # in a key's name: its value is never shown


def shown(key: str, value: Any) -> str:
    """A value as an error message shows it: a short scalar of a key that holds no secret as it is,
    anything else by its type only (a mapping may hold credentials; a huge value would flood the log)."""
    secret = key == "storage_options" or any(word in key.lower() for word in SECRET_WORDS)
    if not secret and isinstance(value, (bool, int, float, str)) and len(repr(value)) <= 80:
        return repr(value)
    return f"a value of type {type(value).__name__}"


def setting(default, help: str, choices=None, minimum=None, maximum=None, above=None, **roles):
    """A declared field: its help, its allowed values or bounds (``above``: the value must be greater), and
    whatever else its dataclass says of it (``roles``: config.opt's)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "maximum": maximum, "above": above, **roles})


class Schema:
    """The declared fields of one dataclass, read and checked the same way whichever it is. ``prefix``
    goes before each key in an error (``search.``: the section of a file the dataclass is)."""

    def __init__(self, cls: type, prefix: str = ""):
        self.cls, self.prefix = cls, prefix
        self.fields = {f.name: f for f in dataclasses.fields(cls)}
        self.hints = typing.get_type_hints(cls)

    def unknown(self, key: str, source: str = "") -> ConfigError:
        close = difflib.get_close_matches(key, self.fields, n=1)
        return ConfigError(f"{self.prefix}{key}: unknown" + (f" option in {source}" if source else "")
                           + (f" (did you mean {close[0]!r}?)" if close else ""))

    def values(self, *layers: dict, source: str = "") -> dict[str, Any]:
        """The layers merged (a later one wins), every value of the schema's type."""
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                if key not in self.fields:
                    raise self.unknown(key, source)
                merged[key] = self.coerce(key, value)
        return merged

    def coerce(self, key: str, value: Any) -> Any:
        """A value from YAML, a flag or a checkpoint as the schema's type, or an error naming the key."""
        hint = self.hints[key]
        optional = typing.get_origin(hint) is typing.Union
        base = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
        name = self.prefix + key
        if value is None:
            if optional:
                return None
            raise ConfigError(f"{name}: must not be empty")
        converted = _converted(typing.get_origin(base) or base, value)
        if converted is _BAD:
            raise ConfigError(f"{name}: {shown(key, value)} is not a valid {base.__name__}")
        return converted

    def check(self, obj: Any) -> Any:
        """Every field within its declared values and bounds (NaN is never one)."""
        for key, f in self.fields.items():
            value, meta, name = getattr(obj, key), f.metadata, self.prefix + key
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ConfigError(f"{name}: {shown(key, value)} is not one of {', '.join(map(str, meta['choices']))}")
            if value is None:
                continue
            if meta["minimum"] is not None and value < meta["minimum"]:
                raise ConfigError(f"{name}: {shown(key, value)} is below the minimum {meta['minimum']}")
            if meta["maximum"] is not None and value > meta["maximum"]:
                raise ConfigError(f"{name}: {shown(key, value)} is above the maximum {meta['maximum']}")
            if meta["above"] is not None and value <= meta["above"]:
                raise ConfigError(f"{name}: {shown(key, value)} is not above {meta['above']}")
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{name}: NaN is not allowed")
        return obj

    def build(self, *layers: dict, source: str = "") -> Any:
        """The dataclass from its defaults and the layers, each field checked (not across fields)."""
        return self.check(self.cls(**self.values(*layers, source=source)))


_BAD = object()


def _converted(base: type, value: Any) -> Any:
    """``value`` as ``base`` (bool: also true/false/yes/no/1/0 as text), or _BAD."""
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        return _BAD
    if isinstance(value, bool):  # never a number or a text: True is no 1 here
        return _BAD
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value) if isinstance(value, str) else _BAD
        except ValueError:
            return _BAD
    if base is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return _BAD
    if base is str:
        return str(value) if isinstance(value, (str, int, float)) else _BAD
    return value if base is list and isinstance(value, list) else _BAD


MAX_YAML_BYTES = 1 << 20  # an options file is a few kilobytes


class _NoAliases(yaml.SafeLoader):
    """Plain YAML: anchors and aliases (``&a`` / ``*a``) are refused, so a small file cannot expand into
    billions of items (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str | bytes, source: str, kind: type | None = None) -> Any:
    """YAML from outside (an options file, a run's or a sweep's stored files), bounded in size and without
    aliases; ``kind``: what the document must be (None: anything). Errors name ``source``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"config: {source!r} is {len(text)} bytes; an options file may have at most "
                          f"{MAX_YAML_BYTES}")
    try:
        value = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {source!r} is not valid YAML: {e}") from None
    if kind is not None and not isinstance(value, kind):
        raise ConfigError(f"{source}: holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """An options file on this machine: a mapping of option: value (an empty file: none)."""
    try:
        with open(path, "rb") as f:  # read no more than the limit (and one byte to know it is over)
            raw = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config: file {str(path)!r} does not exist") from None
    data = parse_yaml(raw, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {str(path)!r} must hold a mapping of option: value")
    return data
