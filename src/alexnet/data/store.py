"""ImageNet as one file of 256x256 JPEGs, prepared once, then decoded in batches on the GPU.

Decoding a full-size ImageNet JPEG and resizing it costs a CPU core ~4 ms, so sixteen cores
deliver ~5,000 images/s -- far below what one modern GPU trains on. The paper's own
preprocessing (shorter side to 256, central 256x256 patch, section 2) does not depend on the
epoch, so it is done once (`python -m alexnet.prepare_store`, `make imagenet-store`), and each
epoch only decodes small JPEGs -- in batches, on the GPU (nvjpeg via torchvision), followed by the
batched augmentation of `alexnet.data.augment.batched` on the GPU as well.

Layout, in `<root>/imagenet/store/`:

- `<split>.jpegs`: the JPEG bytes of every image of the split, back to back, in index order
  (classes sorted, files sorted within a class: `index_folder`'s order);
- `<split>.npz`: `offsets` (N + 1,) int64 into the `.jpegs` file, `labels` (N,) int64,
  `classes` (C,) str, `size`, `quality` and `flags` (N,) int16, the kinds of problem found in each
  file (`alexnet.data.images.kinds_of`). It is written last, so its presence means the store
  is complete.

Files are opened as training from the folder opens them (`alexnet.data.images.open_rgb`): CMYK,
grayscale and the like are converted the same way, and a file training would skip (truncated, not
an image, ...) is stored as the image `FolderDataset` hands training in its place -- the next
usable file of the index, label included -- so the store stays index for index what the folder
gives, and its length that of the folder (which is how `prepare_store` sees that it is complete).

The images are re-encoded JPEGs (quality `quality`, 90 by default): pixels differ from a direct
decode of the originals by the re-encoding's error, a few grey levels (the test measures it).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from alexnet.data.augment.batched import BatchTransform
from alexnet.data.base import FolderDataset
from alexnet.data.device_loader import DeviceLike, RankBatches, resolve_device
from alexnet.data.folder import DataError, FolderIndex, resize_shorter_and_center_crop
from alexnet.data.images import MAX_PIXELS, BadImage, flags_of, open_rgb

log = logging.getLogger(__name__)

# torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

HOW_TO_MAKE = (
    "make it once with `make imagenet-store` (python -m alexnet.prepare_store data=imagenet)"
)


def store_folder(root: Path) -> Path:
    """Where the store of the dataset folder `root` (e.g. `<data>/imagenet`) lives."""
    return Path(root) / "store"


# --------------------------------------------------------------------------------------------
# Writing (once)
# --------------------------------------------------------------------------------------------


def encode_image(
    path: Path, size: int = 256, quality: int = 90, max_pixels: int = MAX_PIXELS
) -> tuple[bytes, tuple[str, ...]]:
    """The paper's preprocessing of one image file, as JPEG bytes (RGB, `size` x `size`), and
    the conversions it needed (`alexnet.data.images.CONVERTED`). Raises `BadImage` for a file
    that training would skip."""
    img, notes = open_rgb(path, max_pixels)
    pixels = resize_shorter_and_center_crop(img, size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), notes


def _encode_job(args: tuple[Path, int, int, int]) -> tuple[bytes | None, int, str]:
    """(bytes or None, kinds as flags, what was wrong): plain values, because a BadImage does not
    survive the pool's pickling (its constructor takes three arguments)."""
    try:
        data, notes = encode_image(*args)
        return data, flags_of(notes), ""
    except BadImage as bad:
        return None, flags_of([bad.kind]), f"{bad.path} ({bad.kind}): {bad.detail}"


def write_store(
    index: FolderIndex,
    folder: Path,
    split: str,
    size: int = 256,
    quality: int = 90,
    workers: int = 8,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Encode every image of `index` into `folder/<split>.jpegs` + `.npz`; returns the .npz path.

    Runs `workers` processes (0: in this process); images are written in index order, an
    unusable file as its replacement (module docstring). Writes to temporary names and renames
    at the end, so an interrupted run leaves no half store.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data_path, meta_path = folder / f"{split}.jpegs", folder / f"{split}.npz"
    offsets = np.zeros(len(index) + 1, dtype=np.int64)
    labels = np.asarray(index.labels, dtype=np.int64)
    flags = np.zeros(len(index), dtype=np.int16)
    jobs = ((path, size, quality, max_pixels) for path in index.paths)
    tmp = data_path.with_suffix(".jpegs.tmp")
    with tmp.open("wb") as out:
        if workers > 0:
            # fork: the workers need only PIL and numpy, and start at once (spawn re-imports torch)
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with get_context(method).Pool(workers) as pool:
                encoded = pool.imap(_encode_job, jobs, chunksize=64)
                _write_all(encoded, out, offsets, labels, flags, split)
        else:
            _write_all(map(_encode_job, jobs), out, offsets, labels, flags, split)
    tmp.replace(data_path)
    tmp_meta = meta_path.with_suffix(".npz.tmp")
    with tmp_meta.open("wb") as f:
        np.savez(
            f,
            offsets=offsets,
            labels=labels,
            classes=np.asarray(index.classes),
            size=np.int64(size),
            quality=np.int64(quality),
            flags=flags,
        )
    tmp_meta.replace(meta_path)
    return meta_path


def _write_all(
    encoded, out, offsets: np.ndarray, labels: np.ndarray, flags: np.ndarray, split: str
) -> None:
    """Write the encoded images in index order. An unusable file waits for the next usable one
    and is written as it (bytes and label), as `FolderDataset` replaces it; unusable files at the
    end of the index wrap around to the first usable one, as its modulo does."""
    pending: list[int] = []  # unusable files since the last usable one
    first: tuple[bytes, int] | None = None
    written = 0

    def put(data: bytes, label: int) -> None:
        nonlocal written
        out.write(data)
        offsets[written + 1] = offsets[written] + len(data)
        labels[written] = label
        written += 1
        if written % 50_000 == 0:
            log.info("%s: %d / %d images", split, written, len(labels))

    for i, (data, kinds, detail) in enumerate(encoded):
        flags[i] = kinds
        if data is None:
            log.warning("skipping %s; the next usable image is stored in its place", detail)
            pending.append(i)
            if len(pending) >= FolderDataset.MAX_REPLACEMENTS:  # the folder is broken, not dirty
                raise DataError(
                    f"{len(pending)} consecutive unusable images, the last {detail}; "
                    f"`python -m alexnet.check_data` lists what is wrong with the folder"
                )
            continue
        first = first or (data, int(labels[i]))
        for _ in pending:
            put(data, int(labels[i]))
        pending = []
        put(data, int(labels[i]))
    if first is None:
        raise DataError(
            f"no usable image in the {split} folder; `python -m alexnet.check_data` "
            f"lists what is wrong with it"
        )
    for _ in pending:
        put(*first)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class JpegStore:
    """One split of a store: `len()`, `labels`, `classes`, `size`, and each image's bytes."""

    def __init__(self, folder: Path, split: str) -> None:
        meta_path, data_path = folder / f"{split}.npz", folder / f"{split}.jpegs"
        if not meta_path.is_file() or not data_path.is_file():
            raise DataError(f"no ImageNet store for {split} in {folder}; {HOW_TO_MAKE}")
        with np.load(meta_path, allow_pickle=False) as meta:
            self.offsets = meta["offsets"]
            self.labels = meta["labels"]
            self.classes = [str(c) for c in meta["classes"]]
            self.size, self.quality = int(meta["size"]), int(meta["quality"])
            # Stores written before the flags were recorded found nothing (they stopped instead).
            flags = meta["flags"] if "flags" in meta.files else np.zeros(len(self.labels))
            self.flags = flags.astype(np.int16)
        self.path = data_path
        if os.path.getsize(data_path) != self.offsets[-1]:
            raise DataError(f"{data_path} is truncated or stale; {HOW_TO_MAKE}")
        self._bytes = np.memmap(data_path, dtype=np.uint8, mode="r") if self.offsets[-1] else None

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, i: int) -> torch.Tensor:
        """Image i's JPEG bytes as a 1-D uint8 CPU tensor (a copy out of the memory map)."""
        return torch.from_numpy(np.array(self._bytes[self.offsets[i] : self.offsets[i + 1]]))

    def decode(self, i: int) -> np.ndarray:
        """Image i decoded on the CPU: uint8 (size, size, 3)."""
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(self.encoded(i), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


class StoreDataset(Dataset):
    """A store split through a reference (albumentations) transform, one image at a time on CPU:
    what a DataLoader with worker processes reads. The batched loader is `StoreLoader`."""

    def __init__(self, store: JpegStore, transform) -> None:
        self.store, self.transform = store, transform

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.store.decode(i)), int(self.store.labels[i])


_END = object()


class StoreLoader(RankBatches):
    """Iterable of (images float32 (B, 3, crop, crop), labels int64 (B,)) made on `device`.

    For each batch: the JPEG bytes are read from the memory-mapped store, decoded -- with
    `decode="device"` in one call of `torchvision.io.decode_jpeg(list, device=device)` (nvjpeg
    on CUDA), with `decode="cpu"` (or on a CPU device) by a pool of `threads` threads running
    libjpeg-turbo, then copied to the device from pinned memory -- stacked, and augmented by
    `transform` (a batch transform) on the device. `decode="cpu"` is the fallback for GPUs whose
    nvjpeg is slow on small images; `make bench` times both. A background thread prepares up
    to `prefetch` batches ahead -- on CUDA in its own stream, the training stream waiting on an
    event per batch -- so decoding overlaps training.

    Randomness, exactly resumable as `DeviceLoader`'s (`alexnet.data.device_loader`): epoch `e`'s
    order is `epoch_permutation(seed, e)`, the same on every rank (`seed=None`: the run's seed,
    `shared_seed`), of which each rank takes every `world_size`-th image; batch `b`'s draws come
    from a device generator reseeded from `batch_seed(seed, e, rank, b)`. An epoch therefore does
    not depend on the epochs iterated before it, and a loader resuming `b` batches into an epoch
    (`resume_at`, set by the data module from the checkpoint) starts at batch `b`. Lightning sets
    the epoch through `loader.sampler.set_epoch`; without it each complete pass moves on to the
    next epoch.
    """

    def __init__(
        self,
        store: JpegStore,
        transform: BatchTransform,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        device: DeviceLike = "cpu",
        seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 3,
        threads: int = 4,
        decode: str = "device",
        epoch: int = 0,
    ) -> None:
        super().__init__(
            transform, batch_size, shuffle, drop_last, device, seed, rank, world_size, epoch
        )
        if decode not in ("device", "cpu"):
            raise ValueError(f"data.store_decode={decode!r} is unknown; choose device or cpu")
        self.decode = decode
        self.store = store
        self.prefetch, self.threads = max(1, prefetch), max(1, threads)
        self._labels: tuple[torch.device, torch.Tensor] | None = None

    def _num_images(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: nothing is read (and no thread started) before the first batch is asked
        # for, by which time Lightning has set the epoch.
        epoch, numbers = self._plan()
        device = resolve_device(self.device)
        if self._labels is None or self._labels[0] != device:
            self._labels = (device, torch.from_numpy(self.store.labels).to(device))
        order = self.order(epoch)
        # lazily, in the producer thread: a seed costs ~30 us, an ImageNet epoch has 10k batches
        batches = ((order[self._batch_slice(b)], self.batch_seed(epoch, b)) for b in numbers)
        yield from self._run(batches, self._labels[1], device)
        self._finished(epoch)

    # -- the producer thread -----------------------------------------------------------------
    def _run(
        self, batches: Iterable[tuple[np.ndarray, int]], labels: torch.Tensor, device: torch.device
    ):
        """Yield the batches of `(indices, augmentation seed)` made by a producer thread."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(batches, labels, device, ready, stop), daemon=True
        )
        producer.start()
        try:
            while (item := ready.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                x, y, event = item
                if event is not None:  # the training stream waits for this batch, not for all
                    stream = torch.cuda.current_stream(device)
                    stream.wait_event(event)
                    x.record_stream(stream)
                    y.record_stream(stream)
                yield x, y
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            producer.join()

    def _produce(self, batches, labels, device, ready: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            # This pass's own generator, reseeded per batch (host-side state: no sync).
            generator = torch.Generator(device=device)
            with ThreadPoolExecutor(self.threads) as pool:
                if device.type == "cuda":
                    with torch.cuda.device(device):
                        stream = torch.cuda.Stream(device)
                        with torch.cuda.stream(stream):
                            for idx, seed in batches:
                                x, y = self._batch(
                                    idx, labels, generator.manual_seed(seed), device, pool
                                )
                                event = torch.cuda.Event()
                                event.record(stream)
                                if not put((x, y, event)):
                                    return
                else:
                    for idx, seed in batches:
                        x, y = self._batch(idx, labels, generator.manual_seed(seed), device, pool)
                        if not put((x, y, None)):
                            return
            put(_END)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)

    def _batch(
        self,
        idx: np.ndarray,
        labels: torch.Tensor,
        generator: torch.Generator,
        device: torch.device,
        pool: ThreadPoolExecutor,
    ):
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = list(pool.map(self.store.encoded, idx))
        if device.type == "cuda" and self.decode == "device":
            batch = torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        else:
            batch = torch.stack(
                list(pool.map(lambda data: decode_jpeg(data, mode=ImageReadMode.RGB), encoded))
            )
            if device.type != "cpu":
                batch = batch.pin_memory().to(device, non_blocking=True)
        batch = batch.permute(0, 2, 3, 1)  # (B, H, W, 3) view of (B, 3, H, W)
        return self.transform(batch, generator), labels[torch.from_numpy(idx).to(device)]


__all__ = [
    "JpegStore",
    "StoreDataset",
    "StoreLoader",
    "encode_image",
    "store_folder",
    "write_store",
]
