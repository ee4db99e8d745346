"""Typed, frozen configuration from YAML: unknown keys and bad values fail at load, naming file, line and key.

Dataclass fields may carry ``metadata={"help": "...", "check": callable, "valid": "> 0"}``; ``check`` returns
True for a valid value and ``valid`` describes what is valid in the error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from isp_search.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A bad configuration key or value."""


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key as dotted paths."""


class _SafeFloatLoader(yaml.SafeLoader):
    """SafeLoader with the float fix below."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        value = loader.construct_object(value_node, deep=True)
        if key in mapping:
            raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
        mapping[key] = value
        loader.key_lines[id(mapping), key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 reads ``1e-4`` (no dot) as a string; learning rates are written that way, so read it as a float.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.X,
)
for _loader in (_LineLoader, _SafeFloatLoader):
    _loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    _loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-4`` as a float."""
    return yaml.load(text, Loader=_SafeFloatLoader)


@dataclasses.dataclass
class Source:
    """Where a config came from: file name and the line of each dotted key."""

    file: str = "<config>"
    lines: dict[str, int] = dataclasses.field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.file}:{line}" if line else self.file


class NearestSource(Source):
    """A Source whose ``where`` falls back to the closest enclosing key (list items have no line of their own)."""

    def where(self, key: str) -> str:
        k = key
        while k:
            if k in self.lines:
                return f"{self.file}:{self.lines[k]}"
            k = k.rsplit(".", 1)[0] if "." in k else (k.rsplit("[", 1)[0] if "[" in k else "")
        return self.file


def load_yaml(path: str | os.PathLike) -> tuple[Any, Source]:
    """Read YAML; a missing file or a syntax error becomes a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    return parse_yaml(p.read_text(), str(p))


def parse_yaml(text: str, name: str = "<config>") -> tuple[Any, Source]:
    loader = _LineLoader(text)
    loader.name = name
    loader.key_lines = {}
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{line}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                dotted = f"{prefix}{k}"
                if (id(obj), k) in loader.key_lines:
                    lines[dotted] = loader.key_lines[id(obj), k]
                walk(v, dotted + ".")

    walk(data, "")
    return data, Source(name, lines)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, src: Source) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists become tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{src.where(key)}: {key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except ConfigError:
                pass
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{src.where(key)}: {key}: expected one of {list(args)}, got {value!r}{hint}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src.where(key)}: {key}: expected a mapping, got {value!r}")
        return build(tp, value, src, prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{src.where(key)}: {key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]", src) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]", src) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def build(cls: type[T], data: dict | None, src: Source | None = None, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, validating every key (recursively for nested sections)."""
    src = src or Source()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src.where(prefix.rstrip('.'))}: {prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{src.where(prefix + str(k))}: unknown key {prefix}{k}{hint}; valid: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            continue
        value = _coerce(data[name], hints[name], key, src)
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise ConfigError(f"{src.where(key)}: {key}: expected {f.metadata.get('valid', 'a valid value')}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """Plain dict (lists for tuples) of a dataclass config, for writing back to YAML."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating sections as needed."""
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` (value parsed as YAML) -> (``a.b``, value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.g_lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
