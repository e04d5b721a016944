"""Bad image files never crash an epoch: each is decoded correctly or skipped, and counted."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from alexnet.data import ImageNetDataModule
from alexnet.data.augment.presets import PaperAug
from alexnet.data.base import FolderDataset
from alexnet.data.folder import index_folder
from alexnet.data.images import BadImage, decode_all, flags_ok, kinds_of, open_rgb
from alexnet.training.run import train

REPO = Path(__file__).resolve().parents[2]


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels but holds almost no data: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 9))
        + chunk(b"IEND", b"")
    )


def noise(size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


# name -> (file bytes, what open_rgb must say: a skipped kind, or the converted kinds)
def bad_files() -> dict[str, tuple[bytes, str | tuple[str, ...]]]:
    rgba = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    png = io.BytesIO()
    rgba.save(png, "PNG")
    good = jpeg_bytes(noise())
    return {
        "truncated.JPEG": (good[: len(good) * 6 // 10], "truncated"),
        "empty.JPEG": (b"", "empty"),
        "html.JPEG": (b"<html><body>404 Not Found</body></html>\n", "not_an_image"),
        "bomb.JPEG": (png_header(20_000, 20_000), "too_large"),  # PIL itself refuses
        "big.png": (png_header(10_000, 10_000), "too_large"),  # PIL only warns; we refuse
        "alpha-png.JPEG": (png.getvalue(), ("misnamed", "alpha")),
        "gray.JPEG": (jpeg_bytes(Image.new("L", (40, 30), 100)), ("grayscale",)),
        "cmyk.JPEG": (jpeg_bytes(Image.new("CMYK", (40, 30), (0, 255, 255, 0))), ("cmyk",)),
        "pixel.JPEG": (jpeg_bytes(Image.new("RGB", (1, 1), (10, 200, 30))), ("tiny",)),
    }


@pytest.mark.parametrize("name", list(bad_files()))
def test_open_rgb_decodes_or_names_the_problem(name, tmp_path):
    data, expected = bad_files()[name]
    path = tmp_path / name
    path.write_bytes(data)
    if isinstance(expected, str):
        with pytest.raises(BadImage) as caught:
            open_rgb(path)
        assert caught.value.kind == expected and str(path) in str(caught.value)
        return
    img, notes = open_rgb(path)
    assert img.mode == "RGB" and set(notes) == set(expected)
    pixels = np.asarray(img).astype(int)
    if "alpha" in expected:  # transparent half composited onto white, opaque half stays blue
        assert (pixels[:, :18] == 255).all() and (abs(pixels[:, 22:] - [0, 0, 255]) < 8).all()
    if "grayscale" in expected:
        assert (abs(pixels - 100) <= 2).all()
    if "cmyk" in expected:  # C=0 M=255 Y=255 K=0 is red
        assert pixels[..., 0].min() > 240 and pixels[..., 1:].max() < 15
    if "tiny" in expected:
        assert img.size == (1, 1) and (abs(pixels[0, 0] - [10, 200, 30]) < 12).all()


def test_decompression_bomb_guard_follows_max_pixels(tmp_path):
    path = tmp_path / "photo.jpg"
    noise((300, 200)).save(path)
    assert open_rgb(path, max_pixels=60_000)[0].size == (300, 200)
    with pytest.raises(BadImage, match="too_large"):
        open_rgb(path, max_pixels=59_999)


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    path = tmp_path / "secret.JPEG"
    path.write_bytes(jpeg_bytes(noise()))
    original = Image.open

    def refuse(fp, *args, **kwargs):  # what open() does for a file without read permission
        if Path(fp) == path:
            raise PermissionError(13, "Permission denied", str(fp))
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(BadImage) as caught:
        open_rgb(path)
    assert caught.value.kind == "unreadable" and "Permission denied" in str(caught.value)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads files regardless of permissions; "
    "test_unreadable_file_is_skipped simulates the PermissionError instead",
)
def test_unreadable_file_by_permissions(tmp_path):
    path = tmp_path / "secret.JPEG"
    path.write_bytes(jpeg_bytes(noise()))
    path.chmod(0)
    with pytest.raises(BadImage, match="unreadable"):
        open_rgb(path)


EXPECTED_COUNTS = {
    "truncated": 1,
    "empty": 1,
    "not_an_image": 1,
    "too_large": 2,
    "misnamed": 1,
    "alpha": 1,
    "grayscale": 1,
    "cmyk": 1,
    "tiny": 1,
}


def write_dirty_class(folder: Path, good: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        noise(seed=i).save(folder / f"good{i}.JPEG")
    for name, (data, _) in bad_files().items():
        (folder / name).write_bytes(data)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img))


def test_folder_dataset_replaces_skipped_images_and_counts_them_across_workers(tmp_path):
    write_dirty_class(tmp_path / "train" / "n0")
    write_dirty_class(tmp_path / "train" / "n1")
    index = index_folder(tmp_path / "train", "")
    dataset = FolderDataset(index, to_tensor, size=32)
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    images = torch.cat([x for x, _ in loader])
    assert images.shape == (len(index), 32, 32, 3)
    # a skipped file's slot holds the next usable image of the index, with that image's label
    skipped = [i for i, p in enumerate(index.paths) if p.name in ("empty.JPEG", "html.JPEG")]
    for i in skipped:
        x, y = dataset[i]
        j = next(j for j in range(i + 1, len(index)) if not dataset.record.skipped(j))
        assert torch.equal(x, dataset[j][0]) and y == index.labels[j]
    # what the workers found is visible here, counted once per file
    assert dataset.record.counts() == {k: 2 * n for k, n in EXPECTED_COUNTS.items()}


def test_imagenet_module_reports_bad_images(tmp_path):
    for split in ("train", "val"):
        write_dirty_class(tmp_path / "imagenet" / split / "n01440764")
        noise().save(tmp_path / "imagenet" / split / "n01440764" / "more.JPEG")
    dm = ImageNetDataModule(
        root=tmp_path,
        num_classes=1,
        batch_size=2,
        num_workers=0,
        aug=PaperAug(crop=224, lighting=0.1),
    )
    dm.setup("fit")
    for _ in dm.train_dataloader():
        pass
    assert dm.bad_images() == {"train": EXPECTED_COUNTS}


def test_cifar_folder_decode_leaves_out_unusable_files(tmp_path):
    write_dirty_class(tmp_path / "c")
    paths = sorted((tmp_path / "c").iterdir())
    images, flags = decode_all(paths, size=32)
    keep = flags_ok(flags)
    assert len(images) == keep.sum() == 4 + 4  # good files + the converted ones
    kinds = {p.name: kinds_of(f) for p, f in zip(paths, flags, strict=True) if f}
    assert kinds["gray.JPEG"] == ["grayscale"] and kinds["empty.JPEG"] == ["empty"]


@pytest.fixture
def dirty_cifar(tmp_path):
    from conftest import CIFAR_CLASSES, write_jpegs

    root = tmp_path / "data"
    write_jpegs(root / "cifar10" / "train", CIFAR_CLASSES, per_class=6, size=32, seed=0)
    write_jpegs(root / "cifar10" / "test", CIFAR_CLASSES, per_class=2, size=32, seed=1)
    for name, (data, _) in bad_files().items():
        (root / "cifar10" / "train" / "cat" / name).write_bytes(data)
    return root


def test_training_on_dirty_data_finishes_and_reports_counts(cfg_factory, dirty_cifar, tmp_path):
    cfg = cfg_factory(
        [
            "debug=limit",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "logger=csv",
            "callbacks.progress_bar=false",
            f"paths.data_dir={dirty_cifar}",
            "data.batch_size=8",
            "data.val_size=8",
            "data.download=false",
        ],
        output_dir=tmp_path / "run",
    )
    results = train(cfg)
    assert results["status"] == "ok"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["bad_images"] == {"train": EXPECTED_COUNTS}


def test_check_data_lists_the_problems_without_training(dirty_cifar, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet.check_data",
            "data=cifar10",
            "data.download=false",
            f"paths.data_dir={dirty_cifar}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "train: 69 images, 5 would be skipped, 4 converted" in out
    for name in ("truncated.JPEG", "empty.JPEG", "html.JPEG", "bomb.JPEG", "big.png"):
        assert name in out
    assert "grayscale" in out and "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "run" / "check_data.json").read_text())
    assert report["splits"]["train"]["skipped"] == {
        "empty": 1,
        "not_an_image": 1,
        "too_large": 2,
        "truncated": 1,
    }
    assert report["splits"]["test"]["skipped"] == {}
