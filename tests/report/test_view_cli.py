"""``univ view RUN_DIR``: prints (and would open) the run's report.html, serves the folder on localhost with
--serve, and says in one line, exit code 2, when the folder is not a run."""

import threading
import urllib.request

import pytest
from report_pages import write_demo

from univ import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("runs") / "demo")


def test_view_prints_the_page(run, capsys):
    assert cli.main(["view", str(run), "--no-open"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {(run / 'report.html').resolve().as_uri()}"


@pytest.mark.parametrize("make,fragment", [
    (lambda p: p, "is not a run folder"),
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: [(p / "config.json").write_text("{}"), p][1], "is not a run folder"),
])
def test_view_on_what_is_not_a_run_says_so(tmp_path, capsys, make, fragment):
    folder = make(tmp_path)
    assert cli.main(["view", str(folder), "--no-open"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"univ: error: RUN_DIR: {str(folder)!r} ") and fragment in err
    assert err.count("\n") == 1


def test_view_usage_errors(run, capsys):
    assert cli.main(["view"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert cli.main(["view", str(run), "--serve", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "univ: error: --port: must be in 0..65535, got 70000\n"


def test_serve_gives_the_folders_files(run):
    server = cli.serve(run, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for name in ("report.html", "features.html", "similarity.csv"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=10) as r:
                assert r.read() == (run / name).read_bytes()
    finally:
        server.shutdown()
        server.server_close()
