"""Command line: ``univ run NAME [--quick] [--out DIR] [--set key=value ...] [--FIELD value ...]``
and ``univ list``.

Each analysis is a module in the ``analyses`` package with a frozen dataclass ``Config`` and
``run(cfg) -> Report``. The command line derives from ``Config``: every field can be set with
``--set field=value`` or ``--field value``; ``--quick`` sets ``quick=True``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pkgutil
import sys
import time
import typing

from ._checks import unknown_name_error


def available() -> dict[str, str]:
    """Analysis name -> first line of its docstring."""
    import analyses

    out = {}
    for info in sorted(pkgutil.iter_modules(analyses.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"analyses.{info.name}")
        except Exception as e:  # one broken analysis must not hide the others
            out[info.name] = f"(cannot be imported: {type(e).__name__}: {e})"
            continue
        if hasattr(mod, "Config") and hasattr(mod, "run"):
            out[info.name] = ((mod.__doc__ or "").strip().splitlines() or [""])[0]
    return out


def load_analysis(name: str):
    names = available()
    if name not in names:
        raise unknown_name_error("analysis", name, names)
    return importlib.import_module(f"analyses.{name}")  # re-raises the import error of a broken one


def _convert(raw: str, typ, field: str):
    """Parse a command-line string into a Config field's type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    try:
        if typ is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is str:
            return raw
        if origin is typing.Literal:
            if raw not in [str(a) for a in args]:
                raise ValueError(f"choose one of {list(args)}")
            return type(args[0])(raw)
        if origin in (tuple, list):
            items = json.loads(raw) if raw.strip().startswith("[") else [s for s in raw.split(",") if s]
            inner = args[0] if args else str
            vals = [_convert(str(v), inner, field) for v in items]
            return tuple(vals) if origin is tuple else vals
        if origin is typing.Union or type(typ).__name__ == "UnionType":
            if raw.lower() == "none" and type(None) in args:
                return None
            for a in args:
                if a is type(None):
                    continue
                try:
                    return _convert(raw, a, field)
                except ValueError:
                    continue
            raise ValueError(raw)
        return json.loads(raw)
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"--{field}: cannot read {raw!r} as {typ}: {e}") from None


def build_config(module, overrides: dict[str, str], quick: bool = False):
    """Config of ``module`` with command-line overrides (strings) converted to each field's type."""
    cls = module.Config
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in overrides.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise unknown_name_error(f"setting for {module.__name__.split('.')[-1]}", key, sorted(fields))
        values[key] = _convert(raw, hints[key], key)
    if quick:
        if "quick" not in fields:
            raise ValueError(f"--quick: analysis {module.__name__} has no quick mode")
        values["quick"] = True
    return cls(**values)


def field_docs(cls) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), read from the class source."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(getattr(nxt, "value", None), ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_extra(extra: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}; use --field value or --set field=value")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            val = extra[i + 1]
            i += 2
        else:
            val, i = "true", i + 1
        out[key] = val
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="univ", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the analyses")
    p_run = sub.add_parser("run", help="run an analysis and write its report folder")
    p_run.add_argument("name")
    p_run.add_argument("--quick", action="store_true", help="small, fast version (for CI and a first look)")
    p_run.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a Config field")
    p_run.add_argument("--threads", type=int, default=1,
                       help="torch threads (default 1: univ's models and matrices are small, and one thread is "
                       "usually fastest, far faster on a busy machine)")
    p_show = sub.add_parser("config", help="print an analysis's Config fields and defaults")
    p_show.add_argument("name")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "list":
            for name, doc in available().items():
                print(f"{name:24s} {doc}")
            return 0
        if args.command == "config":
            mod = load_analysis(args.name)
            docs = field_docs(mod.Config)
            for f in dataclasses.fields(mod.Config):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                print(f"--{f.name.replace('_', '-'):22s} {default!r:24s} {docs.get(f.name, '')}")
            return 0
        if extra and args.command != "run":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        mod = load_analysis(args.name)
        overrides = _parse_extra(extra)
        for item in args.set:
            if "=" not in item:
                raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            overrides[k] = v
        cfg = build_config(mod, overrides, quick=args.quick)
        from .report import check_writable, run_dir, write

        folder = check_writable(run_dir(args.out, args.name, cfg))  # fail before any training starts
        if args.threads < 1:
            raise ValueError(f"--threads: must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        report = mod.run(cfg)
        elapsed = time.perf_counter() - t0
        write(report, folder, cfg, elapsed)
        if report.summary and report.summary in report.tables:
            from .report import format_table

            print(f"\n{report.summary}:\n{format_table(report.tables[report.summary])}")
        print(f"\n{args.name} finished in {elapsed:.1f} s; report: {folder / 'report.md'}")
        return 0
    except ValueError as e:
        print(f"univ: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
