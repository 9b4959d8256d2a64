"""YAML ↔ frozen dataclass configs.

Every model, training run and node in the project is configured by one dataclass, loaded from one
YAML file. Loading is strict: an unknown key, a missing field or a value of the wrong type stops
with a `ConfigError` that says where (file and dotted field path) and what was expected, instead
of a silently ignored typo that costs a training run.

Supported field types: int, float (ints are accepted), bool, str, pathlib.Path, nested
dataclasses, `X | None`, other unions, `Literal[...]`, `tuple[T, ...]`, `tuple[A, B]`, `list[T]`,
`dict[K, V]` and `typing.Any`. Field annotations are resolved with `typing.get_type_hints`, so
config dataclasses must be defined at module level (names inside a function cannot be resolved).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]

T = TypeVar("T")

_NoneType = type(None)


class ConfigError(ValueError):
    """A config that cannot be loaded; the message starts with the source and the field path."""


class _TypeMismatch(ConfigError):
    """The value at `path` itself has the wrong type (as opposed to something nested inside it)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


# --- YAML ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `3e-4` as a float and refuses duplicate keys.

    PyYAML follows YAML 1.1, where a float needs a dot (`3e-4` would load as the string '3e-4'),
    and a repeated key silently wins; both are easy mistakes in a hand-edited config.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Only the mapping's own scalar keys: keys pulled in by a `<<` merge may be overridden.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    """Parse YAML text safely (no arbitrary objects) with the fixes of `_Loader`."""
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


# --- Messages -----------------------------------------------------------------------------------


def _where(source: str, path: str) -> str:
    return f"{source}: {path}: " if path else f"{source}: "


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: object) -> str:
    """'str 'fast'' for scalars, just the type name for containers."""
    if isinstance(value, (Mapping, list, tuple, set)):
        return type(value).__name__
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    """A readable name for a type annotation: 'int | None', 'tuple[float, ...]'."""
    if tp is _NoneType:
        return "None"
    if tp is Any:
        return "Any"
    if tp is Ellipsis:
        return "..."
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        name = getattr(origin, "__name__", repr(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", repr(tp))


def _unknown_key_message(key: object, valid: Sequence[str]) -> str:
    valid_list = ", ".join(sorted(valid)) or "none"
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (valid keys: {valid_list})"


# --- Dict → dataclass ---------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's init fields (strings under postponed annotations)."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the field types of {cls.__qualname__} ({exc}); "
            "config dataclasses must be defined at module level"
        ) from exc
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build_dataclass(cls: type[T], data: Any, path: str, source: str) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise _TypeMismatch(
            f"{_where(source, path)}expected a mapping for {cls.__name__}, got {_describe(data)}", path
        )
    field_types = _field_types(cls)
    for key in data:
        if key not in field_types:
            raise ConfigError(
                f"{_where(source, _join(path, key))}{_unknown_key_message(key, list(field_types))}"
            )

    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        field_path = _join(path, f.name)
        if f.name in data:
            kwargs[f.name] = _convert(field_types[f.name], data[f.name], field_path, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            expected = _type_name(field_types[f.name])
            raise ConfigError(f"{_where(source, field_path)}missing required field (expected {expected})")

    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        # __post_init__ validation knows the rule but not where the value came from.
        raise ConfigError(f"{_where(source, path)}{exc}") from exc


def _convert(tp: Any, value: Any, path: str, source: str) -> Any:
    """Check `value` against annotation `tp` and convert it (list → tuple, str → Path, int → float)."""

    def mismatch(expected: str) -> _TypeMismatch:
        return _TypeMismatch(f"{_where(source, path)}expected {expected}, got {_describe(value)}", path)

    if tp is Any:
        return value
    if tp is _NoneType:
        if value is None:
            return None
        raise mismatch("None")
    if _is_dataclass_type(tp):
        return _build_dataclass(tp, value, path, source)

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, args, value, path, source)
    if origin is Literal:
        # `type(...) is` so that True does not pass for Literal[1] (True == 1 in Python).
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise mismatch(f"one of {', '.join(repr(a) for a in args)}")

    if tp is bool:
        if isinstance(value, bool):
            return value
        raise mismatch("bool")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise mismatch("int")
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise mismatch("float")
    if tp is str:
        if isinstance(value, str):
            return value
        raise mismatch("str")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise mismatch("a path (str)")

    if tp in (tuple, list) or origin in (tuple, list):
        return _convert_sequence(tp, origin or tp, args, value, path, source)
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise mismatch(f"a mapping for {_type_name(tp)}")
        key_tp, value_tp = args or (Any, Any)
        return {
            _convert(key_tp, k, _join(path, k), source): _convert(value_tp, v, _join(path, k), source)
            for k, v in value.items()
        }
    raise TypeError(f"{_where(source, path)}unsupported config field type {_type_name(tp)}")


def _convert_union(tp: Any, args: tuple[Any, ...], value: Any, path: str, source: str) -> Any:
    # An arm whose outer type fits but whose contents are wrong gives the most useful error.
    nested_error: ConfigError | None = None
    for arm in args:
        try:
            return _convert(arm, value, path, source)
        except _TypeMismatch as exc:
            if exc.path != path and nested_error is None:
                nested_error = exc
        except ConfigError as exc:
            if nested_error is None:
                nested_error = exc
    if nested_error is not None:
        raise nested_error
    raise _TypeMismatch(f"{_where(source, path)}expected {_type_name(tp)}, got {_describe(value)}", path)


def _convert_sequence(
    tp: Any, origin: type, args: tuple[Any, ...], value: Any, path: str, source: str
) -> tuple[Any, ...] | list[Any]:
    # A str is a Sequence too, but never what a list/tuple field means.
    if not isinstance(value, (list, tuple)):
        raise _TypeMismatch(
            f"{_where(source, path)}expected a list for {_type_name(tp)}, got {_describe(value)}", path
        )
    if origin is list or not args or (len(args) == 2 and args[1] is Ellipsis):
        item_types = [args[0] if args else Any] * len(value)
    elif args == ((),):  # tuple[()]: the empty tuple
        item_types = []
    else:
        item_types = list(args)
    if len(item_types) != len(value):
        # Not a _TypeMismatch: it is a list, so in `tuple[int, int] | None` this error is the useful one.
        raise ConfigError(
            f"{_where(source, path)}expected {len(item_types)} items for {_type_name(tp)}, got {len(value)}"
        )
    items = [
        _convert(t, v, f"{path}[{i}]", source) for i, (t, v) in enumerate(zip(item_types, value, strict=True))
    ]
    return items if origin is list else tuple(items)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "<dict>") -> T:
    """Build dataclass `cls` from a (parsed YAML) mapping, checking keys and types recursively.

    Raises `ConfigError` for unknown keys (naming the closest valid key), missing required
    fields, values of the wrong type and `ValueError`s from `__post_init__`; every message starts
    with `source` and the dotted path of the field.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"config_from_dict needs a dataclass type, got {cls!r}")
    return _build_dataclass(cls, data, "", source)


def load_config(cls: type[T], path: str | Path) -> T:
    """Load dataclass `cls` from a YAML file; an empty file gives the defaults."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {at}invalid YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping for {cls.__name__} at the top level, got {_describe(data)}"
        )
    return config_from_dict(cls, data, source=str(path))


# --- Dataclass → dict ---------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples → lists, Path → str).

    `config_from_dict(type(cfg), config_to_dict(cfg)) == cfg` holds for every supported field
    type (an `Any` field holding a tuple comes back as a list).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return _to_plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write `cfg` as YAML, atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; a config is not a secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --- CLI overrides ------------------------------------------------------------------------------


def _section_type(tp: Any) -> Any:
    """The dataclass or dict type a dotted key can step into (unwrapping `X | None`), else None."""
    if _is_dataclass_type(tp) or tp is Any or tp is dict or typing.get_origin(tp) is dict:
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if _section_type(a) is not None]
        if len(arms) == 1:
            return _section_type(arms[0])
    return None


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """A copy of `cfg` with `dotted.key=value` overrides applied (values parsed as YAML).

    `["train.lr=3e-4", "model.encoder.depth=2", "model.channels=[32, 64]"]`. A mapping value
    replaces the whole section. The result is validated like a loaded file; errors name the
    override's key under the source '<overrides>'.
    """
    if isinstance(overrides, str):
        raise TypeError("apply_overrides takes a sequence of 'key=value' strings, not one string")
    data = config_to_dict(cfg)
    source = "<overrides>"
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{source}: {item!r}: expected 'dotted.key=value'")
        try:
            value = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: {key}: cannot parse value {raw!r} as YAML") from exc

        parts = key.split(".")
        node: dict[str, Any] = data
        tp: Any = type(cfg)
        for depth, part in enumerate(parts):
            path = ".".join(parts[: depth + 1])
            if not part:
                raise ConfigError(f"{source}: {key}: empty key segment")
            if _is_dataclass_type(tp):
                field_types = _field_types(tp)
                if part not in field_types:
                    raise ConfigError(f"{source}: {path}: {_unknown_key_message(part, list(field_types))}")
                child_tp = field_types[part]
            else:  # dict[K, V] or Any: any key may be added
                args = typing.get_args(tp)
                child_tp = args[1] if len(args) == 2 else Any
            if depth == len(parts) - 1:
                node[part] = value
                break
            tp = _section_type(child_tp)
            if tp is None:
                raise ConfigError(f"{source}: {path}: cannot set a sub-key of a {_type_name(child_tp)} field")
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{source}: {path}: cannot set a sub-key of {_describe(child)}")
            node = child
    return config_from_dict(type(cfg), data, source=source)
