"""Property tests of the option parsers: TOML config files, bench's integer lists, targets, and the
settings dataclasses (each either accepts a value that is valid or raises one UserError, never anything
else). The list-file parser has its own in test_data_properties.py."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from levit_edge.cli.cmd_bench import _ints
from levit_edge.errors import UserError
from levit_edge.export.onnx import MAX_OPSET, MIN_OPSET, ExportSettings
from levit_edge.flows.job import EngineOptions
from levit_edge.settings import (
    _PATH_KEYS,
    CALIB_METHODS,
    CONFIG_KEYS,
    TARGETS,
    GateSettings,
    QuantSettings,
    RuntimeSettings,
    Targets,
    load_config,
    pick,
)

fast = settings(max_examples=150, deadline=None)

# ---- TOML writing (the test's own, so load_config is checked against an independent serializer) --------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml(table: dict[str, Any], section: str | None = None) -> str:
    lines = [f"[{section}]"] if section else []
    lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_ROOT = Path(tempfile.mkdtemp(prefix="levit-edge-config-props-"))


def load(text: str, name: str = "edge.toml") -> tuple[dict[str, Any], Path]:
    """Write ``text`` to a config file in a folder of its own and load it; also return that folder."""
    folder = _ROOT / "cfg"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return load_config(path), folder.resolve()


# ---- strategies -------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
plain_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
path_text = st.lists(
    st.text("abcxyz019_-. ", min_size=1, max_size=8).filter(lambda s: s.strip() not in ("", ".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)


def valid_value(key: str) -> st.SearchStrategy[Any]:
    types = CONFIG_KEYS[key]
    if key in _PATH_KEYS:
        return st.one_of(path_text, path_text.map(lambda p: "/abs/" + p))
    if bool in types:
        return st.booleans()
    if float in types:
        return st.one_of(finite, st.integers(-(10**9), 10**9))
    if int in types:
        return st.integers(-(2**63), 2**63 - 1)
    return plain_text


def wrong_value(key: str) -> st.SearchStrategy[Any]:
    types = CONFIG_KEYS[key]
    candidates: list[st.SearchStrategy[Any]] = [
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=2),
    ]
    if str not in types:
        candidates.append(plain_text)
    if bool not in types:
        candidates.append(st.booleans())
    if int not in types:
        candidates.append(st.integers())
    if float not in types:
        candidates.append(finite)
    return st.one_of(candidates)


valid_configs = st.lists(st.sampled_from(sorted(CONFIG_KEYS)), unique=True, max_size=8).flatmap(
    lambda keys: st.fixed_dictionaries({k: valid_value(k) for k in keys})
)
unknown_keys = st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=16).filter(
    lambda k: k.replace("-", "_") not in CONFIG_KEYS and k != "export"
)


def expected(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if key in _PATH_KEYS and not value.startswith("/"):
            value = str((folder / value).resolve())
        out[key] = value
    return out


# ---- load_config ------------------------------------------------------------------------------------------


@fast
@given(valid_configs, st.booleans())
def test_valid_configs_round_trip(config: dict[str, Any], in_export_table: bool) -> None:
    loaded, folder = load(toml(config, "export" if in_export_table else None))
    assert loaded == expected(config, folder)


@fast
@given(valid_configs)
def test_dashed_keys_are_the_same_options(config: dict[str, Any]) -> None:
    dashed = {k.replace("_", "-"): v for k, v in config.items()}
    loaded, folder = load(toml(dashed))
    assert loaded == expected(config, folder)


@fast
@given(valid_configs, unknown_keys, st.integers())
def test_unknown_keys_are_always_refused(config: dict[str, Any], key: str, value: int) -> None:
    with pytest.raises(UserError, match=f"unknown key '{key}'"):
        load(toml({**config, key: value}))


@fast
@given(st.sampled_from(sorted(CONFIG_KEYS)).flatmap(lambda k: st.tuples(st.just(k), wrong_value(k))))
def test_wrong_types_are_always_refused(item: tuple[str, Any]) -> None:
    key, value = item
    with pytest.raises(UserError, match=f"'{key}' must be"):
        load(toml({key: value}))


@fast
@given(st.sampled_from(sorted(CONFIG_KEYS)).flatmap(lambda k: st.tuples(st.just(k), valid_value(k))))
def test_a_key_given_twice_is_refused(item: tuple[str, Any]) -> None:
    key, value = item
    assume("_" in key)
    with pytest.raises(UserError, match="twice"):
        load(toml({key: value, key.replace("_", "-"): value}))


@fast
@given(valid_configs.filter(bool), valid_configs.filter(bool))
def test_keys_outside_the_export_table_are_not_ignored(top: dict[str, Any], table: dict[str, Any]) -> None:
    with pytest.raises(UserError, match=r"outside the \[export\] table"):
        load(toml(top) + toml(table, "export"))


@fast
@given(st.sampled_from(_PATH_KEYS), st.sampled_from(["", " ", "\t", "a\x00b", "x\x01"]))
def test_empty_or_control_character_paths_are_refused(key: str, value: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        load(toml({key: value}))


@fast
@given(st.sampled_from([k for k, t in CONFIG_KEYS.items() if t == (str,)]), plain_text)
def test_nul_in_any_string_is_refused(key: str, text: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        load(toml({key: text + "\x00"}))


@fast
@given(st.text(max_size=60))
def test_any_text_is_a_config_or_one_user_error(text: str) -> None:
    try:
        loaded, _ = load(text)
    except UserError as exc:
        assert "\n" not in str(exc).strip() or "TOML" in str(exc)
    else:
        assert set(loaded) <= set(CONFIG_KEYS)


def test_relative_paths_resolve_against_the_file_not_the_working_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "edge.toml"
    cfg.parent.mkdir()
    cfg.write_text('calib = "../data/calib"\nout = "runs"\nval = "/abs/val"\n')
    loaded = load_config(cfg)
    assert loaded["calib"] == str(tmp_path / "data" / "calib")
    assert loaded["out"] == str(tmp_path / "conf" / "runs")
    assert loaded["val"] == "/abs/val"


@fast
@given(st.one_of(st.none(), st.integers()), st.dictionaries(st.sampled_from(["a", "b"]), st.integers()))
def test_flag_beats_config_beats_default(flag: int | None, config: dict[str, int]) -> None:
    result = pick(flag, config, "a", "default")
    assert result == (flag if flag is not None else config.get("a", "default"))


# ---- option values --------------------------------------------------------------------------------------


@fast
@given(st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=6))
def test_integer_lists_round_trip(values: list[int]) -> None:
    assert _ints(",".join(map(str, values)), "--batches") == tuple(values)
    assert _ints(" , ".join(map(str, values)), "--batches") == tuple(values)


@fast
@given(st.text(max_size=20), st.booleans())
def test_integer_lists_parse_or_raise_one_user_error(text: str, allow_all: bool) -> None:
    try:
        values = _ints(text, "--threads", allow_all=allow_all)
    except UserError as exc:
        assert "--threads must be a comma-separated list of integers" in str(exc)
    else:
        assert len(values) == text.count(",") + 1
        assert all(v is None or isinstance(v, int) for v in values)
        assert allow_all or None not in values


@fast
@given(st.one_of(st.sampled_from(TARGETS), st.text(max_size=6)), st.booleans(), st.booleans())
def test_targets(target: str, int8: bool, engine: bool) -> None:
    try:
        t = Targets.parse(target, int8, engine)
    except UserError as exc:
        assert target not in TARGETS or (target == "trt" and not int8) or (target == "onnx" and int8), exc
        return
    assert target in TARGETS
    assert t.names == ({"ort", "trt"} if target == "all" else {target})
    assert t.int8 == int8
    assert t.trt_engine == (int8 and engine and target in ("trt", "all"))
    assert t.ort_int8 == (int8 and target in ("ort", "all"))


@fast
@given(
    st.one_of(st.sampled_from(CALIB_METHODS), st.text(max_size=8)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.one_of(st.none(), st.integers(-5, 10**6)),
)
def test_quant_settings_accept_only_valid_values(
    method: str, percentile: float, calib_size: int | None
) -> None:
    valid = (
        method in CALIB_METHODS
        and math.isfinite(percentile)
        and 50.0 < percentile <= 100.0
        and (calib_size is None or calib_size >= 1)
    )
    try:
        QuantSettings(method=method, percentile=percentile, calib_size=calib_size)
    except UserError:
        assert not valid
    else:
        assert valid


@fast
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_gate_accepts_only_finite_non_negative_drops(max_drop: float) -> None:
    valid = math.isfinite(max_drop) and max_drop >= 0
    try:
        GateSettings(max_drop=max_drop)
    except UserError as exc:
        assert not valid and "--max-drop" in str(exc)
    else:
        assert valid


@fast
@given(
    st.integers(-3, 10**4),
    st.one_of(st.none(), st.integers(-3, 2048), st.integers(2**63, 2**66)),
    st.one_of(st.integers(-3, 2**32), st.integers(2**63 - 2, 2**66)),
)
def test_runtime_settings(batch_size: int, threads: int | None, seed: int) -> None:
    # huge threads and seeds (>= 2**64) are user errors, not an OverflowError deep in torch or ORT
    valid = batch_size >= 1 and (threads is None or 1 <= threads <= 1024) and 0 <= seed < 2**63
    try:
        RuntimeSettings(batch_size=batch_size, threads=threads, seed=seed)
    except UserError:
        assert not valid
    else:
        assert valid


@fast
@given(
    st.integers(0, 30), st.one_of(st.none(), st.integers(-3, 64)), st.integers(-3, 10**5), st.integers(-3, 64)
)
def test_export_and_engine_options(opset: int, batch: int | None, workspace_mb: int, max_batch: int) -> None:
    export_ok = MIN_OPSET <= opset <= MAX_OPSET and (batch is None or batch >= 1)
    try:
        ExportSettings(opset=opset, batch=batch)
    except UserError:
        assert not export_ok
    else:
        assert export_ok
    engine_ok = workspace_mb >= 16 and max_batch >= 1
    try:
        EngineOptions(workspace_mb=workspace_mb, max_batch=max_batch)
    except UserError:
        assert not engine_ok
    else:
        assert engine_ok
