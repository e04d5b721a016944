"""Input pipelines timed on their own: how many augmented images per second reach the device.

CIFAR-10: the albumentations DataLoader (N worker processes) against the GPU-resident loader.
ImageNet: the image-folder DataLoader (full-size JPEG decode + resize on the CPU), a DataLoader
over the 256px JPEG store (CPU decode), and the store loader that decodes and augments on the
device. Each loader yields one batch to warm up (worker start, uploads), then `batches` batches
are timed, copied to the device where the loader leaves them on the CPU, synchronising at the
ends only.

The images are synthetic unless a real data root is given: CIFAR-sized uint8 arrays, and for
ImageNet smooth random JPEGs of 500x375 (about the ImageNet average size) written once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from alexnet.bench.timer import sync
from alexnet.data.augment.batched import batch_transform_of
from alexnet.data.augment.presets import Augmentation
from alexnet.data.base import ArrayDataset, FolderDataset
from alexnet.data.device_loader import DeviceLoader
from alexnet.data.folder import index_folder
from alexnet.data.stats import compute_stats, imagenet_default_stats
from alexnet.data.store import JpegStore, StoreDataset, StoreLoader, store_folder, write_store
from alexnet.data.synthetic import make_images


def time_loader(loader: Iterable, device: torch.device, batches: int) -> dict[str, float]:
    """{"img_per_s", "batches"} over up to `batches` batches after a first, untimed one (an
    iterator's throughput, so not `timer.seconds_per_call`; the same synchronisation)."""
    iterator = iter(loader)
    next(iterator)
    sync(device)
    images = done = 0
    start = time.perf_counter()
    for x, _ in iterator:
        x = x.to(device, non_blocking=True)
        images += len(x)
        done += 1
        if done == batches:
            break
    sync(device)
    seconds = time.perf_counter() - start
    return {"img_per_s": images / seconds if seconds > 0 else 0.0, "batches": done}


def _dataloader(dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def bench_cifar(
    device: torch.device,
    batch_size: int,
    images: int,
    workers: list[int],
    aug: Augmentation,
    batches: int | None = None,
) -> list[dict]:
    """Rows for the CIFAR-10 pipelines on `images` synthetic 32x32 images (one epoch each
    unless `batches` is given)."""
    pixels, labels = make_images(images, 32, 10, seed=0)
    train_tf, _ = aug.presets(compute_stats(pixels), seed=0)
    count = batches or images // batch_size - 1
    rows = []
    for w in workers:
        loader = _dataloader(ArrayDataset(pixels, labels, train_tf), batch_size, w, device)
        rows.append({"name": f"cifar_dataloader_{w}w", **time_loader(loader, device, count)})
    loader = DeviceLoader(
        pixels,
        labels,
        batch_transform_of(train_tf),
        batch_size,
        shuffle=True,
        drop_last=True,
        device=device,
        seed=0,
    )
    rows.append({"name": f"cifar_gpu_resident_{device.type}", **time_loader(loader, device, count)})
    for row in rows:
        row["epoch_s_50k"] = 50_000 / row["img_per_s"] if row["img_per_s"] else None
    return rows


# ---- ImageNet --------------------------------------------------------------------------------


def _smooth_jpeg(args: tuple[Path, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (375, 500, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def synthetic_imagenet(root: Path, images: int, classes: int = 10, workers: int = 2) -> Path:
    """Write `images` JPEGs under `root/imagenet/train/<class>/` (once) and their store."""
    folder = root / "imagenet" / "train"
    if not (store_folder(root / "imagenet") / "train.npz").exists():
        jobs = []
        for i in range(images):
            (folder / f"n{i % classes:08d}").mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"n{i % classes:08d}" / f"{i:07d}.JPEG", i))
        with get_context("fork").Pool(max(1, workers)) as pool:
            pool.map(_smooth_jpeg, jobs, chunksize=16)
        write_store(
            index_folder(folder, ""), store_folder(root / "imagenet"), "train", workers=workers
        )
    return root


def bench_imagenet(
    root: Path,
    device: torch.device,
    batch_size: int,
    workers: list[int],
    batches: int,
    aug: Augmentation,
    threads: int,
) -> list[dict]:
    """Rows for the ImageNet pipelines over `root/imagenet/train` and its store."""
    stats = imagenet_default_stats(256)
    train_tf, _ = aug.presets(stats, seed=0)
    index = index_folder(root / "imagenet" / "train", "")
    store = JpegStore(store_folder(root / "imagenet"), "train")
    count = min(batches, len(store) // batch_size - 1)
    rows = []
    for w in workers:
        folder = _dataloader(FolderDataset(index, train_tf, 256), batch_size, w, device)
        rows.append(
            {"name": f"imagenet_folder_dataloader_{w}w", **time_loader(folder, device, count)}
        )
        stored = _dataloader(StoreDataset(store, train_tf), batch_size, w, device)
        rows.append(
            {"name": f"imagenet_store_dataloader_{w}w", **time_loader(stored, device, count)}
        )
    decoders = ["device", "cpu"] if device.type == "cuda" else ["cpu"]
    for decode in decoders:
        loader = StoreLoader(
            store,
            batch_transform_of(train_tf),
            batch_size,
            shuffle=True,
            drop_last=True,
            device=device,
            seed=0,
            threads=threads,
            decode=decode,
        )
        where = f"cpu_{threads}t" if decode == "cpu" else "nvjpeg"
        rows.append(
            {
                "name": f"imagenet_store_{where}_to_{device.type}",
                **time_loader(loader, device, count),
            }
        )
    return rows
