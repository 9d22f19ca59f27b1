"""The Typer application: one small module per command, each parsing, calling the library, printing.

Library code raises :class:`~levit_edge.errors.UserError` (exit 1), :class:`AccuracyGateFailed` (exit 3)
or :class:`EngineUnavailable` (exit 4); ``main`` turns those into one clear line and the exit code.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from levit_edge import __version__
from levit_edge.errors import AccuracyGateFailed, EngineUnavailable, UserError

app = typer.Typer(
    name="levit-edge",
    help="Take a timm LeViT to edge devices: fused FP32 ONNX, INT8 for ONNX Runtime and TensorRT, "
    "accuracy-gated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map library exceptions to exit codes."""
    _register_commands()
    try:
        rc = app(args=argv, standalone_mode=False)
    except (UserError, AccuracyGateFailed, EngineUnavailable) as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (unknown option, missing argument, bad value): Typer's own message, exit 2.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    # standalone_mode=False makes Click return (not raise) the code of a typer.Exit inside a command.
    sys.exit(rc if isinstance(rc, int) else 0)


def _register_commands() -> None:
    """Import the command modules; each registers itself on ``app`` with ``@app.command``."""
    import importlib
    import pkgutil

    import levit_edge.cli as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"levit_edge.cli.{info.name}")
