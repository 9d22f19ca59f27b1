"""The command line as CI logs and people meet it: start-up imports, help, exit codes, --json/-q/-v.

Every command runs as a real subprocess of the console entry point, on run directories made by the
library's own manifest writer and a Q/DQ model built with onnx.helper: no model is trained here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from levit_edge.runs.manifest import write_manifest

HEAVY = ("torch", "timm", "onnxruntime", "onnx", "matplotlib")
# what each light command may import: only check-trt reads an ONNX graph
ALLOWED = {"check-trt": {"onnx"}}

_PROBE = """
import json, os, sys
HEAVY = os.environ["PROBE_HEAVY"].split(",")
from levit_edge.cli.app import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump({"code": code, "modules": sorted(m for m in HEAVY if m in sys.modules)}, fh)
"""


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The console entry point in a subprocess, stdout and stderr piped (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-c", "from levit_edge.cli.app import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def make_run(root: Path, extra_name: str = "notes.txt") -> Path:
    run = root / "run"
    run.mkdir()
    (run / extra_name).write_text("a deliverable\n")
    (run / "report.json").write_text(json.dumps({"status": "passed"}))
    write_manifest(run, {"status": "passed", "model": {"name": "levit_128s"}})
    return run


def make_qdq_model(path: Path) -> Path:
    """images -> QuantizeLinear -> DequantizeLinear -> Conv(float weights) -> logits."""
    weight = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="q0"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq0"),
            helper.make_node("Conv", ["dq", "w"], ["logits"], name="conv0"),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 4, 4])],
        [weight, scale, zero],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["export", "--help"],
        ["debug", "-h"],
        ["inspect", "{run}"],
        ["inspect", "{run}", "--json"],
        ["verify", "{run}"],
        ["check-trt", "{model}"],
    ],
    ids=lambda c: " ".join(c),
)
def test_light_commands_import_no_heavy_library(tmp_path: Path, command: list[str]) -> None:
    run = make_run(tmp_path)
    model = make_qdq_model(tmp_path / "m.onnx")
    args = [a.format(run=run, model=model) for a in command]
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PROBE_OUT": str(out), "PROBE_HEAVY": ",".join(HEAVY)},
        timeout=300,
    )
    probe = json.loads(out.read_text())
    assert probe["code"] in (0, 1, None), proc.stderr
    assert "Traceback" not in proc.stderr
    assert set(probe["modules"]) <= ALLOWED.get(command[0], set()), probe


@pytest.mark.parametrize("command", ["export", "build-engine", "demo", "validate", "bench"])
def test_help_shows_defaults_and_no_bool_metavar(command: str) -> None:
    proc = cli(command, "-h")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "<bool>" not in text
    assert "[default:" in text
    expected = {
        "export": ("[default: 224]", "[default: onnx]", "[default: 512]", "[default: 17]"),
        "build-engine": ("[default: 8]", "[default: none]", "[default: model.int8.plan beside the model]"),
        "demo": ("[default: artifacts]", "[default: demo-TIMESTAMP]"),
        "validate": ("[default: 1.0]", "[default: 32]"),
        "bench": ("[default: 1,16]", "[default: all]"),
    }[command]
    flat = " ".join(text.split())  # help text is wrapped to the width of the help formatter
    for fragment in expected:
        assert fragment in flat, fragment


def test_shell_completion_is_offered() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    assert "--install-completion" in proc.stdout and "--show-completion" in proc.stdout


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["export", "--target", "foo"], "--target"),
        (["export", "--calib-method", "median"], "--calib-method"),
        (["export", "--ort-profile", "arm"], "--ort-profile"),
        (["build-engine", "m.onnx", "--hardware-compatibility", "any"], "--hardware-compatibility"),
    ],
)
def test_bad_choice_is_a_usage_error(tmp_path: Path, args: list[str], name: str) -> None:
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Usage:" in proc.stderr and name in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_mismatch_has_its_own_exit_code(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "notes.txt").write_text("changed after the run\n")
    proc = cli("verify", run)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.startswith("error: ") and "notes.txt" in proc.stderr
    assert cli("verify", tmp_path / "nope").returncode == 1  # not a run at all: a user error
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "| 5 | " in readme  # documented in the exit-code table


def test_unknown_config_key_says_did_you_mean(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('model = "levit_128s"\nmax_dorp = 0.5\n')
    proc = cli("export", "--config", cfg, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "unknown key 'max_dorp'" in lines[0]
    assert "did you mean 'max_drop'" in lines[0]
    assert "workspace_mb" not in lines[0]  # not the list of every key


@pytest.mark.parametrize("command", ["verify", "inspect", "check-trt"])
def test_json_is_one_document_on_stdout(tmp_path: Path, command: str) -> None:
    target = make_qdq_model(tmp_path / "m.onnx") if command == "check-trt" else make_run(tmp_path)
    proc = cli(command, target, "--json")
    doc = json.loads(proc.stdout)  # the whole of stdout is one document
    assert isinstance(doc, dict)
    assert doc["command"] == command and doc["exit_code"] == proc.returncode
    if command == "verify":
        assert proc.returncode == 0 and doc["status"] == "ok" and doc["mismatches"] == []
    if command == "inspect":
        assert doc["kind"] == "run" and set(doc["files"]) == {"notes.txt", "report.json"}
    if command == "check-trt":
        assert doc["status"] in ("ok", "violations")
        assert isinstance(doc["violations"], list)


def test_json_on_failure_carries_the_error_and_code(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "report.json").write_text("{}")
    proc = cli("verify", run, "--json")
    assert proc.returncode == 5
    doc = json.loads(proc.stdout)
    assert doc["status"] == "mismatch" and doc["exit_code"] == 5
    assert any("report.json" in m for m in doc["mismatches"])
    assert "report.json" in doc["error"]
    usage = cli("export", "--target", "foo", "--json", cwd=tmp_path)
    assert usage.returncode == 2 and json.loads(usage.stdout)["exit_code"] == 2


def test_quiet_prints_only_errors_and_log_file_gets_everything(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ok = cli("verify", run, "-q")
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == ""
    log = tmp_path / "levit.log"
    cfg = tmp_path / "edge.toml"
    cfg.write_text("colour = 1\n")
    bad = cli("export", "--config", cfg, "-q", "--log-file", log, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert not list((tmp_path).glob("artifacts"))
    assert cli("verify", run, "-q", "-v").returncode == 1  # contradictory


def test_piped_output_is_never_cut_at_80_columns(tmp_path: Path) -> None:
    long_name = "deliverable-" + "x" * 150 + ".bin"
    run = make_run(tmp_path, extra_name=long_name)
    (run / long_name).write_text("changed\n")
    proc = cli("verify", run)
    assert proc.returncode == 5
    lines = [line for line in proc.stdout.splitlines() if line.startswith("mismatch:")]
    assert len(lines) == 1 and long_name in lines[0], proc.stdout
    table = cli("inspect", run)
    assert any(long_name in line for line in table.stdout.splitlines()), table.stdout


_HOOKS = """
import sys
from levit_edge.cli.app import console, err_console
from levit_edge.cli.common import RichHooks
from levit_edge.cli.output import configure, reset
configure(err_console, console, False, False, "-v" in sys.argv, None)
with RichHooks(lines="lines" in sys.argv) as hooks:
    hooks.stage("fallback")
    for done in range(0, 41):
        hooks.progress("sensitivity int8.ort", done, 40)
reset()
"""


@pytest.mark.parametrize("mode", ["lines", "plain", "plain-v"])
def test_progress_off_a_terminal_is_a_line_per_step(mode: str) -> None:
    """Long commands (debug, --accuracy-budget) print a line per stage and tenth of a task; others stay
    quiet (stderr is for the error line) unless -v asks for every update."""
    proc = subprocess.run(
        [sys.executable, "-c", _HOOKS, mode, "-v" if mode.endswith("-v") else ""],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    if mode == "plain":
        assert lines == []
        return
    assert lines[0] == "stage fallback"
    steps = [line for line in lines if line.startswith("sensitivity int8.ort ")]
    assert steps[-1] == "sensitivity int8.ort 40/40 (100%)"
    assert len(steps) == (41 if mode == "plain-v" else 11)  # 0%, 10%, ... 100%


def test_verbose_shows_debug_detail_and_the_log_file_keeps_it(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    log = tmp_path / "v.log"
    assert "re-hashing" not in cli("verify", run).stderr
    verbose = cli("verify", run, "-v", "--log-file", log)
    assert verbose.returncode == 0 and "re-hashing" in verbose.stderr
    quiet = cli("verify", run, "-q", "--log-file", log)
    assert quiet.returncode == 0 and quiet.stderr == ""
    logged = log.read_text().splitlines()
    assert sum("re-hashing" in line for line in logged) == 2  # appended: -q/-v do not change the file
    (run / "notes.txt").write_text("changed\n")
    cli("verify", run, "-q", "--log-file", log)
    assert any(
        "ERROR" in line and "do not match manifest.json" in line for line in log.read_text().splitlines()
    )


def test_a_root_handler_does_not_print_the_cli_lines_twice(tmp_path: Path) -> None:
    """Dependencies call logging.basicConfig(); the CLI's messages must still appear once, as plain lines."""
    run = make_run(tmp_path)
    (run / "notes.txt").write_text("changed\n")
    code = (
        "import logging, sys; logging.basicConfig(); from levit_edge.cli.app import main; main(sys.argv[1:])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "verify", str(run), "-v"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 5
    assert "levit_edge" not in proc.stderr  # no "ERROR:levit_edge.cli:..." copy from the root handler
    assert sum(line.startswith("error: ") for line in proc.stderr.splitlines()) == 1
