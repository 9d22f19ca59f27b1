"""The Typer application: one small module per command, each parsing, calling the library, printing.

Library code raises :class:`~levit_edge.errors.UserError` (exit 1), :class:`AccuracyGateFailed` (exit 3)
or :class:`EngineUnavailable` (exit 4); ``main`` turns those into one clear line and the exit code, as it
does with an environmental write failure (full disk, quota, read-only file system: exit 1). SIGINT, SIGTERM
and SIGHUP unwind the command like Ctrl-C (a staged run is removed) and exit 128 + the signal number.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

import typer

from levit_edge import __version__
from levit_edge.cli.consoles import console, err_console
from levit_edge.errors import AccuracyGateFailed, EngineUnavailable, RunMismatch, UserError

app = typer.Typer(
    name="levit-edge",
    help="Take a timm LeViT to edge devices: fused FP32 ONNX, INT8 for ONNX Runtime and TensorRT, "
    "accuracy-gated.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would eat every "[default: ...]" and label flags "<bool>".
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"levit-edge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """levit-edge command line."""


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP, so that each unwinds the command like Ctrl-C
    (a staged run is removed) and the exit code says which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # signals turned into Interrupted during this command


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (SIGTERM's and SIGHUP's defaults end the
    process at once, leaving partial files). A signal the parent set to be ignored (``nohup``, a background
    job of a script) stays ignored."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupted)


# OSError numbers that mean "the environment refused a write", not a bug.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE}
    | {errno.ENAMETOOLONG}  # a path no option check caught (levit_edge.paths): still one line naming it
)


def _describe_os_error(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{f' [{code}]' if code else ''}{where}"


def _interrupted(exc: KeyboardInterrupt) -> NoReturn:
    """One line on stderr, exit 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    err_console.print(f"interrupted by {signal.Signals(signum).name}", markup=False)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map library exceptions to exit codes.

    With ``--json`` the command's one JSON document is printed on stdout whatever the exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    code: int | str | None = 1
    error: str | None = None
    try:
        _run(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
        error = _last_error[0] if _last_error else None
        raise
    finally:
        from levit_edge.cli.output import MODE, json_document, reset

        reset()
        wanted = MODE.json or ("--json" in args and not {"-h", "--help"} & set(args))
        if wanted:
            command = next((a for a in args if not a.startswith("-")), "")
            exit_code = code if isinstance(code, int) else 0 if code is None else 1
            sys.stdout.write(json_document(command, exit_code, error) + "\n")
            sys.stdout.flush()
        MODE.json = False
        _last_error.clear()


_last_error: list[str] = []


def _error(message: str) -> None:
    from levit_edge.cli.output import log

    _last_error.append(message)
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    log.error("error: %s", message, extra={"console": False})  # for --log-file: stderr has it already


@contextlib.contextmanager
def _warnings_held() -> Iterator[list[warnings.WarningMessage]]:
    """Hold back the warnings dependencies print (torch, timm, Pillow) while the command runs: a command
    that fails prints its one error line and nothing else; one that succeeds shows them at its end.

    Pillow's DecompressionBombWarning (an image beyond ``Image.MAX_IMAGE_PIXELS``) becomes an error, so the
    image is refused by name like any unreadable one (``--skip-bad`` leaves it out) instead of decoded.
    """
    with warnings.catch_warnings(record=True) as held:
        # by its text: importing Pillow for its class would slow every command's start
        warnings.filterwarnings("error", r"Image size \(\d+ pixels\) exceeds limit", RuntimeWarning)
        try:
            yield held
        except BaseException:
            held.clear()
            raise
    for w in held:  # as Python would have printed them
        sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))


def _run(argv: list[str]) -> None:
    _register_commands()
    install_signal_handlers()
    try:
        with _warnings_held():
            rc = app(args=argv, standalone_mode=False)
    except (UserError, AccuracyGateFailed, EngineUnavailable, RunMismatch) as exc:
        from levit_edge.cli.output import MODE

        result = getattr(exc, "result", None)
        if result is not None and MODE.document is None:
            MODE.document = result_document(result)
        _error(str(exc))
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        if _received:
            _interrupted(Interrupted(_received[0]))
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error(_describe_os_error(exc))
        sys.exit(1)
    except typer.TyperException as exc:
        # Usage errors (unknown option, missing argument, bad value): Typer's own message, exit 2.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        _last_error.append(str(getattr(exc, "message", exc)))
        sys.exit(int(getattr(exc, "exit_code", 2)))
    # Typer turns KeyboardInterrupt (so also Interrupted) into Exit(130), which Click returns here.
    if _received:
        _interrupted(Interrupted(_received[0]))
    # standalone_mode=False makes Click return (not raise) the code of a typer.Exit inside a command.
    sys.exit(rc if isinstance(rc, int) else 0)


def result_document(result: object) -> dict[str, object]:
    """The ``--json`` body of a run (a :class:`levit_edge.flows.job.RunResult`)."""
    report: dict[str, object] = getattr(result, "report", {}) or {}
    run_dir = getattr(result, "run_dir", None)
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file()) if run_dir and run_dir.is_dir() else []
    keys = ("accuracy", "drop", "agreement", "kl", "thresholds", "latency", "accuracy_budget")
    return {
        "status": getattr(result, "status", None),
        "run_dir": str(run_dir) if run_dir else None,
        "report": str(run_dir / "report.html") if run_dir else None,
        "files": files,
        **{k: report[k] for k in keys if k in report},
        "engine_reason": getattr(result, "engine_reason", None),
    }


def _register_commands() -> None:
    """Import the command modules; each registers itself on ``app`` with ``@app.command``."""
    import importlib
    import pkgutil

    import levit_edge.cli as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"levit_edge.cli.{info.name}")
