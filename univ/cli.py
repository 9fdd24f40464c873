"""Command line: ``univ run NAME [--quick] [--out DIR] [--threads N] [--executor inprocess|process|ray]
[--address ADDR] [--workers N] [--FIELD value ...]``, ``univ list``, ``univ config NAME``,
``univ sae train|match|view ...`` (see :mod:`univ.sae_commands`), ``univ view RUN_DIR``.

Analyses are found through the ``univ.analyses`` entry-point group (univ's own are declared in its
pyproject; any installed package can add more the same way): each entry names a module with a frozen
``Config`` (a :class:`univ.config.AnalysisConfig`) and ``run(cfg) -> Report``. The flags of ``univ run NAME``
derive from that ``Config``: ``univ run NAME --help`` lists them with their defaults and docstrings. Settings
are checked before any work: a bad one ends the command with one line naming the flag, exit code 2, and
nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from importlib.metadata import entry_points

from .config import SettingError, type_name
from .jobs import JobError
from .registry import unknown_name_error

GROUP = "univ.analyses"


def _entries() -> dict:
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def available() -> dict[str, str]:
    """Analysis name -> first line of its docstring (or why it cannot be imported)."""
    out = {}
    for name, ep in _entries().items():
        try:
            mod = ep.load()
        except Exception as e:  # one broken analysis must not hide the others
            out[name] = f"(cannot be imported: {type(e).__name__}: {e})"
            continue
        out[name] = ((mod.__doc__ or "").strip().splitlines() or [""])[0]
    return out


def load_analysis(name: str):
    """The module registered as analysis ``name`` (it has ``Config`` and ``run``)."""
    eps = _entries()
    if name not in eps:
        raise unknown_name_error("analysis", name, list(eps))
    mod = eps[name].load()  # re-raises the import error of a broken one
    if not (hasattr(mod, "Config") and hasattr(mod, "run")):
        raise ValueError(f"analysis {name!r}: entry point {eps[name].value!r} must name a module with Config and run")
    return mod


def _convert(raw: str, typ, field: str):
    """Parse a command-line string into a Config field's type."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if typ is int:
        return int(raw)
    if typ is float:
        return float(raw)
    if typ is str:
        return raw
    if origin is typing.Literal:
        for a in args:
            if raw == str(a):
                return a
        raise ValueError(f"choose one of {list(args)}")
    if origin in (tuple, list):
        items = json.loads(raw) if raw.strip().startswith("[") else [s for s in raw.split(",") if s]
        inner = args[0] if args else str
        return tuple(_convert(str(v), inner, field) for v in items)
    if origin is typing.Union or type(typ).__name__ == "UnionType":
        if raw.lower() == "none" and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _convert(raw, a, field)
                except ValueError:
                    continue
        raise ValueError(f"expected {type_name(typ)}")
    return json.loads(raw)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"univ: error: {message}\n")


def _field_type(typ, field: str):
    def parse(raw: str):
        try:
            return _convert(raw, typ, field)
        except (ValueError, json.JSONDecodeError) as e:
            raise argparse.ArgumentTypeError(f"cannot read {raw!r} as {type_name(typ)}: {e}") from None
    parse.__name__ = type_name(typ)
    return parse


def analysis_parser(name: str, cls) -> argparse.ArgumentParser:
    """The flags of ``univ run NAME``: the common ones and one per Config field."""
    doc = ((sys.modules[cls.__module__].__doc__ or "").strip().splitlines() or [""])[0]
    p = _Parser(prog=f"univ run {name}", description=doc)
    p.add_argument("--quick", action="store_true", help="the small, fast version (for CI and a first look)")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: univ's models and matrices are small, and one thread is usually "
                   "fastest, far faster on a busy machine)")
    p.add_argument("--executor", default="inprocess",
                   help="where the grid's jobs run: inprocess (default), process (a local pool of --workers processes) "
                   "or ray (the cluster at --address, or a local one of --workers CPUs started for the run); every "
                   "job's result is kept as a shard, so a rerun runs only the jobs that are missing")
    p.add_argument("--address", default=None,
                   help="the Ray cluster to use with --executor ray (e.g. auto, ray://HEAD:10001); default: start a "
                   "local one for the run")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (process) or CPUs of the local Ray cluster (ray); default: the cores here")
    hints = typing.get_type_hints(cls)
    docs = cls.field_docs()
    group = p.add_argument_group(f"settings of {name} (univ config {name} lists them too)")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        quick = f" (quick: {cls.QUICK[f.name]!r})" if f.name in cls.QUICK else ""
        text = f"{docs.get(f.name, '')} Default: {default!r}{quick}.".replace("%", "%%")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=type_name(hints[f.name]).upper()
                           if hints[f.name] in (int, float, str) else "VALUE", type=_field_type(hints[f.name], f.name),
                           default=None, help=text)
    return p


def build_config(mod, argv: list[str]):
    """(Config that runs, parsed common options) from ``univ run NAME`` arguments; SettingError when bad."""
    cls = mod.Config
    ns = analysis_parser(mod.__name__.split(".")[-1], cls).parse_args(argv)
    fields = {f.name for f in dataclasses.fields(cls)}
    explicit = {k: v for k, v in vars(ns).items() if k in fields and v is not None}
    if ns.threads < 1:
        raise SettingError("threads", f"must be >= 1, got {ns.threads}")
    check_executor(ns.executor, ns.address, ns.workers)
    return cls.resolve(quick=ns.quick, **explicit), ns


def check_executor(executor: str, address: str | None, workers: int | None) -> None:
    """--executor names an executor that can run here, --address goes with ray, --workers >= 1 (no torch, no Ray
    imported: a bad one stops the command at once)."""
    import importlib.util

    from .jobs import EXECUTORS

    if executor not in EXECUTORS:
        raise SettingError("executor", f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise SettingError("executor", "ray needs Ray, which is not installed here (pip install 'univ[ray]')")
    if address is not None:
        if executor != "ray":
            raise SettingError("address", f"only --executor ray connects to a cluster, got --executor {executor}")
        if not address.strip():
            raise SettingError("address", "expected a Ray address such as auto or ray://HEAD:10001, got ''")
    if workers is not None and workers < 1:
        raise SettingError("workers", f"must be >= 1, got {workers}")
    if workers is not None and executor == "inprocess":
        raise SettingError("workers", "needs --executor process or ray (inprocess runs one job at a time)")


def _cmd_run(name: str, argv: list[str]) -> int:
    mod = load_analysis(name)
    cfg, ns = build_config(mod, argv)
    from .report import check_parent_writable, format_table, run_dir, write  # after the checks: pandas is slow

    folder = run_dir(ns.out, name, cfg)
    check_parent_writable(folder)  # fail before any work; nothing is created until the report is written
    import torch

    from .jobs import make_executor, use_executor

    torch.set_num_threads(ns.threads)
    t0 = time.perf_counter()
    with use_executor(make_executor(ns.executor, workers=ns.workers, address=ns.address)) as ex:
        if ex.name == "ray":
            ex.start()  # the cluster and its workers' imports get ready while the analysis loads its data
        report = mod.run(cfg)
        executor = ex.describe()
    elapsed = time.perf_counter() - t0
    folder = write(report, folder, cfg, elapsed, extra={"quick": ns.quick, "threads": ns.threads,
                                                        "executor": executor})
    if report.summary and report.summary in report.tables:
        print(f"\n{report.summary}:\n{format_table(report.tables[report.summary])}")
    print(f"\n{name} finished in {elapsed:.1f} s; report: {folder / 'report.md'} (or univ view {folder})")
    return 0


_COMMON_VALUED = ("--out", "--threads", "--executor", "--address", "--workers")
_BOOL_WORDS = ("1", "0", "true", "false", "yes", "no", "on", "off")


def _cmd_compare(argv: list[str]) -> int:
    """``univ compare SPEC_A SPEC_B [...] [--FIELD value]``: ``univ run compare`` with the positional model specs
    as ``--models`` (a true/false flag may stand alone: ``--allow-different-tokenizers``)."""
    mod = load_analysis("compare")
    fields = {f"--{f.name.replace('_', '-')}": f.type for f in dataclasses.fields(mod.Config)}
    bools = {flag for flag, typ in fields.items() if typ in (bool, "bool")}
    specs, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        takes_value = arg in _COMMON_VALUED or (arg in fields and arg not in bools)
        if takes_value or (arg in bools and i + 1 < len(argv) and argv[i + 1].lower() in _BOOL_WORDS):
            rest += argv[i:i + 2]
            i += 2
            continue
        if arg in bools:
            rest += [arg, "true"]
        elif arg.startswith("-"):
            rest.append(arg)
        else:
            specs.append(arg)
        i += 1
    if "-h" in rest or "--help" in rest:
        parser = analysis_parser("compare", mod.Config)
        parser.prog = "univ compare"
        parser.usage = "univ compare MODEL [MODEL ...] [--data SPEC] [--layers ...] [--metrics ...] [--FIELD value]"
        parser.add_argument("specs", nargs="*", metavar="MODEL", help="model specs (hf:, tl:, py:, zoo:, "
                            "torchvision:): every layer of each is compared with every layer of the others")
        parser.print_help()
        return 0
    if specs and any(a == "--models" or a.startswith("--models=") for a in rest):
        raise SettingError("models", "give the models as positional specs or with --models, not both")
    return _cmd_run("compare", (["--models", json.dumps(specs)] if specs else []) + rest)


def _cmd_config(name: str) -> int:
    mod = load_analysis(name)
    docs = mod.Config.field_docs()
    for f in dataclasses.fields(mod.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        quick = f"  [quick: {mod.Config.QUICK[f.name]!r}]" if f.name in mod.Config.QUICK else ""
        print(f"--{f.name.replace('_', '-'):22s} {default!r:24s} {docs.get(f.name, '')}{quick}")
    return 0


def settings_parser(prog: str, cls) -> argparse.ArgumentParser:
    """Flags derived from a settings dataclass: the names in ``cls.POSITIONAL`` as positional arguments, fields
    without a default as required flags, every other field as an optional flag (None when not given)."""
    p = _Parser(prog=prog, description=(cls.__doc__ or "").strip().splitlines()[0])
    hints, docs = typing.get_type_hints(cls), cls.field_docs()
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = "" if required else f" Default: {f.default!r}."
        kw = dict(type=_field_type(hints[f.name], f.name), help=f"{docs.get(f.name, '')}{default}".replace("%", "%%"))
        if f.name in cls.POSITIONAL:
            p.add_argument(f.name, metavar=f.name.upper(), **kw)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, required=required, default=None,
                           metavar="VALUE" if hints[f.name] is bool else type_name(hints[f.name]).upper(), **kw)
    return p


def _cmd_sae(action: str | None, argv: list[str]) -> int:
    from .sae_commands import COMMANDS  # imports no torch: the settings are checked first

    if action not in COMMANDS:
        raise ValueError(f"sae: choose one of {list(COMMANDS)}: univ sae train MODEL --layer L [...], "
                         "univ sae match SAE_A SAE_B [...], univ sae view SAE [--others SAE,...] [...] (add --help "
                         "for the flags)")
    cls, run = COMMANDS[action]
    ns = settings_parser(f"univ sae {action}", cls).parse_args(argv)
    try:
        cfg = cls(**{k: v for k, v in vars(ns).items() if v is not None})
        import torch

        torch.set_num_threads(cfg.threads)
        run(cfg)
    except SettingError as e:
        if e.field in cls.POSITIONAL:  # a positional argument is named as the usage line shows it
            raise ValueError(f"{e.field.upper()}: {e.message}") from None
        raise
    return 0


def _cmd_view(argv: list[str]) -> int:
    """``univ view RUN_DIR [--serve] [--port N] [--no-open]``: open a run's report.html in the browser, or serve
    the run folder on localhost (for a machine you reach over ssh: forward the port)."""
    p = _Parser(prog="univ view", description="Open a run folder's report.html (its dashboards are linked from it).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder univ run, univ compare or univ sae match|view wrote")
    p.add_argument("--serve", action="store_true", help="serve the folder at http://127.0.0.1:PORT/ until Ctrl-C "
                   "instead of opening the file")
    p.add_argument("--port", type=int, default=8000, help="the port --serve listens on (0: any free one); "
                   "default 8000")
    p.add_argument("--no-open", action="store_true", help="print the page's address without starting a browser")
    ns = p.parse_args(argv)
    from .report.html import run_page

    page = run_page(ns.run_dir)
    if not 0 <= ns.port <= 65535:
        raise SettingError("port", f"must be in 0..65535, got {ns.port}")
    if not ns.serve:
        url = page.resolve().as_uri()
        opened = not ns.no_open and _open_browser(url)
        print(f"report: {url}" + ("" if opened or ns.no_open else " (no browser found here: open it in yours, or "
                                  "univ view --serve and forward the port)"))
        return 0
    server = serve(page.parent, ns.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/report.html"
    print(f"serving {page.parent} at {url} (Ctrl-C stops)", flush=True)
    if not ns.no_open:
        _open_browser(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _open_browser(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def serve(folder, port: int = 8000):
    """An HTTP server (not started) for ``folder`` on 127.0.0.1:``port`` (0: a free port); ValueError naming
    ``port`` when it cannot listen there."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # one line per request would bury the address printed above
            pass

    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                               functools.partial(Quiet, directory=str(folder)))
    except OSError as e:
        raise ValueError(f"port: cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="univ", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the analyses")
    p_run = sub.add_parser("run", help="run an analysis and write its report folder (univ run NAME --help)",
                           add_help=False)
    p_run.add_argument("name", nargs="?")
    sub.add_parser("compare", help="compare every layer of your models: univ compare SPEC_A SPEC_B [--data SPEC]",
                   add_help=False)
    p_show = sub.add_parser("config", help="print an analysis's settings, defaults and quick sizes")
    p_show.add_argument("name")
    sub.add_parser("sae", help="train an SAE on a model's layer, match two SAEs or see an SAE's feature dashboard "
                   "(univ sae train|match|view --help)", add_help=False).add_argument("action", nargs="?")
    sub.add_parser("view", help="open a run folder's report.html: univ view RUN_DIR [--serve]", add_help=False)
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command == "run":
            if args.name is None or args.name.startswith("-"):
                parser.error("run: name an analysis (univ list shows them): univ run NAME [--quick] [--FIELD value]")
            return _cmd_run(args.name, rest)
        if args.command == "compare":
            return _cmd_compare(rest)
        if args.command == "sae":
            return _cmd_sae(args.action, rest)
        if args.command == "view":
            return _cmd_view(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "list":
            for name, doc in available().items():
                print(f"{name:24s} {doc}")
            return 0
        return _cmd_config(args.name)
    except SettingError as e:
        print(f"univ: error: {e.for_cli()}", file=sys.stderr)
        return 2
    except JobError as e:  # jobs that kept failing: their shards and the manifest stay, a rerun runs only them
        print(f"univ: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # argparse's --help (0) and usage errors (2): main returns, it does not exit
        return e.code if isinstance(e.code, int) else 0
    except ValueError as e:
        print(f"univ: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
