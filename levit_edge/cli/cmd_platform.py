"""``levit-edge setup-platform``: provision an emulated CPU platform (once; offline afterwards)."""

from __future__ import annotations

from pathlib import Path

import typer

from levit_edge.cli.app import app
from levit_edge.cli.common import summary
from levit_edge.cli.output import log, output_options


@app.command("setup-platform")
@output_options
def setup_platform_cli(
    platform: str = typer.Argument(..., help="The CPU platform: aarch64."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Cache folder [default: $LEVIT_EDGE_PLATFORMS or ~/.cache/levit-edge/platforms].",
    ),
    onnxruntime: str | None = typer.Option(
        None, "--onnxruntime", help="ONNX Runtime release to provision [default: the installed one]."
    ),
    numpy: str | None = typer.Option(None, "--numpy", help="numpy release [default: the installed one]."),
    mirror: str = typer.Option("http://deb.debian.org/debian", "--mirror", help="Debian archive to use."),
) -> None:
    """Download the emulator (Debian trixie qemu-user), an arm64 Python 3.11 (Debian bookworm) and the
    aarch64 wheels of onnxruntime and numpy into the cache; later calls and 'validate --platform' reuse it."""
    from levit_edge.platforms.aarch64 import provision
    from levit_edge.settings import PlatformSetup

    done = provision(PlatformSetup(platform, cache, onnxruntime, numpy, mirror), progress=log.info)
    found = done.platform
    runtimes = ", ".join(sorted(found.runtimes))
    what = (
        f"downloaded {', '.join(done.downloaded)} ({done.download_bytes / 1e6:.0f} MB)"
        if done.downloaded
        else "already set up, nothing downloaded"
    )
    summary(
        f"{platform} platform ready in {found.folder}: qemu {found.qemu_version}, "
        f"Python {found.python_version}, onnxruntime {runtimes}; {what}",
        {
            "status": "ok",
            "platform": platform,
            "folder": str(found.folder),
            "downloaded": list(done.downloaded),
            "download_bytes": done.download_bytes,
            "record": dict(found.record),
        },
    )
