"""An emulated aarch64 CPU for checking a run's CPU deliverables with ONNX Runtime's ARM kernels.

``provision`` fills a cache folder, once, from the package registries:

* ``qemu/qemu-aarch64``: the static user-mode emulator from Debian **trixie**'s ``qemu-user`` (10.x;
  bookworm's 7.2 crashes inside ONNX Runtime's CPU detection), taken out of the .deb (no install, no binfmt);
* ``root/``: Debian bookworm's arm64 Python 3.11 and the libraries it and ONNX Runtime load, each .deb
  unpacked with ``dpkg -x`` (apt resolves the closure against an empty package database);
* ``site/onnxruntime-<version>/``: the ``manylinux_*_aarch64`` cp311 wheels of onnxruntime and numpy,
  unzipped (pure files: nothing is installed).

``platform.json`` records what was provisioned (versions, download sizes); a later call reuses it without
the network. The emulator runs ``qemu-aarch64 -L root root/usr/bin/python3.11 script.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform as host
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from levit_edge.errors import UserError
from levit_edge.settings import PlatformSetup

SCHEMA = 1
RECORD = "platform.json"
SETUP_COMMAND = "levit-edge setup-platform aarch64"
QEMU_SUITE, ROOT_SUITE = "trixie", "bookworm"
QEMU_PACKAGE = "qemu-user"  # trixie: static binaries (qemu-user-static is a transitional name for it)
ROOT_PACKAGES = ("python3.11", "libstdc++6")  # libstdc++ and libgcc_s: onnxruntime's native library
PYTHON = "usr/bin/python3.11"
PYTHON_TAG = "3.11"
ROOT_GLIBC = 36  # bookworm's glibc 2.36: the newest manylinux_2_x wheel the root can load
QEMU_CPU = "max"  # every feature the emulator implements (NEON, dot-product, i8mm): the newest cores' kernels
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
Progress = Callable[[str], None]


def default_cache() -> Path:
    """$LEVIT_EDGE_PLATFORMS, else <$LEVIT_EDGE_CACHE or ~/.cache/levit-edge>/platforms."""
    explicit = os.environ.get("LEVIT_EDGE_PLATFORMS")
    if explicit:
        return Path(explicit)
    root = os.environ.get("LEVIT_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "levit-edge"
    )
    return Path(root) / "platforms"


@dataclass(frozen=True)
class Runtime:
    """One provisioned ONNX Runtime release (with its numpy) for the emulated Python."""

    onnxruntime: str
    numpy: str
    site: Path


@dataclass(frozen=True)
class Aarch64Platform:
    """A provisioned emulator + arm64 root, read back from ``platform.json``."""

    folder: Path
    qemu: Path
    qemu_version: str  # the Debian package version
    root: Path
    python_version: str
    runtimes: Mapping[str, Runtime]  # onnxruntime version -> runtime
    record: Mapping[str, Any]  # platform.json as written

    @property
    def python(self) -> Path:
        return self.root / PYTHON

    def runtime(self, onnxruntime: str) -> Runtime:
        """The provisioned runtime of this ONNX Runtime release, or a UserError naming the set-up command."""
        if onnxruntime not in self.runtimes:
            have = ", ".join(sorted(self.runtimes)) or "none"
            raise UserError(
                f"onnxruntime {onnxruntime} for aarch64 is not set up in {self.folder} (set up: {have}); "
                f"run '{SETUP_COMMAND} --cache {self.folder.parent} --onnxruntime {onnxruntime}'"
            )
        return self.runtimes[onnxruntime]

    def command(self, *args: str) -> list[str]:
        """The command line running the emulated Python with ``args`` (isolated: no env, no user site)."""
        return [str(self.qemu), "-L", str(self.root), "-cpu", QEMU_CPU, str(self.python), "-E", "-s", *args]


def folder_of(cache: Path | None) -> Path:
    # absolute: apt reads a relative Dir:: option as relative to its own state folder, and the emulator
    # and the emulated Python get these paths from another working directory
    return ((cache or default_cache()) / "aarch64").absolute()


def load_platform(cache: Path | None = None) -> Aarch64Platform:
    """The provisioned platform; a one-line UserError naming the set-up command when it is not there."""
    folder = folder_of(cache)
    path = folder / RECORD
    hint = f"run '{SETUP_COMMAND}" + (f" --cache {cache}'" if cache is not None else "'")
    if not path.is_file():
        raise UserError(f"the aarch64 platform is not set up in {folder}; {hint}")
    try:
        record = json.loads(path.read_text())
        qemu, root = folder / record["qemu"]["binary"], folder / record["root"]["folder"]
        runtimes = {
            v: Runtime(r["onnxruntime"], r["numpy"], folder / r["site"])
            for v, r in record["runtimes"].items()
        }
        found = Aarch64Platform(
            folder, qemu, record["qemu"]["version"], root, record["root"]["python"], runtimes, record
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is unreadable or malformed ({exc}); {hint}") from None
    missing = [p for p in (found.qemu, found.python, *(r.site for r in runtimes.values())) if not p.exists()]
    if missing:
        raise UserError(f"the aarch64 platform in {folder} is incomplete ({missing[0]} is missing); {hint}")
    return found


def installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise UserError(f"{name} is not installed here; pass its release with --{name}") from None


@dataclass(frozen=True)
class Provisioned:
    """What one ``provision`` call did: the platform, and the components it downloaded (empty: all cached)."""

    platform: Aarch64Platform
    downloaded: tuple[str, ...]
    download_bytes: int


def provision(setup: PlatformSetup, progress: Progress | None = None) -> Provisioned:
    """Provision whatever of the emulator, the arm64 root and the requested runtime is not cached yet.

    Each component is built in a temporary folder inside the cache and renamed into place, then recorded
    in ``platform.json`` (rewritten atomically): an interrupted call leaves the cache as it was.
    """
    say = progress or (lambda _msg: None)
    folder = folder_of(setup.cache)
    ort_version = setup.onnxruntime or installed_version("onnxruntime")
    np_version = setup.numpy or installed_version("numpy")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the platform cache {folder}: {exc.strerror}") from None
    downloaded: list[str] = []
    size = 0
    with _locked(folder):
        record = _read_record(folder)
        with _scratch(folder) as tmp:
            if not _present(folder, record.get("qemu"), "binary"):
                say(f"downloading {QEMU_PACKAGE} from Debian {QEMU_SUITE} (about 70 MB)")
                record["qemu"] = _provision_qemu(setup.mirror, folder, tmp)
                downloaded.append("qemu")
                size += record["qemu"]["download_bytes"]
                _write_record(folder, record)
            if not _present(folder, record.get("root"), "folder"):
                say(f"downloading Python {PYTHON_TAG} for arm64 from Debian {ROOT_SUITE} (about 16 MB)")
                record["root"] = _provision_root(setup.mirror, folder, tmp)
                downloaded.append("root")
                size += record["root"]["download_bytes"]
                _write_record(folder, record)
            runtimes = record.setdefault("runtimes", {})
            have = runtimes.get(ort_version)
            if not _present(folder, have, "site") or (setup.numpy and have and have["numpy"] != setup.numpy):
                say(f"downloading the aarch64 wheels of onnxruntime {ort_version} and numpy {np_version}")
                runtimes[ort_version] = _provision_site(ort_version, np_version, folder, tmp)
                downloaded.append(f"onnxruntime-{ort_version}")
                size += runtimes[ort_version]["download_bytes"]
                _write_record(folder, record)
        found = load_platform(setup.cache)
        if downloaded:
            say("checking that the emulated Python imports onnxruntime")
            seen = smoke_check(found, found.runtime(ort_version))
            record["runtimes"][ort_version]["checked"] = seen
            record["qemu"]["reports"] = seen.get("qemu")
            _write_record(folder, record)
            found = load_platform(setup.cache)
    return Provisioned(found, tuple(downloaded), size)


def smoke_check(found: Aarch64Platform, runtime: Runtime) -> dict[str, Any]:
    """Import numpy and onnxruntime in the emulated Python; the versions and machine it reports."""
    code = (
        "import sys, json, platform; sys.path.insert(0, sys.argv[1]); import numpy, onnxruntime; "
        "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
        "'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__}))"
    )
    cmd = found.command("-c", code, str(runtime.site))
    proc = _run(cmd, "the emulated aarch64 Python", env=emulator_env())
    try:
        seen: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UserError(f"the emulated aarch64 Python printed no version line: {_tail(proc)}") from None
    if seen.get("machine") != "aarch64" or seen.get("onnxruntime") != runtime.onnxruntime:
        raise UserError(
            f"the emulated Python reports {seen}, expected aarch64 with onnxruntime {runtime.onnxruntime}"
        )
    version = _run([str(found.qemu), "--version"], "qemu-aarch64").stdout.strip().splitlines()
    seen["qemu"] = version[0] if version else None
    return seen


def emulator_env() -> dict[str, str]:
    """A clean environment for the emulated process: the host's LD_LIBRARY_PATH or PYTHON* variables would
    point the arm64 loader and Python at x86 files; ONNX Runtime's telemetry stays off."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ORT_DISABLE_TELEMETRY": "1"}


# ---- components ---------------------------------------------------------------------------------------


def _provision_qemu(mirror: str, folder: Path, tmp: Path) -> dict[str, Any]:
    apt = _Apt(tmp / "apt-qemu", mirror, QEMU_SUITE, _host_arch())
    deb = apt.download(QEMU_PACKAGE)
    version = _deb_field(deb, "Version")
    dest = tmp / "qemu"
    dest.mkdir()
    extract = subprocess.run(
        f"dpkg-deb --fsys-tarfile {_q(deb)} | tar -x -O ./usr/bin/qemu-aarch64 > {_q(dest / 'qemu-aarch64')}",
        shell=True,
        capture_output=True,
        text=True,
    )
    if extract.returncode != 0 or (dest / "qemu-aarch64").stat().st_size == 0:
        raise UserError(f"cannot take qemu-aarch64 out of {deb.name}: {_tail(extract)}")
    (dest / "qemu-aarch64").chmod(0o755)
    entry = {
        "package": QEMU_PACKAGE,
        "suite": QEMU_SUITE,
        "version": version,
        "binary": "qemu/qemu-aarch64",
        "download_bytes": deb.stat().st_size,
        "cpu": QEMU_CPU,
    }
    _place(dest, folder / "qemu")
    return entry


def _provision_root(mirror: str, folder: Path, tmp: Path) -> dict[str, Any]:
    apt = _Apt(tmp / "apt-root", mirror, ROOT_SUITE, "arm64", security=True)
    debs = apt.download_closure(ROOT_PACKAGES)
    dest = tmp / "root"
    dest.mkdir()
    packages: dict[str, str] = {}
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(dest)], f"dpkg -x {deb.name}")
        packages[_deb_field(deb, "Package")] = _deb_field(deb, "Version")
    if not (dest / PYTHON).exists():
        raise UserError(f"the arm64 packages of {ROOT_SUITE} did not provide {PYTHON}")
    entry = {
        "suite": ROOT_SUITE,
        "architecture": "arm64",
        "folder": "root",
        "python": packages.get("python3.11", "?"),
        "packages": dict(sorted(packages.items())),
        "download_bytes": sum(d.stat().st_size for d in debs),
    }
    _place(dest, folder / "root")
    return entry


def _provision_site(ort_version: str, np_version: str, folder: Path, tmp: Path) -> dict[str, Any]:
    wheels = tmp / "wheels"
    wheels.mkdir()
    tags = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(ROOT_GLIBC, 16, -1)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           *tags, "--platform=manylinux2014_aarch64", f"--python-version={PYTHON_TAG}",
           "--implementation=cp", "--abi=cp311", "-d", str(wheels),
           f"onnxruntime=={ort_version}", f"numpy=={np_version}"]  # fmt: skip
    _run(cmd, f"the aarch64 wheels of onnxruntime {ort_version} and numpy {np_version} (pip download)")
    files = sorted(wheels.glob("*.whl"))
    names = {re.split(r"-", f.name)[0].lower() for f in files}
    if names != {"onnxruntime", "numpy"}:
        raise UserError(f"pip download gave {[f.name for f in files]}, expected onnxruntime and numpy wheels")
    dest = tmp / "site"
    dest.mkdir()
    for wheel in files:
        try:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(dest)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"cannot unpack {wheel.name}: {exc}") from None
    site = f"site/onnxruntime-{ort_version}"
    entry = {
        "onnxruntime": ort_version,
        "numpy": np_version,
        "site": site,
        "wheels": [f.name for f in files],
        "download_bytes": sum(f.stat().st_size for f in files),
    }
    (folder / "site").mkdir(exist_ok=True)
    shutil.rmtree(folder / site, ignore_errors=True)
    _place(dest, folder / site)
    return entry


class _Apt:
    """apt-get on a private sources list, state and cache folder (nothing of the system's apt is touched)."""

    def __init__(self, base: Path, mirror: str, suite: str, arch: str, security: bool = False) -> None:
        if not KEYRING.is_file():
            raise UserError(
                f"{KEYRING} is missing (Debian's archive keyring: package debian-archive-keyring)"
            )
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise UserError(
                "apt-get and dpkg-deb are needed to provision the aarch64 platform (a Debian host)"
            )
        self.mirror, self.suite, self.base = mirror.rstrip("/"), suite, base
        for sub in ("lists/partial", "cache/archives/partial", "sources", "prefs", "debs"):
            (base / sub).mkdir(parents=True)
        (base / "status").write_text("")  # an empty package database: apt resolves the whole closure
        stanza = f"Types: deb\nURIs: {self.mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        stanza += f"Signed-By: {KEYRING}\n"
        if security:
            security_uri = re.sub(r"/debian$", "/debian-security", self.mirror)
            if security_uri != self.mirror:
                stanza += f"\nTypes: deb\nURIs: {security_uri}\nSuites: {suite}-security\nComponents: main\n"
                stanza += f"Signed-By: {KEYRING}\n"
        (base / "sources" / f"{suite}.sources").write_text(stanza)
        self.options = [
            "-oDir::Etc::SourceList=/dev/null",
            f"-oDir::Etc::SourceParts={base / 'sources'}",
            "-oDir::Etc::Preferences=/dev/null",
            f"-oDir::Etc::PreferencesParts={base / 'prefs'}",
            f"-oDir::State::Lists={base / 'lists'}",
            f"-oDir::State::status={base / 'status'}",
            f"-oDir::Cache={base / 'cache'}",
            "-oDebug::NoLocking=1",
            # as root apt would hand downloads to the _apt user, who cannot write into this cache
            *(["-oAPT::Sandbox::User=root"] if os.geteuid() == 0 else []),
            f"-oAPT::Architecture={arch}",
            f"-oAPT::Architectures={arch}",
            "-oAcquire::Retries=2",
            "-oAPT::Install-Recommends=false",
        ]
        self._update()

    def _update(self) -> None:
        proc = subprocess.run(["apt-get", *self.options, "update"], capture_output=True, text=True)
        failed = [
            ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("E:", "W:", "Err:"))
        ]
        if proc.returncode != 0 or any(ln.startswith(("E:", "Err:")) for ln in failed):
            why = failed[0] if failed else _tail(proc)
            raise UserError(
                f"cannot download the Debian {self.suite} package lists from {self.mirror}: {why}"
            )

    def download(self, package: str) -> Path:
        where = self.base / "debs"
        proc = subprocess.run(
            ["apt-get", *self.options, "download", package], capture_output=True, text=True, cwd=where
        )
        debs = sorted(where.glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            raise UserError(
                f"cannot download {package} from Debian {self.suite} ({self.mirror}): {_tail(proc)}"
            )
        return debs[0]

    def download_closure(self, packages: tuple[str, ...]) -> list[Path]:
        proc = subprocess.run(
            ["apt-get", *self.options, "install", "--download-only", "-y", "-q", *packages],
            capture_output=True,
            text=True,
        )
        debs = sorted((self.base / "cache" / "archives").glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise UserError(
                f"cannot download {' '.join(packages)} for arm64 from Debian {self.suite} ({self.mirror}): "
                f"{_tail(proc)}"
            )
        return debs


# ---- helpers ------------------------------------------------------------------------------------------


def _host_arch() -> str:
    machine = host.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine)
    if arch is None:
        raise UserError(f"no emulator package for this host ({machine}); an x86_64 Debian host is needed")
    return arch


def _q(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "ERROR:", "Err:"))]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1][:300]


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as exc:
        raise UserError(f"cannot run {what}: {exc.strerror}") from None
    if proc.returncode != 0:
        raise UserError(f"{what} failed: {_tail(proc)}")
    return proc


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field], f"dpkg-deb -f {deb.name}").stdout.strip()


def _present(folder: Path, entry: Any, key: str) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get(key), str) and (folder / entry[key]).exists()


def _place(src: Path, dest: Path) -> None:
    """Move a finished component into place (a leftover of an unrecorded earlier attempt is replaced)."""
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(src, dest)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    if not path.is_file():
        return {"schema": SCHEMA, "platform": "aarch64", "runtimes": {}}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return {"schema": SCHEMA, "platform": "aarch64", "runtimes": {}}  # rebuilt from scratch
    return record


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    from levit_edge.io import write_json

    record["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(folder / RECORD, record)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One provisioning at a time per cache (parallel CI jobs or test sessions share it)."""
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _scratch(folder: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=".provision-", dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
