"""Logging, not print: the library logs, the edges configure it, and progress is a line per interval in a log."""

from __future__ import annotations

import ast
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tlops.cli import build_parser
from tlops.io.logs import LEVEL_ENV, configure_logging
from tlops.io.progress import INTERVAL_ENV, LoggedProgress, default_interval, progress

SRC = Path(__file__).resolve().parents[3] / "src" / "tlops"

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) tlops(\.\w+)*: ")


def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(SRC).as_posix(): ast.parse(path.read_text()) for path in sorted(SRC.rglob("*.py"))}


@pytest.fixture
def tlops_logger() -> Iterator[logging.Logger]:
    """The ``tlops`` logger as an unconfigured library sees it (records reach caplog), restored afterwards."""
    logger = logging.getLogger("tlops")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_library_modules_do_not_print() -> None:
    printing = {
        f"{name}:{node.lineno}"
        for name, tree in _modules().items()
        if not name.startswith("cli/") and name != "steps/ddp_worker.py"  # the edges: command line, torchrun worker
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    }
    assert printing == set(), "log through `logger = logging.getLogger(__name__)` instead of print"


LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def test_modules_log_through_their_own_logger() -> None:
    for name, tree in _modules().items():
        receivers = {
            node.func.value.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
            and isinstance(node.func.value, ast.Name)
        }
        assert "logging" not in receivers, f"{name} logs through the root logger"
        if "logger" in receivers:
            assigned = [
                ast.unparse(n.value)
                for n in tree.body
                if isinstance(n, ast.Assign) and [ast.unparse(t) for t in n.targets] == ["logger"]
            ]
            assert assigned == ["logging.getLogger(__name__)"], name


def test_tqdm_is_used_only_by_the_progress_helper() -> None:
    importing = set()
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            if any(m == "tqdm" or m.startswith("tqdm.") for m in modules):
                importing.add(name)
    assert importing == {"io/progress.py"}


class FakeClock:
    """A clock that only moves when the loop being timed says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _timed(items: int, seconds_each: float, clock: FakeClock) -> Iterator[int]:
    for index in range(items):
        clock.now += seconds_each
        yield index


def test_logged_progress_writes_one_line_per_interval(tlops_logger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tlops")
    clock = FakeClock()
    # 1,000 batches of 0.25 s: 250 s in all, so a line every 120 batches with a 30 s interval, and the closing one.
    loop = LoggedProgress(_timed(1000, 0.25, clock), "fine-tune epoch 1/3", total=1000, unit="batch", clock=clock)
    seen = 0
    for index in loop:
        seen += 1
        loop.set_postfix(loss=f"{1 / (index + 1):.3f}")

    assert seen == 1000
    lines = [r.getMessage() for r in caplog.records if r.name == "tlops.io.progress"]
    assert len(lines) == 9, lines
    assert lines[0] == "fine-tune epoch 1/3: 120/1000 batch (12%) in 00:30 (4 batch/s, 03:40 left, loss=0.008)"
    assert lines[7].startswith("fine-tune epoch 1/3: 960/1000 batch (96%) in 04:00 ")
    assert lines[8] == "fine-tune epoch 1/3: 1000/1000 batch (100%) in 04:10 (4 batch/s, loss=0.001)"
    assert not any("\r" in line or "\n" in line for line in lines)


def test_logged_progress_closes_with_the_totals_and_skips_short_loops(
    tlops_logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tlops")
    clock = FakeClock()
    # 50 items of 1 s without a known total: lines at 30 s, then the closing line at 50 s.
    list(LoggedProgress(_timed(50, 1.0, clock), "checking images", unit="img", clock=clock))
    assert [r.getMessage() for r in caplog.records] == [
        "checking images: 30 img in 00:30 (1 img/s)",
        "checking images: 50 img in 00:50 (1 img/s)",
    ]
    caplog.clear()
    # A loop shorter than the interval says nothing.
    list(LoggedProgress(_timed(20, 1.0, clock), "evaluating", total=20, clock=clock))
    assert caplog.records == []


def test_progress_off_a_terminal_logs_and_on_a_terminal_draws_a_bar(
    tlops_logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tlops")
    piped = io.StringIO()
    loop = progress(range(7), "evaluating", unit="batch", stream=piped, interval=0.0)
    assert isinstance(loop, LoggedProgress) and loop.total == 7  # the total comes from len()
    assert list(loop) == list(range(7))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7 and lines[-1].startswith("evaluating: 7/7 batch (100%) in ")
    assert piped.getvalue() == ""  # nothing drawn on the stream itself

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    caplog.clear()
    terminal = Terminal()
    bar = progress(range(7), "evaluating", unit="batch", stream=terminal)
    bar.set_postfix(loss="0.5")
    assert list(bar) == list(range(7))
    assert "\r" in terminal.getvalue() and "7/7" in terminal.getvalue()  # a tqdm bar, redrawn in place
    assert caplog.records == []


def test_progress_interval_is_read_from_the_environment_by_configure_logging() -> None:
    stream = io.StringIO()
    try:
        for text, expected in ((None, 30.0), ("2.5", 2.5), ("often", 30.0), ("-1", 0.0)):
            configure_logging(stream=stream, environ={} if text is None else {INTERVAL_ENV: text})
            assert default_interval() == expected
    finally:
        configure_logging(stream=stream, environ={})


def test_configure_logging_writes_concise_lines_to_stderr(
    tlops_logger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    configure_logging()
    configure_logging()  # again: replaces its handler, does not add a second one
    assert len(tlops_logger.handlers) == 1 and tlops_logger.propagate is False
    logging.getLogger("tlops.steps.fine_tune").info("strategy %s: %s", "full", "requested")
    logging.getLogger("tlops.steps.fine_tune").debug("not shown at INFO")
    logging.getLogger("somebody.else").warning("not ours")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert LOG_LINE.match(lines[0]) and lines[0].endswith(" INFO tlops.steps.fine_tune: strategy full: requested")

    monkeypatch.setenv(LEVEL_ENV, "warning")
    configure_logging()
    assert tlops_logger.level == logging.WARNING
    configure_logging("no-such-level")
    assert tlops_logger.level == logging.INFO
    stream = io.StringIO()
    configure_logging(logging.DEBUG, stream=stream)
    logging.getLogger("tlops.x").debug("shown")
    assert stream.getvalue().endswith(" DEBUG tlops.x: shown\n")


def test_cli_log_level_options() -> None:
    parser = build_parser()
    assert parser.parse_args(["compile"]).log_level == "INFO"
    assert parser.parse_args(["-v", "compile"]).log_level == "DEBUG"
    assert parser.parse_args(["--verbose", "compile"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "warning", "compile"]).log_level == "WARNING"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-level", "loud", "compile"])


def test_every_component_configures_logging_first() -> None:
    tree = _modules()["pipeline/components.py"]
    components = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and any("component" in ast.unparse(d) for d in n.decorator_list)
    ]
    assert len(components) >= 6  # one per step
    for function in components:
        statements = [s for s in function.body[1:] if not isinstance(s, ast.Import | ast.ImportFrom)]
        if ast.unparse(statements[0]) == "inputs = dict(locals())":  # the inputs, before any local is bound
            statements = statements[1:]
        assert ast.unparse(statements[0]) == "configure_logging()", function.name


EXECUTOR_LINES = ("Executing task", "[KFP Executor", '"executorInput"', '"parameterValues"', "Streamed logs")

TINY_PIPELINE = """
from kfp import dsl


@dsl.component(install_kfp_package=False)
def say(word: str) -> str:
    import logging

    from tlops.io.logs import configure_logging

    configure_logging()
    logging.getLogger("tlops.steps.say").info("said %s", word)
    if word == "fail":
        from tlops.errors import TlopsError

        raise TlopsError("cannot say fail: say something else")
    return word


@dsl.pipeline(name="tiny")
def tiny(word: str) -> None:
    say(word=word)
"""


def _tiny_pipeline(folder: Path) -> Any:
    """A one-step pipeline whose step logs a tlops line (a module of its own: KFP reads its source and annotations)."""
    import importlib.util

    path = folder / "tiny_pipeline.py"
    path.write_text(TINY_PIPELINE)
    spec = importlib.util.spec_from_file_location("tiny_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny


@pytest.mark.pipeline
def test_kfp_local_output_goes_to_stderr_and_only_the_steps_lines_unless_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A one-step pipeline through kfp.local, as run_locally runs it: quiet, verbose, and failing."""
    from kfp import local

    from tlops.pipeline.local_output import kfp_output_to_stderr

    monkeypatch.setenv(LEVEL_ENV, "INFO")
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    tiny = _tiny_pipeline(tmp_path)
    capfd.readouterr()
    for verbose in (False, True):
        with kfp_output_to_stderr(verbose):
            tiny(word="hello")
        out, err = capfd.readouterr()
        assert out == ""
        said = [line for line in err.splitlines() if line.endswith(" INFO tlops.steps.say: said hello")]
        assert len(said) == 1 and LOG_LINE.match(said[0].strip())
        executor = [line for line in err.splitlines() if any(marker in line for marker in EXECUTOR_LINES)]
        if verbose:
            assert {"Executing task", "[KFP Executor", '"parameterValues"'} <= {
                marker for marker in EXECUTOR_LINES for line in executor if marker in line
            }
        else:
            assert executor == [] and err.splitlines() == said, err
    with pytest.raises(RuntimeError), kfp_output_to_stderr(False):
        tiny(word="fail")
    out, err = capfd.readouterr()
    assert out == ""
    assert err.splitlines()[1] == "Traceback (most recent call last):", err
    assert "tlops.errors.TlopsError: cannot say fail: say something else" in err.splitlines()
    assert "[KFP Executor" not in err
