"""Data layer: preprocessing config, image sources, list files and calibration lists, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from levit_edge.data.list_format import ListEntry, format_list, parse_list, read_list_file
from levit_edge.data.lists import select_balanced, write_calibration_list
from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import Batch, DataSpec, ImageSource
from levit_edge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MLPERF = REPO / "calibration" / "lists"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Small input keeps every test fast; the transform is still timm's resize + centre crop + normalize.
PRE = PreprocessConfig(
    input_size=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation="bicubic"
)


def rgb_array(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A deterministic image with structure (gradients) and noise, so resizing is not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=-1)
    return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray | Image.Image, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(path, **kwargs)
    return path


def make_labelled(root: Path, classes: dict[str, int], ext: str = ".png") -> Path:
    seed = 0
    for cls, count in classes.items():
        for i in range(count):
            save(root / cls / f"img{i:03d}{ext}", rgb_array(seed))
            seed += 1
    return root


def collect(source: ImageSource, batch_size: int = 4, workers: int | None = None) -> Batch:
    """All batches of a source concatenated into one."""
    batches = list(source.batches(PRE, batch_size=batch_size, workers=workers))
    label_parts = [b.labels for b in batches if b.labels is not None]
    labels = np.concatenate(label_parts) if label_parts else None
    return Batch(
        images=np.concatenate([b.images for b in batches]),
        labels=labels,
        names=tuple(n for b in batches for n in b.names),
    )


def one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------ preprocessing


def test_from_model_levit_defaults() -> None:
    timm = pytest.importorskip("timm")
    cfg = PreprocessConfig.from_model(timm.create_model("levit_128s", pretrained=False))
    assert cfg.input_size == (3, 224, 224)
    assert cfg.crop_pct == pytest.approx(0.9)
    assert cfg.interpolation == "bicubic"
    assert cfg.mean == pytest.approx(IMAGENET_MEAN)
    assert cfg.std == pytest.approx(IMAGENET_STD)
    assert cfg.crop_mode == "center"


def test_from_model_small_input() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "levit_128s",
        pretrained=False,
        img_size=64,
        num_classes=10,
        pretrained_cfg_overlay={"input_size": (3, 64, 64)},
    )
    cfg = PreprocessConfig.from_model(model)
    assert cfg.input_size == (3, 64, 64)
    image = Image.fromarray(rgb_array(0, 80, 100))
    out = cfg.transform()(image)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32


def test_config_dict_round_trip_through_json() -> None:
    d = json.loads(json.dumps(PRE.to_dict()))
    assert d["input_size"] == [3, 32, 32]
    assert PreprocessConfig.from_dict(d) == PRE
    # crop_mode is optional (older configs), defaulting to timm's centre crop
    del d["crop_mode"]
    assert PreprocessConfig.from_dict(d).crop_mode == "center"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mean": None}, "missing key"),
        ({"input_size": [3, 32]}, "'input_size'"),
        ({"input_size": [1, 32, 32]}, "'input_size'"),
        ({"input_size": [3, 32.5, 32]}, "'input_size'"),
        ({"std": [0.2, 0.0, 0.2]}, "'std'"),
        ({"mean": [0.1, "a", 0.2]}, "'mean'"),
        ({"crop_pct": 0}, "'crop_pct'"),
        ({"crop_pct": True}, "'crop_pct'"),
        ({"interpolation": "cubic"}, "'interpolation'"),
        ({"crop_mode": "random"}, "'crop_mode'"),
        ({"colour": 1}, "unknown key"),
    ],
)
def test_config_from_dict_rejects(change: dict[str, object], match: str) -> None:
    d = PRE.to_dict()
    for key, value in change.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    with pytest.raises(UserError, match=match) as e:
        PreprocessConfig.from_dict(d)
    one_line(e)


def test_transform_is_timms_eval_transform() -> None:
    from timm.data import create_transform

    image = Image.fromarray(rgb_array(3, 50, 70))
    ours = PRE.transform()(image)
    reference = create_transform(
        input_size=(3, 32, 32),
        is_training=False,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop_pct=0.875,
    )(image).numpy()
    assert ours.shape == (3, 32, 32) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)


# ---------------------------------------------------------------------------------------------- folders


def test_unlabelled_folder_recursive_sorted(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    save(root / "b.png", rgb_array(1))
    save(root / "a.JPG", rgb_array(2))
    save(root / "sub" / "deep" / "c.bmp", rgb_array(3))
    save(root / "sub" / "d.webp", rgb_array(4), lossless=True)
    save(root / ".hidden.png", rgb_array(5))
    save(root / ".cache" / "e.png", rgb_array(6))
    (root / "notes.txt").write_text("not an image")

    source = open_source(DataSpec(root))
    assert source.kind == "folder"
    assert not source.labelled and source.class_names is None and source.labels is None
    assert source.names == ("a.JPG", "b.png", "sub/d.webp", "sub/deep/c.bmp")
    assert len(source) == 4
    batch = collect(source, batch_size=3)
    assert batch.images.shape == (4, 3, 32, 32) and batch.images.dtype == np.float32
    assert batch.labels is None
    assert batch.names == source.names
    np.testing.assert_array_equal(batch.images[1], PRE.transform()(Image.fromarray(rgb_array(1))))


def test_labelled_folder_classes_and_labels(tmp_path: Path) -> None:
    root = make_labelled(tmp_path / "val", {"n02": 2, "n01": 3, "n10": 1})
    source = open_source(DataSpec(root))
    assert source.kind == "labelled-folder" and source.labelled
    assert source.class_names == ("n01", "n02", "n10")
    batches = list(source.batches(PRE, batch_size=4))
    assert [len(b.names) for b in batches] == [4, 2]
    labels = np.concatenate([b.labels for b in batches if b.labels is not None])
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert batches[0].names[0] == "n01/img000.png"


def test_data_root_is_ignored_by_folders(tmp_path: Path) -> None:
    # one --data-root serves a calibration list and a validation folder in the same run
    root = make_labelled(tmp_path / "val", {"a": 1, "b": 1})
    assert open_source(DataSpec(root, data_root=tmp_path / "elsewhere")).names == (
        "a/img000.png",
        "b/img000.png",
    )


def test_single_subfolder_is_unlabelled_and_loose_images_beside_class_folders_refused(
    tmp_path: Path,
) -> None:
    one = make_labelled(tmp_path / "one", {"only": 2})
    assert open_source(DataSpec(one)).kind == "folder"
    mixed = make_labelled(tmp_path / "mixed", {"a": 1, "b": 1})
    save(mixed / "loose.png", rgb_array(9))
    # one stray image must not silently turn a labelled set into an unlabelled one
    with pytest.raises(UserError, match=r"class folders and 1 image\(s\) outside them.*loose.png"):
        open_source(DataSpec(mixed))


@pytest.mark.parametrize("what", ["missing", "empty", "no-images", "suffix"])
def test_bad_paths(tmp_path: Path, what: str) -> None:
    path = tmp_path / "data"
    if what == "empty":
        path.mkdir()
    elif what == "no-images":
        path.mkdir()
        (path / "readme.md").write_text("x")
    elif what == "suffix":
        path = tmp_path / "data.csv"
        path.write_text("a.png\n")
    with pytest.raises(UserError) as e:
        open_source(DataSpec(path))
    assert str(path) in one_line(e)


# ------------------------------------------------------------------------------------------- list files


def test_list_labelled_with_data_root(tmp_path: Path) -> None:
    root = make_labelled(tmp_path / "val", {"a": 2, "b": 2})
    lst = tmp_path / "lists" / "cal.txt"
    lst.parent.mkdir()
    lst.write_text("# calibration\n\nb/img001.png 7\n  a/img000.png\t3  \r\n")
    source = open_source(DataSpec(lst, data_root=root))
    assert source.kind == "list" and source.labelled and source.class_names is None
    batch = collect(source)
    assert batch.names == ("b/img001.png", "a/img000.png")  # list order, not sorted
    assert batch.labels is not None and batch.labels.tolist() == [7, 3]
    np.testing.assert_array_equal(batch.images[1], PRE.transform()(Image.fromarray(rgb_array(0))))


def test_list_default_root_is_its_folder(tmp_path: Path) -> None:
    make_labelled(tmp_path, {"a": 1, "b": 1})
    lst = tmp_path / "list.txt"
    lst.write_text("a/img000.png\n./b//img000.png\n")
    source = open_source(DataSpec(lst))
    assert not source.labelled
    assert source.names == ("a/img000.png", "b/img000.png")


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("a.png\n../secret.png\n", 2, r"'\.\.'"),
        ("# x\n\nsub/../../x.png 1\n", 3, r"'\.\.'"),
        ("/etc/passwd\n", 1, "absolute"),
        ("a.png\nC:/x.png\n", 2, "absolute"),
        ("a\\..\\b.png\n", 1, "backslash"),
        ("a.png 1\nb.png\n", 2, "all-or-none"),
        ("a.png\nb.png 1\n", 2, "all-or-none"),
        ("a.png -1\n", 1, "negative"),
        ("a.png 0\nb.png 1\na.png 2\n", 3, "duplicate"),
    ],
)
def test_list_refuses(tmp_path: Path, text: str, line: int, match: str) -> None:
    lst = tmp_path / "bad.txt"
    lst.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        open_source(DataSpec(lst))
    message = one_line(e)
    assert f"{lst} line {line}:" in message


def test_list_missing_file_and_skip_bad(tmp_path: Path) -> None:
    save(tmp_path / "a.png", rgb_array(0))
    lst = tmp_path / "l.txt"
    lst.write_text("a.png\nmissing.png\n")
    with pytest.raises(UserError) as e:
        open_source(DataSpec(lst))
    assert str(tmp_path / "missing.png") in one_line(e)
    source = open_source(DataSpec(lst, skip_bad=True))
    assert len(source) == 1
    assert source.skipped == [("missing.png", "file not found")]
    assert collect(source).names == ("a.png",)


def test_empty_list(tmp_path: Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("# nothing\n\n")
    with pytest.raises(UserError, match="lists no images"):
        open_source(DataSpec(lst))


def test_mlperf_lists_parse() -> None:
    opt1 = read_list_file(MLPERF / "mlperf_imagenet_cal_image_list_option_1.txt")
    opt2 = read_list_file(MLPERF / "mlperf_imagenet_cal_image_list_option_2.txt")
    assert len(opt1) == 500 and len(opt2) == 500
    assert all(e.label is None and e.path.startswith("ILSVRC2012_val_") for e in opt1)
    assert all(e.label is not None and 0 <= e.label < 1000 for e in opt2)
    assert opt1[0].path == "ILSVRC2012_val_00027145.JPEG"
    assert opt2[0] == ListEntry("ILSVRC2012_val_00031333.JPEG", 0)


@pytest.mark.parametrize("option", [1, 2])
def test_mlperf_list_opens_with_data_root(tmp_path: Path, option: int) -> None:
    lst = MLPERF / f"mlperf_imagenet_cal_image_list_option_{option}.txt"
    val = tmp_path / "val_flat"
    val.mkdir()
    for entry in read_list_file(lst):
        (val / entry.path).touch()  # open_source checks existence only; nothing is decoded here
    source = open_source(DataSpec(lst, data_root=val, size=100, seed=1))
    assert len(source) == 100
    assert source.labelled == (option == 2)


def test_exclude_by_basename(tmp_path: Path) -> None:
    root = make_labelled(tmp_path / "val", {"a": 3, "b": 3})
    exclude = tmp_path / "cal.txt"
    exclude.write_text("# calibration images\nimg001.png\nelsewhere/img002.png\n")
    source = open_source(DataSpec(root, exclude=exclude))
    assert source.excluded == 4
    assert source.names == ("a/img000.png", "b/img000.png")
    # the real MLPerf list works as an exclude list too
    mlperf = MLPERF / "mlperf_imagenet_cal_image_list_option_2.txt"
    save(root / "a" / "ILSVRC2012_val_00031333.JPEG", rgb_array(1))
    assert open_source(DataSpec(root, exclude=mlperf)).excluded == 1


def test_exclude_everything_is_an_error(tmp_path: Path) -> None:
    save(tmp_path / "d" / "x.png", rgb_array(0))
    exclude = tmp_path / "ex.txt"
    exclude.write_text("x.png\n")
    with pytest.raises(UserError, match="excluded"):
        open_source(DataSpec(tmp_path / "d", exclude=exclude))


# ---------------------------------------------------------------------------------------------- subsets


def test_subset_seeded_sorted_and_spread_over_classes(tmp_path: Path) -> None:
    root = tmp_path / "val"
    for k in range(10):
        for i in range(6):
            (root / f"c{k}").mkdir(parents=True, exist_ok=True)
            (root / f"c{k}" / f"{i}.png").touch()  # never decoded here
    a = open_source(DataSpec(root, size=12, seed=3))
    b = open_source(DataSpec(root, size=12, seed=3))
    other_seed = open_source(DataSpec(root, size=12, seed=4))
    assert len(a) == 12
    assert a.names == b.names
    assert a.names != other_seed.names
    assert list(a.names) == sorted(a.names)
    assert a.labels is not None
    # the first 12 of the sorted listing would cover 2 classes
    assert len(set(a.labels.tolist())) >= 5
    assert len(open_source(DataSpec(root, size=1000))) == 60


@pytest.mark.parametrize("size", [0, -3])
def test_subset_size_must_be_positive(tmp_path: Path, size: int) -> None:
    save(tmp_path / "x.png", rgb_array(0))
    with pytest.raises(UserError, match="subset size"):
        open_source(DataSpec(tmp_path, size=size))


# -------------------------------------------------------------------------------------------- image modes


def _mode_files(folder: Path) -> list[Path]:
    """One file per Pillow mode a dataset meets, including the ones timm and a careful converter differ on."""
    rgb = rgb_array(11)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    palette = Image.fromarray(rgb).convert("P")
    index = int(np.asarray(palette)[0, 0])
    return [
        save(folder / "l.png", gray),
        save(folder / "one.png", Image.fromarray(gray > 128)),
        save(folder / "p.png", palette),
        save(folder / "cmyk.tif", Image.fromarray(rgb).convert("CMYK")),
        save(folder / "i16.png", gray.astype(np.uint16) * 257),  # 16-bit values
        save(folder / "i32.tif", gray.astype(np.int32)),  # 32-bit integer TIFF holding 8-bit values
        save(folder / "rgba.png", np.dstack([rgb, alpha])),
        save(folder / "la.png", Image.fromarray(np.dstack([gray, alpha]), "LA")),
        save(folder / "pt.gif", palette, transparency=index),
        save(folder / "rgb.png", rgb),
    ]


def test_every_mode_is_decoded_as_timms_dataset_decodes_it(tmp_path: Path) -> None:
    """Pixels equal to timm's own ``create_dataset`` (ImageDataset: Image.open(...).convert("RGB"))."""
    from timm.data import create_dataset

    files = _mode_files(tmp_path / "modes")
    modes = {p.name: Image.open(p).mode for p in files}
    assert {"L", "1", "P", "CMYK", "I;16", "I", "RGBA", "LA", "RGB"} <= set(modes.values())
    from timm.data import create_transform

    timm_transform = create_transform(
        input_size=PRE.input_size,
        is_training=False,
        interpolation=PRE.interpolation,
        mean=PRE.mean,
        std=PRE.std,
        crop_pct=PRE.crop_pct,
        crop_mode=PRE.crop_mode,
    )
    # timm finds .png/.jpg/.jpeg by default; its reader takes other extensions through input_key
    dataset = create_dataset(
        "", root=str(tmp_path / "modes"), transform=timm_transform, input_key=".png;.tif;.gif"
    )
    theirs = {Path(path).name: dataset[i][0].numpy() for i, (path, _) in enumerate(dataset.reader.samples)}
    source = open_source(DataSpec(tmp_path / "modes"))
    batch = collect(source, batch_size=3)
    assert sorted(batch.names) == sorted(theirs)
    for name, expected in theirs.items():
        np.testing.assert_array_equal(batch.images[batch.names.index(name)], expected, err_msg=name)
    # the conversions are counted (the report lists them): every file but the RGB one
    converted = {m: sum(1 for v in modes.values() if v == m) for m in set(modes.values()) if m != "RGB"}
    assert source.conversions == converted


# ---------------------------------------------------------------------------------------- corrupt files


def _bad_files(folder: Path) -> dict[str, Path]:
    """Three kinds of unreadable file: not an image, a truncated PNG, a truncated JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    png = save(folder / "whole.png", rgb_array(7)).read_bytes()
    jpg = save(folder / "whole.jpg", rgb_array(7), quality=90).read_bytes()
    (folder / "whole.png").unlink()
    (folder / "whole.jpg").unlink()
    bad = {
        "garbage": folder / "garbage.jpg",
        "truncated-png": folder / "truncated.png",
        "truncated-jpg": folder / "truncated.jpg",
    }
    bad["garbage"].write_bytes(b"\x00not an image at all" * 10)
    bad["truncated-png"].write_bytes(png[: len(png) // 2])
    bad["truncated-jpg"].write_bytes(jpg[: len(jpg) // 2])
    return bad


@pytest.mark.parametrize("kind", ["garbage", "truncated-png", "truncated-jpg"])
def test_unreadable_file_is_named(tmp_path: Path, kind: str) -> None:
    for i in range(5):
        save(tmp_path / f"good{i}.png", rgb_array(i))
    bad = _bad_files(tmp_path / "bad")
    for other, path in bad.items():
        if other != kind:
            path.unlink()
    source = open_source(DataSpec(tmp_path))  # opening does not decode
    with pytest.raises(UserError) as e:
        collect(source)
    assert f"cannot read image {bad[kind]}:" in one_line(e)


def test_first_bad_file_in_order_is_reported(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    # whichever thread fails first, the error names the first bad file in iteration order
    with pytest.raises(UserError) as e:
        collect(open_source(DataSpec(tmp_path)), batch_size=3, workers=3)
    assert str(tmp_path / "garbage.jpg") in one_line(e)


def test_skip_bad_records_and_keeps_batches_full(tmp_path: Path) -> None:
    for i in range(6):
        save(tmp_path / f"good{i}.png", rgb_array(i))
    _bad_files(tmp_path)
    source = open_source(DataSpec(tmp_path, skip_bad=True))
    assert len(source) == 9
    batches = list(source.batches(PRE, batch_size=4))
    assert [len(b.names) for b in batches] == [4, 2]
    assert sorted(name for name, _ in source.skipped) == ["garbage.jpg", "truncated.jpg", "truncated.png"]
    assert all(reason for _, reason in source.skipped)
    # a second pass starts afresh rather than accumulating
    list(source.batches(PRE, batch_size=4))
    assert len(source.skipped) == 3


def test_all_unreadable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"nope")
    source = open_source(DataSpec(tmp_path, skip_bad=True))
    with pytest.raises(UserError, match="no readable images"):
        collect(source)


def test_batches_deterministic_across_worker_counts(tmp_path: Path) -> None:
    root = make_labelled(tmp_path, {"a": 5, "b": 4})
    source = open_source(DataSpec(root))
    one = collect(source, batch_size=3, workers=1)
    many = collect(source, batch_size=3, workers=4)
    np.testing.assert_array_equal(one.images, many.images)
    assert one.names == many.names
    with pytest.raises(UserError, match="batch size"):
        source.batches(PRE, batch_size=0)


# ------------------------------------------------------------------------------------------------ arrays


def test_npy_preprocessed_used_as_is(tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    source = open_source(DataSpec(tmp_path / "x.npy", size=3, seed=0))
    assert source.kind == "array" and not source.labelled and len(source) == 3
    batch = collect(source, batch_size=2)
    index = [int(n[len("x.npy[") : -1]) for n in batch.names]
    np.testing.assert_array_equal(batch.images, images[index])
    wrong = PreprocessConfig.from_dict({**PRE.to_dict(), "input_size": [3, 64, 64]})
    with pytest.raises(UserError) as e:
        list(source.batches(wrong))
    assert "(3, 64, 64)" in one_line(e)


def test_npz_raw_uint8_with_labels(tmp_path: Path) -> None:
    raw = np.stack([rgb_array(i) for i in range(4)])
    np.savez(
        tmp_path / "d.npz", images=raw, labels=np.array([1, 0, 1, 2]), class_names=np.array(["x", "y", "z"])
    )
    source = open_source(DataSpec(tmp_path / "d.npz"))
    assert source.labelled and source.class_names == ("x", "y", "z")
    batch = collect(source)
    assert batch.labels is not None and batch.labels.tolist() == [1, 0, 1, 2]
    np.testing.assert_array_equal(batch.images[2], PRE.transform()(Image.fromarray(rgb_array(2))))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"pixels": np.zeros((2, 3, 8, 8), np.float32)}, "no 'images'"),
        ({"images": np.zeros((2, 8, 8), np.uint8)}, "4-D"),
        ({"images": np.zeros((2, 8, 8, 3), np.float32)}, r"\(N,3,H,W\)"),
        ({"images": np.zeros((2, 3, 8, 8), np.uint8)}, r"\(N,H,W,3\) uint8"),
        ({"images": np.zeros((0, 3, 8, 8), np.float32)}, "non-empty"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.array([0, 1, 2])}, "'labels'"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.array([0.0, 1.0])}, "'labels'"),
        (
            {
                "images": np.zeros((2, 8, 8, 3), np.uint8),
                "labels": np.array([0, 2]),
                "class_names": np.array(["a", "b"]),
            },
            "class names",
        ),
    ],
)
def test_npz_refused(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=match) as e:
        open_source(DataSpec(path))
    assert str(path) in one_line(e)


def test_npy_garbage_and_exclude_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="cannot read array file"):
        open_source(DataSpec(tmp_path / "bad.npy"))
    np.save(tmp_path / "ok.npy", np.zeros((1, 8, 8, 3), np.uint8))
    (tmp_path / "ex.txt").write_text("a.png\n")
    with pytest.raises(UserError, match="exclude"):
        open_source(DataSpec(tmp_path / "ok.npy", exclude=tmp_path / "ex.txt"))


# ------------------------------------------------------------------------------------------ fingerprints


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    root = make_labelled(tmp_path / "val", {"a": 3, "b": 3})
    first = open_source(DataSpec(root)).fingerprint()
    again = open_source(DataSpec(root))
    assert again.fingerprint() == first == again.fingerprint()
    assert len(first) == 64
    assert open_source(DataSpec(root, size=4)).fingerprint() != first

    target = root / "b" / "img001.png"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0x01
    target.write_bytes(bytes(data))
    assert open_source(DataSpec(root)).fingerprint() != first


def test_fingerprint_of_arrays(tmp_path: Path) -> None:
    images = np.zeros((4, 3, 8, 8), np.float32)
    np.save(tmp_path / "a.npy", images)
    before = open_source(DataSpec(tmp_path / "a.npy")).fingerprint()
    assert open_source(DataSpec(tmp_path / "a.npy")).fingerprint() == before
    images[2, 1, 3, 3] = 1e-3
    np.save(tmp_path / "a.npy", images)
    assert open_source(DataSpec(tmp_path / "a.npy")).fingerprint() != before


# ------------------------------------------------------------------------------------- calibration lists


def test_select_balanced_quotas() -> None:
    labels = np.repeat([0, 1, 2, 3], [10, 10, 10, 2])
    chosen = select_balanced(labels, 13, seed=0)
    assert len(chosen) == 13 and list(chosen) == sorted(set(chosen.tolist()))
    counts = np.bincount(labels[chosen], minlength=4)
    # class 3 has only 2; its missing share goes to the others, evenly (3-4 each)
    assert counts[3] == 2 and set(counts[:3].tolist()) <= {3, 4} and counts.sum() == 13
    assert select_balanced(labels, 13, seed=0).tolist() == chosen.tolist()
    assert len(select_balanced(labels, 100, seed=0)) == len(labels)


def test_write_calibration_list_balanced(tmp_path: Path) -> None:
    root = tmp_path / "train"
    for c, count in {"cat": 8, "dog": 8, "eel": 8}.items():
        for i in range(count):
            (root / c).mkdir(parents=True, exist_ok=True)
            (root / c / f"{i}.jpg").touch()
    out = tmp_path / "lists" / "cal.txt"
    assert write_calibration_list(root, out, n=6, seed=1) == 6
    text = out.read_text()
    assert text.startswith("# levit-edge calibration list")
    entries = read_list_file(out)
    assert sorted(e.label for e in entries if e.label is not None) == [0, 0, 1, 1, 2, 2]
    assert all(e.path.startswith(("cat/", "dog/", "eel/")) for e in entries)
    assert [p.name for p in out.parent.iterdir()] == ["cal.txt"]  # no temporary file left behind

    # reproducible, and opens with the folder as data root
    again = tmp_path / "again.txt"
    write_calibration_list(root, again, n=6, seed=1)
    assert again.read_text() == text
    source = open_source(DataSpec(out, data_root=root))
    assert len(source) == 6 and source.labelled
    assert write_calibration_list(root, again, n=100, seed=1) == 24


def test_write_calibration_list_unlabelled_and_errors(tmp_path: Path) -> None:
    for i in range(10):
        save(tmp_path / "imgs" / f"{i}.png", rgb_array(i, 8, 8))
    out = tmp_path / "u.txt"
    assert write_calibration_list(tmp_path / "imgs", out, n=4, seed=0) == 4
    assert all(e.label is None for e in read_list_file(out))
    with pytest.raises(UserError, match="positive"):
        write_calibration_list(tmp_path / "imgs", out, n=0, seed=0)
    with pytest.raises(UserError, match="not a folder"):
        write_calibration_list(out, tmp_path / "v.txt", n=1, seed=0)


def test_format_list_refuses_unreadable_names() -> None:
    assert parse_list(format_list([ListEntry("a b/c.png", 3)])) == [ListEntry("a b/c.png", 3)]
    for bad in ("#x.png", "img 12", "../x.png"):
        with pytest.raises(ValueError):
            format_list([ListEntry(bad)])
    with pytest.raises(ValueError):
        format_list([ListEntry("a.png", 1), ListEntry("b.png")])


def test_streaming_is_lazy_and_can_stop_early(tmp_path: Path) -> None:
    for i in range(8):
        save(tmp_path / f"{i}.png", rgb_array(i))
    (tmp_path / "9-bad.png").write_bytes(b"broken")  # sorts last: in the third batch of 4
    batches = open_source(DataSpec(tmp_path)).batches(PRE, batch_size=4)
    first = next(batches)
    assert first.names == ("0.png", "1.png", "2.png", "3.png")
    batches.close()  # stopping early shuts the decoding threads down without reading further
    batches = open_source(DataSpec(tmp_path)).batches(PRE, batch_size=4)
    assert len(next(batches).names) == 4 and len(next(batches).names) == 4
    with pytest.raises(UserError, match=r"9-bad\.png"):
        next(batches)


# ------------------------------------------------------------------------------------------- class order

NUMBERED = {"1": 1, "2": 1, "10": 2, "11": 1, "9": 1, "class2": 1, "Class10": 1, "class1": 1}


def _targets(reader_samples: list[tuple[str, int]], root: Path) -> dict[str, int]:
    return {Path(p).relative_to(root).as_posix(): int(t) for p, t in reader_samples}


def _ours(source: ImageSource) -> dict[str, int]:
    assert source.labels is not None
    return dict(zip(source.names, source.labels.tolist(), strict=True))


def test_class_order_is_timms_natural_key(tmp_path: Path) -> None:
    """Labels equal those of timm's own create_dataset (ImageFolder reader, natural_key order)."""
    from timm.data import create_dataset

    root = make_labelled(tmp_path / "val", NUMBERED)
    dataset = create_dataset("", root=str(root))
    source = open_source(DataSpec(root))
    assert _ours(source) == _targets(dataset.reader.samples, root)
    to_idx = dataset.reader.class_to_idx
    assert source.class_names == tuple(sorted(to_idx, key=to_idx.__getitem__))
    assert source.class_order == "natural"


def test_lexical_class_order_is_torchvisions(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = make_labelled(tmp_path / "val", NUMBERED)
    folder = ImageFolder(str(root))
    source = open_source(DataSpec(root, class_order="lexical"))
    assert _ours(source) == _targets(folder.samples, root)
    assert source.class_order == "lexical"
    with pytest.raises(UserError, match="--class-order must be one of natural, lexical"):
        open_source(DataSpec(root, class_order="sorted"))


def test_class_list_file_is_timms_class_map(tmp_path: Path) -> None:
    from timm.data import create_dataset

    root = make_labelled(tmp_path / "val", NUMBERED)
    order = ["class2", "11", "1", "Class10", "9", "10", "2", "class1", "unused"]
    class_list = tmp_path / "classes.txt"
    class_list.write_text("\n".join(order) + "\n")
    dataset = create_dataset("", root=str(root), class_map=str(class_list))
    source = open_source(DataSpec(root, class_list=class_list))
    assert _ours(source) == _targets(dataset.reader.samples, root)
    assert source.class_names == tuple(order) and source.class_order == "class-list"
    class_list.write_text("1\n2\n")
    with pytest.raises(UserError, match="class folder '10' is not in the class list"):
        open_source(DataSpec(root, class_list=class_list))


def test_label_beyond_any_class_index(tmp_path: Path) -> None:
    save(tmp_path / "a.png", rgb_array(0))
    (tmp_path / "val.txt").write_text(f"a.png {2**63}\n")
    with pytest.raises(UserError, match=r"line 1: label \d+ is not a class index"):
        open_source(DataSpec(tmp_path / "val.txt"))
    np.savez(
        tmp_path / "val.npz", images=np.zeros((1, 8, 8, 3), np.uint8), labels=np.array([2**63], np.uint64)
    )
    with pytest.raises(UserError, match="not class indices"):
        open_source(DataSpec(tmp_path / "val.npz"))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_preprocessed_pixels(tmp_path: Path, value: float) -> None:
    images = np.zeros((3, *PRE.input_size), np.float32)
    images[1, 0, 3, 4] = value
    np.save(tmp_path / "calib.npy", images)
    source = open_source(DataSpec(tmp_path / "calib.npy"))
    with pytest.raises(UserError, match=r"calib.npy\[1\].*1 non-finite \(NaN/Inf\) value"):
        collect(source)
    skipping = open_source(DataSpec(tmp_path / "calib.npy", skip_bad=True))
    assert len(collect(skipping).names) == 2 and skipping.skipped[0][0] == "calib.npy[1]"
