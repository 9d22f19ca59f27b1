"""The offline fixture: deterministic data, a task that is learnable but not trivial, a real trained model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from levit_edge.fixture.cache import ensure_fixture
from levit_edge.fixture.common import SPLITS, DatasetPaths, FixtureResult
from levit_edge.fixture.images import PATTERNS, generate_dataset, render_size
from levit_edge.fixture.train import create_model, train_fixture

Fixture = tuple[DatasetPaths, FixtureResult, Path]


def _tree_digest(root: Path) -> str:
    """Hash of every file's relative path and bytes under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _small(root: Path, seed: int = 0) -> DatasetPaths:
    return generate_dataset(root, train_per_class=3, val_per_class=2, calib_per_class=1, seed=seed)


def test_generation_is_byte_identical(tmp_path: Path) -> None:
    a, b = _small(tmp_path / "a"), _small(tmp_path / "b")
    assert _tree_digest(a.root) == _tree_digest(b.root)
    assert _tree_digest(_small(tmp_path / "c", seed=1).root) != _tree_digest(a.root)


def test_layout_counts_and_balance(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "d", classes=10, train_per_class=4, val_per_class=3, calib_per_class=2)
    assert data.classes == tuple(sorted(PATTERNS))
    assert list(data.classes) == sorted(data.classes)  # label order == ImageFolder order
    for split, n in {"train": 4, "val": 3, "calib": 2}.items():
        assert sorted(p.name for p in data.split(split).iterdir()) == list(data.classes)
        for c in data.classes:
            assert len(list((data.split(split) / c).glob("*.png"))) == n
        assert len(data.samples(split)) == n * len(data.classes)
    with Image.open(data.samples("val")[0][0]) as im:
        assert im.mode == "RGB"
        assert im.size == (render_size(64), render_size(64)) == (72, 72)
    # Atomic write: nothing but the finished tree is left in the parent directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    with pytest.raises(FileExistsError):
        generate_dataset(data.root, train_per_class=1, val_per_class=1, calib_per_class=1)


def test_splits_do_not_share_images(tmp_path: Path) -> None:
    data = _small(tmp_path / "d")
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for s in SPLITS for p, _ in data.samples(s)]
    assert len(set(digests)) == len(digests)


def test_training_is_deterministic_and_cache_reuses(tmp_path: Path) -> None:
    """A tiny (seconds-long) run: equal seeds give equal checkpoint bytes; the cache builds only once."""
    data = generate_dataset(tmp_path / "d", classes=3, train_per_class=4, val_per_class=2, calib_per_class=1)
    r1 = train_fixture(data, tmp_path / "a.pth", epochs=1, batch_size=8)
    r2 = train_fixture(data, tmp_path / "b.pth", epochs=1, batch_size=8)
    assert r1.checkpoint_sha256 == r2.checkpoint_sha256
    assert (tmp_path / "a.pth").read_bytes() == (tmp_path / "b.pth").read_bytes()

    params: dict[str, Any] = {
        "classes": 3,
        "train_per_class": 4,
        "val_per_class": 2,
        "calib_per_class": 1,
        "epochs": 1,
    }
    cache = tmp_path / "cache"
    messages: list[str] = []
    d1, res1, ck1 = ensure_fixture(cache, progress=messages.append, **params)
    assert messages, "the first call builds and reports progress"
    messages.clear()
    d2, res2, ck2 = ensure_fixture(cache, progress=messages.append, **params)
    assert not messages, "the second call must reuse the cache"
    assert (d1, res1, ck1) == (d2, res2, ck2)
    assert [p.name for p in cache.iterdir()] == [ck1.parent.name]  # no temp dirs left
    assert hashlib.sha256(ck1.read_bytes()).hexdigest() == res1.checkpoint_sha256


def test_cache_key_follows_what_changes_the_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another CPU kernel set, torch build or thread count trains another checkpoint: another key."""
    import levit_edge.fixture.cache as fx

    params = {"classes": 3, "epochs": 1}
    here = fx.build_identity()
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert here["torch"] == torch.__version__
    key = fx.fixture_key(params)
    for field, other in (("cpu_capability", "AVX2-or-other"), ("torch", "0.0"), ("threads", 99)):
        monkeypatch.setattr(fx, "build_identity", lambda threads=None, f=field, o=other: {**here, f: o})
        assert fx.fixture_key(params) != key, field
    monkeypatch.undo()
    assert fx.fixture_key(params) == key
    assert fx.fixture_key(params, threads=here["threads"] + 1) != key


def test_cached_fixture_records_its_build(trained_fixture: Fixture) -> None:
    _, _, checkpoint = trained_fixture
    recorded = json.loads((checkpoint.parent / "params.json").read_text())
    assert recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert recorded["torch"] == torch.__version__


# --- the trained fixture (built once per cache key, ~1.5 min; then read from .cache/) ---------------------


def _load_model(result: FixtureResult, checkpoint: Path) -> torch.nn.Module:
    model = create_model(result.model_name, len(result.classes), result.img_size)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def _val_arrays(data: DatasetPaths, split: str) -> tuple[np.ndarray, np.ndarray]:
    samples = data.samples(split)
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p, _ in samples])
    return x.reshape(len(samples), -1), np.array([label for _, label in samples])


def _independent_top1(result: FixtureResult, checkpoint: Path, data: DatasetPaths) -> float:
    """Top-1 on val with torchvision's ImageFolder and timm's eval transform, not the library's loop."""
    import timm.data
    from torchvision.datasets import ImageFolder

    model = _load_model(result, checkpoint)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    ds = ImageFolder(str(data.val), transform=transform)
    assert tuple(ds.classes) == result.classes
    loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=False)
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


@pytest.mark.slow
def test_trained_model_is_accurate_but_not_perfect(trained_fixture: Fixture) -> None:
    data, result, checkpoint = trained_fixture
    top1 = _independent_top1(result, checkpoint, data)
    assert top1 >= 0.90
    assert abs(top1 - result.val_top1) < 1e-9, "the reported number must match an independent evaluation"
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == result.checkpoint_sha256


@pytest.mark.slow
def test_task_is_not_solvable_from_raw_pixels(trained_fixture: Fixture) -> None:
    """A nearest-class-mean classifier on raw pixels stays far below the model: the classes differ in
    structure (shape, orientation, texture), not in colour or position."""
    data, result, _ = trained_fixture
    x_train, y_train = _val_arrays(data, "train")
    x_val, y_val = _val_arrays(data, "val")
    means = np.stack([x_train[y_train == k].mean(0) for k in range(len(data.classes))])
    dist = ((x_val[:, None, :] - means[None]) ** 2).sum(-1)
    baseline = float((dist.argmin(1) == y_val).mean())
    assert baseline < 0.5
    assert result.val_top1 - baseline > 0.4


@pytest.mark.slow
def test_trained_parameters_are_non_trivial(trained_fixture: Fixture) -> None:
    """Attention biases start at zero and BN stats at (0, 1) in timm: training must have moved both, or
    BN fusion and the bias gather in export would be tested on a degenerate model."""
    _, _, checkpoint = trained_fixture
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    biases = {k: v for k, v in sd.items() if k.endswith("attention_biases")}
    # At 64 px the last stage runs on a single token: its biases have one offset, which softmax cancels,
    # so they get no gradient and stay zero. All the others must have been learned.
    learnable = {k: v for k, v in biases.items() if v.shape[-1] > 1}
    assert len(learnable) >= 5, sorted(biases)
    for k, b in learnable.items():
        assert b.abs().max() > 1e-2 and b.std() > 1e-3, k
    means = [v for k, v in sd.items() if k.endswith("running_mean")]
    variances = [v for k, v in sd.items() if k.endswith("running_var")]
    assert means and len(means) == len(variances)
    for m, v in zip(means, variances, strict=True):
        assert m.abs().max() > 1e-3
        assert (v - 1).abs().max() > 1e-2
    assert all(int(v) > 0 for k, v in sd.items() if k.endswith("num_batches_tracked"))
