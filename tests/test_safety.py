"""Safety end to end: no network access without --pretrained, and hostile names in the inputs reach the
HTML and Markdown reports escaped.

The CLI runs under a CPython audit hook installed before anything is imported: any IP connection or host
name lookup (``socket.connect`` to an AF_INET/AF_INET6 address, ``socket.getaddrinfo``,
``socket.gethostbyname``...) ends the process at once with exit 97 and the event on stderr. A control run
with ``--pretrained`` proves the hook sees the model hub client's first attempt.

The inputs carry markup where a pipeline would never expect it: a class folder ``<b title="t">x&y``, an
unreadable image ``<img src=x onerror=alert(1)>.png`` (skipped with --skip-bad, so its name is listed in
the report), and a checkpoint and validation folder with markup in their names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from levit_edge.fixture.common import DatasetPaths, FixtureResult

Fixture = tuple[DatasetPaths, FixtureResult, Path]
NETWORK_EXIT = 97

# Installed by ``python -c`` before levit_edge (or torch, timm, huggingface_hub) is imported.
GUARD = """
import os, socket, sys
def _guard(event, args):
    if event == "socket.connect":
        sock, address = args[0], args[1]
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
    elif event not in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                       "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg"):
        return
    os.write(2, f"network access: {event} {args[1:] if len(args) > 1 else args!r}\\n".encode())
    os._exit(NETWORK_EXIT)
sys.addaudithook(_guard)
from levit_edge.cli.app import main
main()
""".replace("NETWORK_EXIT", str(NETWORK_EXIT))

HOSTILE_CLASS = '<b title="t">x&y'  # no "/": it is a folder name
HOSTILE_IMAGE = "<img src=x onerror=alert(1)>.png"


def guarded_cli(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GUARD, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@dataclass(frozen=True)
class Result:
    export: subprocess.CompletedProcess[str]
    pretrained: subprocess.CompletedProcess[str]
    run: Path


@pytest.fixture(scope="module")
def guarded(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Result:
    data, result, checkpoint = trained_fixture
    root = tmp_path_factory.mktemp("safety")
    val = root / "<i>val&amp;"
    classes = sorted([*data.classes[:-1], HOSTILE_CLASS])
    for name in classes:
        source = data.val / (name if name in data.classes else data.classes[-1])
        (val / name).mkdir(parents=True)
        for png in sorted(source.glob("*.png"))[:3]:
            shutil.copy(png, val / name / png.name)
    (val / HOSTILE_CLASS / HOSTILE_IMAGE).write_bytes(b"not an image")
    ckpt = root / "<u>ck&pt.pth"
    shutil.copy(checkpoint, ckpt)
    calib = root / "calib"
    calib.mkdir()
    for png, _ in data.samples("calib")[::10]:
        shutil.copy(png, calib / f"{png.parent.name}-{png.name}")

    # No proxy and no offline switch: whatever the code would reach, it would try to reach.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("HF_", "HUGGINGFACE_"))
    }
    env["COLUMNS"] = "200"
    common = ["--model", result.model_name, "--img-size", str(result.img_size), "--out", root / "out"]
    export = guarded_cli(
        "export",
        *common,
        "--num-classes", str(len(result.classes)),
        "--checkpoint", ckpt,
        "--int8", "--target", "ort",
        "--calib", calib,
        "--val", val,
        "--skip-bad",
        "--max-drop", "100",
        "--allow-chance-accuracy",  # the hostile folder sorts first and shifts the labels: names are tested
        "--name", "r",
        cwd=root,
        env=env,
    )  # fmt: skip
    pretrained = guarded_cli("export", *common, "--pretrained", "--name", "p", cwd=root, env=env)
    return Result(export, pretrained, root / "out" / "r")


@pytest.mark.slow
def test_the_guard_sees_the_hub_client(guarded: Result) -> None:
    # Control: --pretrained reaches for the model hub, and the guard stops it.
    assert guarded.pretrained.returncode == NETWORK_EXIT, guarded.pretrained.stderr[-3000:]
    assert "network access" in guarded.pretrained.stderr


@pytest.mark.slow
def test_export_calibrate_quantize_validate_make_no_network_access(guarded: Result) -> None:
    proc = guarded.export
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "network access" not in proc.stderr
    assert (guarded.run / "model.int8.ort.onnx").is_file()


@pytest.mark.slow
def test_names_from_the_inputs_are_escaped_in_the_reports(guarded: Result) -> None:
    report = json.loads((guarded.run / "report.json").read_text())
    assert HOSTILE_CLASS in report["model"]["class_names"]
    assert [s[0] for s in report["validation"]["skipped"]] == [f"{HOSTILE_CLASS}/{HOSTILE_IMAGE}"]
    page = (guarded.run / "report.html").read_text()
    for raw in (HOSTILE_CLASS, HOSTILE_IMAGE[:-4], "<i>val", "<u>ck"):
        assert raw not in page, raw
    assert "&lt;b title=&quot;t&quot;&gt;x&amp;y" in page or "&lt;b title=&#x27;t" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert "<script" not in page.lower()  # no markup of ours runs scripts either
    markdown = (guarded.run / "report.md").read_text()
    # Markdown escapes with a backslash (CommonMark renders "\\<b" as the text "<b")
    assert "\\<img src=x onerror" in markdown
    assert re.search(r"(?<!\\)<(b|img|i|u)\b", markdown) is None
