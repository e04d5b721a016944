"""Image files as they really are: decoded to RGB where possible, refused with a reason where not.

Large image folders always hold a few files that are not what their names say: ImageNet has
CMYK and grayscale JPEGs and a PNG named .JPEG; scraped data adds 0-byte files, truncated
downloads, HTML error pages saved as .jpg and the odd enormous scan. None of them may crash an
epoch. Every file falls into zero or more of these kinds:

- skipped (the training loop gets a replacement image): `SKIPPED`;
- decoded after a conversion, used as normal: `CONVERTED`.

`open_rgb` classifies one file; `ImageRecord` remembers the kinds seen per file in shared memory,
so what DataLoader workers find reaches the main process (and `results.json`); `decode_all`
decodes a whole small-image folder (CIFAR) up front, dropping what cannot be read.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from alexnet.data.folder import DataError, resize_shorter_and_center_crop

log = logging.getLogger(__name__)

SKIPPED = {
    "empty": "0-byte file",
    "unreadable": "cannot be opened (permissions or I/O error)",
    "not_an_image": "no image format PIL knows (e.g. a text or HTML file)",
    "too_large": "more pixels than the decompression-bomb guard allows (data.max_pixels)",
    "truncated": "the file ends before the image data does",
    "corrupt": "the image data cannot be decoded",
}
CONVERTED = {
    "grayscale": "one channel, replicated to RGB",
    "cmyk": "CMYK, converted to RGB",
    "alpha": "transparency, composited onto white",
    "palette": "palette colours, converted to RGB",
    "misnamed": "content format differs from the name's suffix (e.g. a PNG named .JPEG)",
    "tiny": f"shorter side under {16} pixels, upscaled",
}
KINDS = (*SKIPPED, *CONVERTED)
_BIT = {kind: 1 << i for i, kind in enumerate(KINDS)}
_SKIP_MASK = sum(_BIT[k] for k in SKIPPED)

# PIL's own default limit (~89.5 Mpx): larger files are refused before any pixel is decoded.
MAX_PIXELS = 89_478_485
TINY = 16
SUFFIX_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".ppm": "PPM",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


class BadImage(DataError):
    """A file that cannot be used as an image; `kind` is one of `SKIPPED`."""

    def __init__(self, kind: str, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {kind} ({detail})")
        self.kind, self.path, self.detail = kind, path, detail


def open_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, tuple[str, ...]]:
    """(the image as RGB, the `CONVERTED` kinds it needed). Raises `BadImage` for `SKIPPED` ones.

    The size is checked from the header, before decoding, so a decompression bomb costs nothing.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty", path, SKIPPED["empty"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            img = Image.open(path)
    except BadImage:
        raise
    except UnidentifiedImageError as err:
        raise BadImage("not_an_image", path, SKIPPED["not_an_image"]) from err
    except Image.DecompressionBombError as err:
        raise BadImage("too_large", path, str(err)) from err
    except OSError as err:  # PermissionError, EIO, a vanished file, ...
        raise BadImage("unreadable", path, f"{type(err).__name__}: {err.strerror or err}") from err
    with img:
        w, h = img.size
        if w * h > max_pixels:
            raise BadImage("too_large", path, f"{w}x{h} = {w * h} pixels > {max_pixels}")
        try:
            img.load()
        except OSError as err:
            kind = "truncated" if "truncated" in str(err).lower() else "corrupt"
            raise BadImage(kind, path, str(err)) from err
        except Exception as err:  # PIL plugins raise SyntaxError, ValueError, struct.error ...
            raise BadImage("corrupt", path, f"{type(err).__name__}: {err}") from err
        notes = []
        expected = SUFFIX_FORMATS.get(path.suffix.lower())
        if expected is not None and img.format is not None and img.format != expected:
            notes.append("misnamed")
        rgb = _to_rgb(img, notes)
    if min(w, h) < TINY:
        notes.append("tiny")
    return rgb, tuple(notes)


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "P":
        notes.append("palette")
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        notes.append("alpha")
        if mode in ("LA", "La"):
            notes.append("grayscale")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        notes.append("grayscale")
        if mode not in ("1", "L"):  # wide grey levels: scale to 0..255 rather than clip
            arr = np.asarray(img, dtype=np.float64)
            top = arr.max() or 1.0
            img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
    elif mode == "CMYK":
        notes.append("cmyk")
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


# --------------------------------------------------------------------------------------------
# What was found, per file, shared across DataLoader workers
# --------------------------------------------------------------------------------------------


def kinds_of(flags: int) -> list[str]:
    return [k for k in KINDS if flags & _BIT[k]]


def flags_of(kinds: Iterable[str]) -> int:
    return sum({_BIT[k] for k in kinds})


def count_kinds(flags: np.ndarray | torch.Tensor) -> dict[str, int]:
    """{kind: number of files showing it}, kinds that occur only."""
    flags = torch.as_tensor(np.asarray(flags)) if not isinstance(flags, torch.Tensor) else flags
    counts = {k: int(((flags & _BIT[k]) != 0).sum()) for k in KINDS}
    return {k: n for k, n in counts.items() if n}


class ImageRecord:
    """The kinds seen per file of one split, as bit flags in shared memory: DataLoader workers
    (forked or spawned) write, the main process reads the counts at the end of the run.

    Only files the run actually read are recorded; `python -m alexnet.check_data` scans all.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths
        self.flags = torch.zeros(len(paths), dtype=torch.int16)
        if len(paths):
            self.flags.share_memory_()

    def note(self, i: int, kinds: Iterable[str], detail: str = "") -> None:
        old = int(self.flags[i])
        new = old | flags_of(kinds)
        if new == old:
            return
        self.flags[i] = new
        added = kinds_of(new & ~old)
        if any(k in SKIPPED for k in added):
            log.warning(
                "skipping %s (%s): %s; a replacement image is used",
                self.paths[i],
                ", ".join(added),
                detail,
            )
        else:
            log.debug("%s: %s", self.paths[i], ", ".join(added))

    def skipped(self, i: int) -> bool:
        return bool(int(self.flags[i]) & _SKIP_MASK)

    def counts(self) -> dict[str, int]:
        return count_kinds(self.flags)


# --------------------------------------------------------------------------------------------
# A whole folder of small images at once (CIFAR)
# --------------------------------------------------------------------------------------------

# torchvision decodes small JPEGs ~2x faster than PIL. It is used only on files too small to be
# decompression bombs (a JPEG needs >1 bit per 8x8 block, so 256 KiB bound it well below
# MAX_PIXELS) that are plain 3-channel JPEGs; everything else goes through `open_rgb`.
_FAST_MAX_BYTES = 256 * 1024


def _fast_decode(path: Path) -> np.ndarray | None:
    if path.suffix.lower() not in (".jpg", ".jpeg") or path.stat().st_size > _FAST_MAX_BYTES:
        return None
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        data = read_file(str(path))
        if data.numel() < 3 or bytes(data[:3].tolist()) != b"\xff\xd8\xff":
            return None
        arr = decode_image(data, mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, OSError):
        return None  # let open_rgb say what is wrong
    if arr.shape[0] != 3 or min(arr.shape[1:]) < TINY:
        return None
    return arr.permute(1, 2, 0).numpy()


def decode_all(
    paths: Sequence[Path], size: int, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Decode small images into one uint8 array, skipping the files that cannot be used.

    Returns `(images, flags)`: `images` is (M, size, size, 3) for the M usable files, in order
    (others resized: shorter side to `size`, centre crop); `flags` (N,) int16 holds the kinds of
    every file (`kinds_of`), so `flags_ok(flags)` selects the labels of the kept images.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    flags = np.zeros(len(paths), dtype=np.int16)
    kept = 0
    for i, path in enumerate(paths):
        arr = _fast_decode(Path(path))
        if arr is None:
            try:
                img, notes = open_rgb(path, max_pixels)
            except BadImage as bad:
                flags[i] = flags_of([bad.kind])
                log.warning("skipping %s: %s (%s)", path, bad.kind, bad.detail)
                continue
            flags[i] = flags_of(notes)
            arr = np.asarray(img)
        if arr.shape != (size, size, 3):
            arr = resize_shorter_and_center_crop(Image.fromarray(arr), size)
        out[kept] = arr
        kept += 1
    return out[:kept], flags


def flags_ok(flags: np.ndarray) -> np.ndarray:
    """Boolean mask of the files `decode_all` kept."""
    return (np.asarray(flags) & _SKIP_MASK) == 0
