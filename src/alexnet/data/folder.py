"""Image-folder trees on disk: `<split>/<class>/<image>`, decoded to uint8 RGB arrays.

Any image PIL can open is accepted: grayscale, CMYK and palette images become RGB, so a real
ImageNet folder (which holds all three) needs no cleaning first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message says what to do (one line, no traceback)."""


@dataclass(frozen=True)
class FolderIndex:
    """The files of one split: parallel lists of paths and integer labels, classes sorted."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)


def index_folder(root: Path, hint: str) -> FolderIndex:
    """List `root/<class>/<image>`; classes in sorted order (torchvision's ImageFolder order).

    `hint` is appended to the error when the folder is missing or holds no images, so the user
    learns how to get the data.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; {hint}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"data folder {root} holds no images in <class>/ sub-folders; {hint}")
    return FolderIndex(root, classes, paths, labels)


def resize_shorter_and_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """The paper's preprocessing: shorter side to `size` (upscaling small images), then the
    central `size` x `size` patch. Returns uint8 HxWx3."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
