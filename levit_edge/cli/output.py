"""What every command shares for CI logs and people: ``--json``, ``-q``, ``-v`` and ``--log-file``.

``--json``: stdout carries exactly one JSON document (the command's result, or the error and exit code),
printed by ``main`` when the command ends; tables and the summary line are not printed. ``-q``: only the
error line on stderr. ``-v``: debug detail (every progress update). ``--log-file``: every message at
debug level with timestamps, whatever ``-q``/``-v`` say, appended to the file. Messages are ``logging``
records of the ``levit_edge`` logger (library modules log their steps there); the handlers are attached
for one command and removed.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

LOGGER = "levit_edge"
log = logging.getLogger(f"{LOGGER}.cli")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class OutputMode:
    """The output options of the command being run."""

    json: bool = False
    quiet: bool = False
    verbose: bool = False
    document: dict[str, Any] | None = None  # what --json prints; set by the command
    handlers: list[logging.Handler] = field(default_factory=list)
    saved_level: int = logging.NOTSET  # of the levit_edge logger, restored by reset()


MODE = OutputMode()


class ConsoleHandler(logging.Handler):
    """Log records as plain lines on a rich console (so they stay above a live progress bar)."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "console", True) is False:
            return
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a logging handler must never raise into the command
            self.handleError(record)


def configure(
    err_console: Console, stdout: Console, as_json: bool, quiet: bool, verbose: bool, log_file: Path | None
) -> None:
    """Set up the output of one command (``reset`` undoes it)."""
    from levit_edge.errors import UserError

    if quiet and verbose:
        raise UserError("-q/--quiet and -v/--verbose exclude each other")
    reset()
    MODE.json, MODE.quiet, MODE.verbose, MODE.document = as_json, quiet, verbose, None
    stdout.quiet = as_json or quiet  # --json: nothing but the one document on stdout
    root = logging.getLogger(LOGGER)
    MODE.saved_level = root.level
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler = ConsoleHandler(err_console, level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    MODE.handlers.append(handler)
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write --log-file {log_file}: {exc.strerror or exc}") from None
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        MODE.handlers.append(file_handler)
    for h in MODE.handlers:
        root.addHandler(h)
    root.setLevel(logging.DEBUG)
    # the CLI owns these lines: a handler some dependency put on the root logger (ONNX Runtime's tools
    # call logging.basicConfig) must not print them a second time, in its own format
    root.propagate = False


def reset() -> None:
    """Detach this command's log handlers (closing the log file) and restore the logger's level."""
    root = logging.getLogger(LOGGER)
    for h in MODE.handlers:
        root.removeHandler(h)
        h.close()
    if MODE.handlers:
        root.setLevel(MODE.saved_level)
        root.propagate = True
    MODE.handlers.clear()


def set_result(document: dict[str, Any]) -> None:
    """The command's result: what ``--json`` prints."""
    MODE.document = document


def _plain(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf: a consumer's parser would reject the document
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_document(command: str, exit_code: int, error: str | None = None) -> str:
    """The one JSON document of ``--json``: ``command``, ``exit_code``, ``status``, the result, ``error``."""
    body = dict(MODE.document or {})
    status = body.pop("status", "ok" if exit_code == 0 else "error")
    doc: dict[str, Any] = {**body, "command": command, "exit_code": exit_code, "status": status}
    if error is not None:
        doc["error"] = error
    return json.dumps(_plain(doc), default=str, allow_nan=False)


_OPTIONS = (
    inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            False, "--json", help="Print one JSON document on stdout (status, paths, figures) and no table."
        ),
        annotation=bool,
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--quiet", "-q", help="Print only errors."),
        annotation=bool,
    ),
    inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--verbose", "-v", help="Print debug detail (every progress step)."),
        annotation=bool,
    ),
    inspect.Parameter(
        "log_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--log-file", help="Also append every message, with times, to this file."),
        annotation=Path | None,
    ),
)


def output_options(func: F) -> F:
    """Decorator (below ``@app.command``): add ``--json``, ``-q``, ``-v`` and ``--log-file`` to a command."""
    from levit_edge.cli.consoles import console, err_console

    signature = inspect.signature(func, eval_str=True)

    @functools.wraps(func)
    def wrapper(
        *args: Any, as_json: bool, quiet: bool, verbose: bool, log_file: Path | None, **kwargs: Any
    ) -> Any:
        configure(err_console, console, as_json, quiet, verbose, log_file)
        return func(*args, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *_OPTIONS]
    )
    wrapper.__annotations__ = {
        **{p.name: p.annotation for p in signature.parameters.values()},
        **{p.name: p.annotation for p in _OPTIONS},
        "return": signature.return_annotation,
    }
    return wrapper  # type: ignore[return-value]
