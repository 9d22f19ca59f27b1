"""``levit-edge inspect``: what an ONNX/ORT model, manifest or run directory holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from levit_edge.cli.app import app, console
from levit_edge.cli.common import summary
from levit_edge.cli.output import output_options, set_result


@app.command("inspect")
@output_options
def inspect_cli(
    path: Path = typer.Argument(..., help="model.onnx, model.ort, manifest.json or a run directory"),
) -> None:
    """Show inputs, outputs, op histogram, metadata and Q/DQ count, or a run's deliverables and hashes.

    With --json the description itself is the document (its "kind" says which; a run's own command
    line is "run_command").
    """
    from levit_edge.inspect import inspect_path

    info = inspect_path(path)
    # the run's own command line is "run_command": "command" names the levit-edge command of --json
    set_result({"status": "ok", **{("run_command" if k == "command" else k): v for k, v in info.items()}})
    sealed = info.get("sealed", True)
    edited = "" if sealed else ", but manifest.json was edited since it was written: run verify"
    if info["kind"] == "run":
        table = Table("file", "size", "sha256", "", title=f"{info['path']} ({info['status']}{edited})")
        for name, entry in info["files"].items():
            mark = "firmware" if name in info.get("firmware", ()) else ""
            table.add_row(name, f"{entry['size']:,}", entry["sha256"], mark)
        console.print(table)
    else:
        for key in ("inputs", "outputs"):
            for io in info[key]:
                shape = "" if io["shape"] is None else f" {io['shape']}"
                console.print(f"{key[:-1]:6} {io['name']} {io['type']}{shape}", markup=False)
        if "ops" in info:
            table = Table("op", "count", title=f"{info['nodes']} nodes, opset {info['opset']}")
            for op, count in info["ops"].items():
                table.add_row(op, str(count))
            console.print(table)
        if info.get("operators"):
            table = Table("domain", "opset", "operator", "types", title="operators a reduced build needs")
            for op in info["operators"]:
                table.add_row(
                    op["domain"],
                    str(op["opset"]),
                    op["op"],
                    json.dumps(op["types"]) if op["types"] else "all",
                )
            console.print(table)
        for key, value in info["metadata"].items():
            console.print(
                f"{key}: {json.dumps(value) if not isinstance(value, str) else value}", markup=False
            )
    if info["kind"] == "run":
        firmware = f" ({len(info['firmware'])} firmware)" if info.get("firmware") else ""
        summary(f"run {info['path']}: {len(info['files'])} files{firmware}, status {info['status']}{edited}")
    elif info["kind"] == "onnx":
        summary(
            f"{path}: {info['nodes']} nodes, {info['quantize_linear']} QuantizeLinear / "
            f"{info['dequantize_linear']} DequantizeLinear, {info['size'] / 1e6:.1f} MB"
        )
    else:
        summary(
            f"{path}: ONNX Runtime format model, {info['size'] / 1e6:.1f} MB, "
            f"{len(info['operators'])} operators, sha256 {info['sha256'][:16]}"
        )
