"""Analysis settings: the one skeleton every analysis's ``Config`` derives from.

An analysis declares a frozen dataclass with a docstring under each field, the sizes of its quick version in
``QUICK``, and its own checks in ``validate``:

    @dataclass(frozen=True)
    class Config(AnalysisConfig):
        QUICK: ClassVar[dict] = {"seeds": 2, "epochs": 6}
        seeds: int = 3
        \"\"\"Trained networks per architecture.\"\"\"
        def validate(self):
            check_range(self, "seeds", low=1)

``Config.resolve(quick=True, seeds=4)`` is the config that runs: the defaults, then the quick sizes, then the
explicit settings (which win). What runs is what ``config.json`` records and what the report shows: there
is no separate "effective" view. Every field is type-checked when the dataclass is built, then ``validate``
checks ranges and what the run will need, so a bad setting fails before any work with a
:class:`SettingError` that names the setting, the value and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any, ClassVar


class SettingError(ValueError):
    """A bad analysis setting: ``field`` names it (the CLI shows it as ``--field-name``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def for_cli(self) -> str:
        return f"--{self.field.replace('_', '-')}: {self.message}"


def _type_ok(value, typ) -> bool:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is Any:
        return True
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    if typ is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin is typing.Union or type(typ).__name__ == "UnionType":
        return any(_type_ok(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        if origin is tuple and args:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    return True


def type_name(typ) -> str:
    """A short human name of a field type ("int", "float", "one of ['a', 'b']", "list of str")."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (tuple, list):
        return f"comma-separated {type_name(args[0]) if args else 'values'}"
    if origin is typing.Union or type(typ).__name__ == "UnionType":
        return " or ".join(type_name(a) for a in args)
    if typ is type(None):
        return "none"
    return getattr(typ, "__name__", str(typ))


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """Base of every analysis's settings (see the module docstring)."""

    QUICK: ClassVar[dict] = {}
    """Field -> value for the small, fast version (``--quick``); explicit settings still win."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # JSON and the CLI give lists; the config keeps hashable tuples
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if isinstance(value, int) and not isinstance(value, bool) and hints[f.name] is float:
                object.__setattr__(self, f.name, float(value))
            elif not _type_ok(value, hints[f.name]):
                raise SettingError(f.name, f"expected {type_name(hints[f.name])}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Range checks and what the run will need; raise :class:`SettingError` (see ``check_*``)."""

    @classmethod
    def resolve(cls, quick: bool = False, **settings):
        """The config that runs: defaults, then ``QUICK`` when ``quick``, then ``settings`` (they win)."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in settings:
            if key not in names:
                from .registry import unknown_name_error

                raise unknown_name_error(f"setting of {cls.__module__.split('.')[-1]}", key, sorted(names))
        values = {**(cls.QUICK if quick else {}), **settings}
        return cls(**values)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Each field's docstring (the string literal under it), read from the class source."""
        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            try:
                tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
            except (OSError, TypeError, SyntaxError):
                continue
            body = tree.body[0].body
            for node, nxt in zip(body, body[1:]):
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                        and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                        and isinstance(nxt.value.value, str):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
        return docs


# --------------------------------------------------------------------------------------------------
# checks for ``validate``


def check_range(cfg, field: str, low=None, high=None, low_open: bool = False, high_open: bool = False) -> None:
    """``low <= cfg.field <= high`` (open ends with ``low_open``/``high_open``; None: unbounded)."""
    v = getattr(cfg, field)
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high or v != v:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise SettingError(field, f"must be {' and '.join(s for s in (lo, hi) if s)}, got {v!r}")


def check_choices(cfg, field: str, allowed) -> None:
    """Every entry of ``cfg.field`` (a value or a tuple of values) is one of ``allowed``."""
    v = getattr(cfg, field)
    allowed = list(allowed)
    for item in (v if isinstance(v, (tuple, list)) else (v,)):
        if item not in allowed:
            raise SettingError(field, f"unknown value {item!r}; choose from {allowed}")


def check_device(cfg, field: str = "device") -> None:
    """``cfg.field`` names a device that exists here ("cpu", "cuda", "cuda:N", "mps" or "auto")."""
    import importlib.metadata

    value = getattr(cfg, field)
    if value in ("cpu", "auto"):
        return
    try:  # a CPU-only torch build answers for CUDA without the second it takes to import torch
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    if isinstance(value, str) and value.startswith("cuda") and version.endswith("+cpu"):
        raise SettingError(field, f"{value!r} is not available (torch {version} is a CPU-only build); "
                           "devices here: ['cpu']")
    from .utils import resolve_device

    try:
        resolve_device(getattr(cfg, field))
    except ValueError as e:
        raise SettingError(field, str(e).removeprefix("device: ")) from None
