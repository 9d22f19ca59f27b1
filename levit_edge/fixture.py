"""A deterministic offline fixture: a procedural image-classification task and a LeViT trained on it.

Without network access there is no pretrained checkpoint and no ImageNet, so accuracy numbers (FP32 vs
INT8, fused vs unfused) would otherwise compare noise with noise. This module renders a small, genuinely
visual 10-class task (shape, stripe, checker, gradient and blob families with random colour, placement,
scale, clutter and noise), trains a timm LeViT on it from scratch in about two minutes on two CPU cores
and saves a plain timm state_dict, so every later stage has a model whose accuracy is high but not perfect.

Everything is a pure function of its parameters: the same seed gives byte-identical PNGs and (on the same
torch build and thread count) a byte-identical checkpoint. :func:`ensure_fixture` caches the result on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Bump whenever rendering or training changes in a way that changes the bytes produced: it is part of the
# cache key, so stale cached fixtures are never reused.
FIXTURE_VERSION = 1

SPLITS = ("train", "val", "calib")
DATASET_MANIFEST = "dataset.json"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pth"

# Default configuration, measured on a quiet 2-core AMD EPYC: 97.2 % val top-1, ~12 s to generate and
# ~105 s to train. Fewer epochs miss the 90 % floor too often: 6 epochs (~90 s in all) gave 91-97 % across
# seeds, 8 epochs 96-98 %. levit_128s is already the smallest registered LeViT. Kept in one place so
# the tests and the offline demo agree.
DEFAULT_MODEL = "levit_128s"
DEFAULT_IMG_SIZE = 64
DEFAULT_TRAIN_PER_CLASS = 400
DEFAULT_VAL_PER_CLASS = 50
DEFAULT_CALIB_PER_CLASS = 20
DEFAULT_EPOCHS = 8

# Share of images rendered with a faint foreground (see render_image).
HARD_FRACTION = 0.04

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class DatasetPaths:
    """Where a generated dataset lives; ``classes`` in label order (sorted, as ImageFolder sorts them)."""

    root: Path
    train: Path
    val: Path
    calib: Path
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Path:
        """The directory of split ``name`` (``train``, ``val`` or ``calib``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        path: Path = getattr(self, name)
        return path

    def samples(self, split: str) -> list[tuple[Path, int]]:
        """All ``(png_path, label)`` pairs of a split, in a fixed order (class, then file name)."""
        base = self.split(split)
        return [(p, label) for label, c in enumerate(self.classes) for p in sorted((base / c).glob("*.png"))]


@dataclass(frozen=True)
class FixtureResult:
    """What training produced; ``val_top1`` is FP32 top-1 on the val split, in [0, 1]."""

    model_name: str
    img_size: int
    classes: tuple[str, ...]
    val_top1: float
    train_seconds: float
    checkpoint_sha256: str
    epochs: int
    seed: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FixtureResult:
        raw = json.loads(text)
        raw["classes"] = tuple(raw["classes"])
        return cls(**raw)


# --------------------------------------------------------------------------------------------------------
# Dataset rendering
# --------------------------------------------------------------------------------------------------------

Mask = np.ndarray  # float32 (H, W) in [0, 1]: how much of the foreground colour a pixel gets


def render_size(img_size: int) -> int:
    """PNG side length for a model input of ``img_size``.

    timm's eval transform resizes to ``img_size / crop_pct`` (crop_pct 0.9) and center-crops, so images are
    rendered that large (rounded up to a multiple of 8: 72 px for 64 px) and the crop loses only a margin.
    """
    return int(math.ceil(img_size / 0.9 / 8) * 8)


def _soft(sdf: np.ndarray) -> Mask:
    """Anti-aliased mask from a signed distance in pixels (positive inside)."""
    return np.clip(sdf + 0.5, 0.0, 1.0).astype(np.float32)


def _rotated(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, theta: float) -> tuple[np.ndarray, ...]:
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = xx - cx, yy - cy
    return dx * c + dy * s, -dx * s + dy * c


def _square_wave(phase: np.ndarray, sharp: float) -> Mask:
    """A band pattern from a phase in cycles; ``sharp`` ~1 is sinusoidal, larger is crisper."""
    return np.clip(0.5 + sharp * np.sin(2 * math.pi * phase), 0.0, 1.0).astype(np.float32)


def _window(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    """A random soft region (disc or rectangle) covering a good part of the image, for texture classes.

    Confining textures to a window adds position/scale variation and keeps them from being trivially
    'the whole image'.
    """
    if rng.random() < 0.3:
        return np.ones_like(xx, dtype=np.float32)
    cx, cy = rng.uniform(0.3, 0.7, size=2) * n
    if rng.random() < 0.5:
        r = rng.uniform(0.3, 0.55) * n
        return _soft(r - np.hypot(xx - cx, yy - cy))
    hw, hh = rng.uniform(0.25, 0.5, size=2) * n
    return _soft(np.minimum(hw - np.abs(xx - cx), hh - np.abs(yy - cy)))


def _stripes(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int, angle_deg: float) -> Mask:
    theta = math.radians(angle_deg + rng.uniform(-12, 12))
    period = rng.uniform(5, 12)
    u, _ = _rotated(xx, yy, 0.0, 0.0, theta)
    return _square_wave(u / period + rng.random(), rng.uniform(1.0, 4.0)) * _window(rng, xx, yy, n)


def _pat_blobs(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    # Many small soft spots scattered over the image: a texture, unlike the single hard-edged shapes.
    acc = np.zeros_like(xx)
    for _ in range(rng.integers(8, 16)):
        cx, cy = rng.uniform(0.05, 0.95, size=2) * n
        s = rng.uniform(2.5, 5.0)
        acc += np.exp(-(((xx - cx) / s) ** 2 + ((yy - cy) / s) ** 2))
    return np.clip(acc * 1.5, 0.0, 1.0).astype(np.float32)


def _pat_checker(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    u, v = _rotated(xx, yy, 0.0, 0.0, rng.uniform(0, math.pi / 2))
    cell = rng.uniform(6, 12)
    prod = np.sin(math.pi * u / cell + rng.uniform(0, 6)) * np.sin(math.pi * v / cell + rng.uniform(0, 6))
    # Crisp cells: a soft checker degenerates into a grid of dots, i.e. into 'blobs'.
    return np.clip(0.5 + rng.uniform(4, 10) * prod, 0, 1).astype(np.float32) * _window(rng, xx, yy, n)


def _pat_circle(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    r = rng.uniform(0.22, 0.38) * n
    cx, cy = rng.uniform(r + 1, n - r - 1, size=2)
    return _soft(r - np.hypot(xx - cx, yy - cy))


def _pat_cross(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    h = rng.uniform(0.22, 0.36) * n  # half the arm span
    t = rng.uniform(0.28, 0.42) * h  # half the arm thickness
    cx, cy = rng.uniform(h + 1, n - h - 1, size=2)
    u, v = _rotated(xx, yy, cx, cy, math.radians(rng.uniform(-20, 20)))
    bar1 = np.minimum(h - np.abs(u), t - np.abs(v))
    bar2 = np.minimum(t - np.abs(u), h - np.abs(v))
    return _soft(np.maximum(bar1, bar2))


def _pat_gradient(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    # A smooth full-contrast ramp across the image at any angle; its width varies from soft to sharp-ish
    # so it can resemble a half-plane edge.
    u, _ = _rotated(xx, yy, n / 2 + rng.uniform(-0.2, 0.2) * n, n / 2, rng.uniform(0, 2 * math.pi))
    width = rng.uniform(0.4, 1.2) * n
    return np.clip(0.5 + u / width, 0.0, 1.0).astype(np.float32)


def _pat_ring(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    r = rng.uniform(0.22, 0.38) * n
    w = rng.uniform(2.5, 0.25 * r)  # thin: a thick ring is hard to tell from a disc
    cx, cy = rng.uniform(r + w, n - r - w, size=2)
    return _soft(w / 2 - np.abs(np.hypot(xx - cx, yy - cy) - r))


def _pat_square(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    # Near axis-aligned: a square turned by 45 degrees is a diamond, too close to the other shapes to be
    # learned in a two-minute training run.
    h = rng.uniform(0.18, 0.32) * n
    cx, cy = rng.uniform(1.2 * h + 1, n - 1.2 * h - 1, size=2)
    u, v = _rotated(xx, yy, cx, cy, math.radians(rng.uniform(-15, 15)))
    return _soft(h - np.maximum(np.abs(u), np.abs(v)))


def _pat_stripes_d(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    # Either diagonal, so a horizontal flip (train augmentation) keeps the class.
    return _stripes(rng, xx, yy, n, 45.0 if rng.random() < 0.5 else 135.0)


def _pat_stripes_h(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    return _stripes(rng, xx, yy, n, 90.0)  # bands vary along y


def _pat_stripes_v(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> Mask:
    return _stripes(rng, xx, yy, n, 0.0)  # bands vary along x


PatternFn = Callable[[np.random.Generator, np.ndarray, np.ndarray, int], Mask]

# Class name -> pattern family. Sorted name order is the label order. (A triangle class was tried and
# dropped: LeViT-128S at 64 px needs several times the training budget to tell it from disc and square.)
PATTERNS: dict[str, PatternFn] = {
    "blobs": _pat_blobs,
    "checker": _pat_checker,
    "circle": _pat_circle,
    "cross": _pat_cross,
    "gradient": _pat_gradient,
    "ring": _pat_ring,
    "square": _pat_square,
    "stripes_d": _pat_stripes_d,
    "stripes_h": _pat_stripes_h,
    "stripes_v": _pat_stripes_v,
}


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, n: int) -> np.ndarray:
    """A random colour with a faint low-frequency shading and class-agnostic clutter (specks and lines)."""
    base = rng.uniform(0, 1, size=3).astype(np.float32)
    u, _ = _rotated(xx, yy, n / 2, n / 2, rng.uniform(0, 2 * math.pi))
    img = base + (u / n * rng.uniform(0, 0.25))[..., None]
    for _ in range(rng.integers(0, 5)):  # specks
        cx, cy = rng.uniform(0, n, size=2)
        m = _soft(rng.uniform(0.8, 2.5) - np.hypot(xx - cx, yy - cy)) * rng.uniform(0.3, 0.8)
        img += m[..., None] * (rng.uniform(0, 1, size=3) - img)
    for _ in range(rng.integers(0, 3)):  # thin line segments: distractors for the stripe classes
        cx, cy = rng.uniform(0, n, size=2)
        u, v = _rotated(xx, yy, cx, cy, rng.uniform(0, math.pi))
        m = _soft(np.minimum(0.6 - np.abs(v), rng.uniform(4, 14) - np.abs(u))) * rng.uniform(0.3, 0.7)
        img += m[..., None] * (rng.uniform(0, 1, size=3) - img)
    return img


def render_image(class_name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One ``size`` x ``size`` RGB uint8 image of class ``class_name``, fully determined by ``rng``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    img = _background(rng, xx, yy, size)
    mask = PATTERNS[class_name](rng, xx, yy, size)
    # A random foreground colour that stands out from the background, except for a small share of
    # deliberately faint images: those are what keeps the trained model from being perfect (so that
    # quantization error shows up in accuracy) without slowing down learning much.
    bg = img.mean(axis=(0, 1))
    fg = rng.uniform(0, 1, size=3).astype(np.float32)
    for _ in range(8):
        if np.linalg.norm(fg - bg) >= 0.5:
            break
        fg = rng.uniform(0, 1, size=3).astype(np.float32)
    alpha = rng.uniform(0.15, 0.35) if rng.random() < HARD_FRACTION else rng.uniform(0.7, 1.0)
    img += (alpha * mask)[..., None] * (fg - img)
    img += rng.normal(0.0, rng.uniform(0.01, 0.05), size=img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    # One independent stream per image: splits never share images, and changing a count leaves the other
    # images unchanged.
    return np.random.default_rng([seed, SPLITS.index(split), label, index])


def load_dataset(root: Path) -> DatasetPaths:
    """The :class:`DatasetPaths` of a dataset written by :func:`generate_dataset`."""
    root = Path(root).resolve()
    manifest = root / DATASET_MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{root} is not a generated dataset (no {DATASET_MANIFEST})")
    classes = tuple(json.loads(manifest.read_text())["classes"])
    return DatasetPaths(
        root=root, train=root / "train", val=root / "val", calib=root / "calib", classes=classes
    )


def generate_dataset(
    root: Path,
    *,
    classes: int = 10,
    train_per_class: int,
    val_per_class: int,
    calib_per_class: int,
    img_size: int = 64,
    seed: int = 0,
) -> DatasetPaths:
    """Render the task as PNGs in ImageFolder layout under ``root/{train,val,calib}/<class>/NNNN.png``.

    ``img_size`` is the model input size; images are rendered at :func:`render_size` (72 px for 64). The
    first ``classes`` families of :data:`PATTERNS` are used. Output is byte-identical for equal arguments.
    The tree is written to a temporary sibling and renamed into place, so ``root`` either does not exist or
    is complete; an existing ``root`` raises :class:`FileExistsError`.
    """
    root = Path(root).resolve()
    if not 2 <= classes <= len(PATTERNS):
        raise ValueError(f"classes must be in [2, {len(PATTERNS)}], got {classes}")
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    names = tuple(sorted(PATTERNS)[:classes])
    counts = {"train": train_per_class, "val": val_per_class, "calib": calib_per_class}
    size = render_size(img_size)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split in SPLITS:
            for label, name in enumerate(names):
                d = tmp / split / name
                d.mkdir(parents=True)
                for i in range(counts[split]):
                    pixels = render_image(name, _image_rng(seed, split, label, i), size)
                    # Fixed encoder settings (and no metadata chunks) keep the bytes reproducible.
                    Image.fromarray(pixels, "RGB").save(d / f"{i:04d}.png", format="PNG", compress_level=6)
        manifest = {
            "fixture_version": FIXTURE_VERSION,
            "classes": list(names),
            "counts": counts,
            "img_size": img_size,
            "render_size": size,
            "seed": seed,
        }
        (tmp / DATASET_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_dataset(root)


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------


def create_model(model_name: str, num_classes: int, img_size: int) -> Any:
    """The timm model exactly as the rest of levit-edge creates it before loading a fixture checkpoint."""
    import timm

    return timm.create_model(
        model_name,
        pretrained=False,
        num_classes=num_classes,
        img_size=img_size,
        pretrained_cfg_overlay={"input_size": (3, img_size, img_size)},
    )


def _training_threads(threads: int | None) -> int:
    return threads or min(2, os.cpu_count() or 1)


@contextlib.contextmanager
def _seeded(seed: int, threads: int | None) -> Iterator[None]:
    """Seed python/torch RNGs and set the thread count, restoring all of it afterwards.

    timm's train transforms draw from ``random`` and torch, so both are seeded; restoring them keeps the
    caller's global state untouched. The thread count is part of the determinism contract (float reduction
    order depends on it).
    """
    import torch

    py_state = random.getstate()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(_training_threads(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            yield
    finally:
        random.setstate(py_state)
        torch.set_num_threads(old_threads)


def _load_rgb(paths: Sequence[Path]) -> list[Image.Image]:
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return images


def evaluate(model: Any, images: Sequence[Image.Image], labels: Sequence[int], transform: Any) -> float:
    """Top-1 of ``model`` (put into eval mode here) on PIL ``images``, in [0, 1]."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), 256):
            x = torch.stack([transform(im) for im in images[start : start + 256]])
            pred = model(x).argmax(dim=1)
            correct += int((pred == torch.tensor(labels[start : start + 256])).sum())
    return correct / max(1, len(images))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train_fixture(
    data: DatasetPaths,
    out: Path,
    *,
    model_name: str = DEFAULT_MODEL,
    img_size: int = DEFAULT_IMG_SIZE,
    epochs: int,
    seed: int = 0,
    threads: int | None = None,
    batch_size: int = 48,
    lr: float = 4e-3,
    progress: ProgressFn | None = None,
) -> FixtureResult:
    """Train ``model_name`` from scratch on ``data.train`` and save its state_dict to ``out`` (atomically).

    Both heads of a distilled LeViT are trained on the labels (there is no teacher). Preprocessing comes
    from timm's data config for the model: the eval transform for val, the train transform with light
    augmentation for training. Deterministic for equal arguments on the same torch build and ``threads``
    (default: 2, or fewer CPUs). Returns the FP32 val top-1 measured after training.
    """
    import timm.data
    import torch
    import torch.nn.functional as F

    out = Path(out)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    with _seeded(seed, threads):
        model = create_model(model_name, data.num_classes, img_size)
        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(True)  # train mode then returns (head, head_dist)
        cfg = timm.data.resolve_data_config(model=model)
        eval_tf = timm.data.create_transform(**cfg)
        # Mild crops only: the default scale=(0.08, 1) would cut most shapes out of a 64 px image. No
        # colour jitter: colour is already random per image, and jitter costs time.
        train_tf = timm.data.create_transform(
            **cfg,
            is_training=True,
            scale=(0.6, 1.0),
            hflip=0.5,
            color_jitter=None,  # type: ignore[arg-type]
        )
        train_samples = data.samples("train")
        train_images = _load_rgb([p for p, _ in train_samples])
        train_labels = torch.tensor([label for _, label in train_samples])
        val_samples = data.samples("val")
        val_images = _load_rgb([p for p, _ in val_samples])

        steps_per_epoch = math.ceil(len(train_images) / batch_size)
        # fused: one kernel per step instead of a loop over ~170 tensors, ~15 % of a CPU step at this size.
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, fused=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
        order_gen = torch.Generator().manual_seed(seed)
        say(f"training {model_name} @ {img_size}px on {len(train_images)} images, {epochs} epochs")
        for epoch in range(epochs):
            model.train()  # also drops LeViT's eval-mode attention-bias cache
            order = torch.randperm(len(train_images), generator=order_gen)
            total, seen = 0.0, 0
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                x = torch.stack([train_tf(train_images[i]) for i in idx.tolist()])
                y = train_labels[idx]
                out_ = model(x)
                heads = out_ if isinstance(out_, tuple) else (out_,)
                loss = torch.stack([F.cross_entropy(h, y, label_smoothing=0.1) for h in heads]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            say(f"epoch {epoch + 1}/{epochs}: loss {total / seen:.3f} ({time.perf_counter() - t0:.1f} s)")

        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(False)
        val_top1 = evaluate(model, val_images, [label for _, label in val_samples], eval_tf)
        train_seconds = time.perf_counter() - t0
        say(f"val top-1 {val_top1:.4f} after {train_seconds:.1f} s")

        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            # Through a file object: given a path, torch.save names the zip's inner folder after the
            # file, so the same weights saved under another name would hash differently.
            with open(tmp, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return FixtureResult(
        model_name=model_name,
        img_size=img_size,
        classes=data.classes,
        val_top1=val_top1,
        train_seconds=round(train_seconds, 2),
        checkpoint_sha256=_sha256(out),
        epochs=epochs,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------------------
# On-disk cache
# --------------------------------------------------------------------------------------------------------


def build_identity(threads: int | None = None) -> dict[str, Any]:
    """What, beyond the parameters, decides a trained fixture's bits: the timm version (state_dict layout),
    the torch build, the SIMD kernels torch picks on this CPU (AVX2 and AVX-512 kernels round differently,
    so the same seed trains another checkpoint) and the training thread count (float reduction order)."""
    import timm
    import torch

    return {
        "timm": timm.__version__,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": _training_threads(threads),
    }


def fixture_key(params: dict[str, Any], threads: int | None = None) -> str:
    """Cache key for a fixture built with ``params`` (generator + training parameters) on this build
    (:func:`build_identity`): a checkpoint trained elsewhere is never mistaken for this machine's."""
    blob = json.dumps(
        {"fixture_version": FIXTURE_VERSION, **build_identity(threads), **params}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _tmp_prefix(key: str) -> str:
    return f".{key}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _remove_stale_builds(cache_root: Path, max_age_s: float = 86400.0) -> None:
    """Delete temporary build dirs left behind by killed processes (SIGKILL skips our cleanup).

    A build dir is stale when its process (named in it) is gone on this host, or, for other hosts, when
    it is older than ``max_age_s``. Live concurrent builds are left alone.
    """
    host = socket.gethostname()
    for p in cache_root.glob(".*.tmp-*"):
        parts = p.name.split(".tmp-", 1)[1].rsplit("-", 2)
        try:
            if len(parts) == 3 and parts[0] == host:
                try:
                    os.kill(int(parts[1]), 0)
                    continue  # still running
                except ProcessLookupError:
                    pass  # stale
                except PermissionError:
                    continue  # alive, another user's
            elif time.time() - p.stat().st_mtime < max_age_s:
                continue
        except (ValueError, OSError):
            continue  # vanished meanwhile, or an odd name: leave it
        shutil.rmtree(p, ignore_errors=True)


def _load_cached(entry: Path) -> tuple[DatasetPaths, FixtureResult, Path]:
    result = FixtureResult.from_json((entry / RESULT_FILE).read_text())
    return load_dataset(entry / "data"), result, entry / CHECKPOINT_FILE


def ensure_fixture(
    cache_root: Path,
    *,
    classes: int = 10,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    calib_per_class: int = DEFAULT_CALIB_PER_CLASS,
    model_name: str = DEFAULT_MODEL,
    img_size: int = DEFAULT_IMG_SIZE,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> tuple[DatasetPaths, FixtureResult, Path]:
    """Generate + train once, then reuse: returns ``(dataset, result, checkpoint_path)``.

    The fixture lives in ``cache_root/<key>/`` (``data/``, ``checkpoint.pth``, ``result.json``), ``key``
    hashing every parameter that changes the output, :data:`FIXTURE_VERSION` and the build identity (timm,
    torch, CPU kernels, training threads); ``progress`` only affects reporting. It is built in a temporary
    sibling and renamed into place, so an interrupted build is never picked up; when several processes
    build the same key at once, the first rename wins and the others use its result.
    """
    params: dict[str, Any] = {
        "classes": classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "calib_per_class": calib_per_class,
        "model_name": model_name,
        "img_size": img_size,
        "epochs": epochs,
        "seed": seed,
    }
    cache_root = Path(cache_root).resolve()
    entry = cache_root / fixture_key(params, threads)
    if (entry / RESULT_FILE).is_file():
        return _load_cached(entry)
    say = progress or (lambda _msg: None)
    say(f"building fixture in {entry}")
    cache_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(cache_root)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(entry.name), dir=cache_root))
    try:
        t0 = time.perf_counter()
        data = generate_dataset(
            tmp / "data",
            classes=classes,
            train_per_class=train_per_class,
            val_per_class=val_per_class,
            calib_per_class=calib_per_class,
            img_size=img_size,
            seed=seed,
        )
        say(f"dataset generated in {time.perf_counter() - t0:.1f} s")
        result = train_fixture(
            data,
            tmp / CHECKPOINT_FILE,
            model_name=model_name,
            img_size=img_size,
            epochs=epochs,
            seed=seed,
            threads=threads,
            progress=progress,
        )
        (tmp / RESULT_FILE).write_text(result.to_json() + "\n")
        identity = {**params, **build_identity(threads)}
        (tmp / "params.json").write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another process finished the same key first (rename onto a non-empty dir fails): use theirs.
            if not (entry / RESULT_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_cached(entry)
