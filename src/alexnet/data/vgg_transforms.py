"""VGG's data pipeline (Simonyan & Zisserman 2014, sections 3.1 and 3.2) as callable presets.

Training (3.1): isotropically rescale the image so its shorter side is S -- fixed (256 or 384)
or, with "scale jitter", drawn uniformly from [S_min, S_max] = [256, 512] for every image each
time it is seen -- take a random 224x224 crop, flip it horizontally at random, optionally shift
its colour along the RGB principal components (Krizhevsky et al.'s "PCA lighting"), and subtract
the mean RGB value (one value per channel, not AlexNet's mean image).

Testing (3.2, dense evaluation): rescale the shorter side to Q and hand the whole image to the
network's ``dense_forward``/``dense_scores``.

Inputs are uint8 HxWx3 RGB arrays (numpy, or anything ``np.asarray`` turns into one, e.g. a PIL
image); outputs are float32 CHW tensors in 0..255 pixel units minus the mean. Plain torch is used
(bilinear resize with antialiasing) so the exact S drawn is under our control.

Randomness: with ``seed=None`` the draws come from torch's global RNG, which DataLoader workers and
Lightning's ``seed_everything`` already seed per worker; pass ``seed`` for a private generator
(reproducible sequences in a single process, e.g. tests and figures).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

# The mean RGB of the ILSVRC training set as shipped with the authors' released models.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def to_chw_float(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in 0..255 units."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float()


def _scale_range(scale: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(scale, int) and not isinstance(scale, bool):
        return scale, scale
    lo, hi = (int(s) for s in scale)
    if lo > hi:
        raise ValueError(f"scale={tuple(scale)!r} must be (S_min, S_max) with S_min <= S_max")
    return lo, hi


def _mean_tensor(mean_rgb: Sequence[float]) -> torch.Tensor:
    mean = torch.tensor([float(m) for m in mean_rgb], dtype=torch.float32)
    if mean.shape != (3,):
        raise ValueError(f"mean_rgb must hold 3 values (R, G, B), got {list(mean_rgb)!r}")
    return mean.view(3, 1, 1)


class IsotropicRescale:
    """Rescale a 3xHxW float tensor so its shorter side is S, keeping the aspect ratio.

    ``scale`` is an int S (fixed) or a pair (S_min, S_max): S is then drawn uniformly from the
    integers in [S_min, S_max] on every call (scale jitter). ``last_scale`` holds the S used.
    """

    def __init__(self, scale: int | Sequence[int], seed: int | None = None) -> None:
        self.scale_min, self.scale_max = _scale_range(scale)
        if self.scale_min < 1:
            raise ValueError(f"scale={scale!r} must be positive")
        self.generator = _generator(seed)
        self.last_scale: int | None = None

    def draw_scale(self) -> int:
        if self.scale_min == self.scale_max:
            return self.scale_min
        s = torch.randint(self.scale_min, self.scale_max + 1, (1,), generator=self.generator)
        return int(s)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        s = self.last_scale = self.draw_scale()
        h, w = img.shape[-2:]
        size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        if size == (h, w):
            return img
        return F.interpolate(
            img[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0]


class VGGTrain:
    """Training preset: rescale (S fixed or jittered), random crop, flip, lighting, minus mean.

    Args:
        mean_rgb: per-channel mean in 0..255 units (e.g. ``IMAGENET_MEAN_RGB``).
        scale: S (256 or 384 in the paper) or (S_min, S_max) = (256, 512) for scale jitter.
        crop: side of the square random crop (224); must not exceed S_min.
        flip: random horizontal flip with probability 1/2.
        lighting: std of the PCA colour-shift coefficients (0.1 in Krizhevsky et al.); used only
            when ``eigval`` (3,) and ``eigvec`` (3x3, columns = eigenvectors) of the training
            set's RGB covariance, in 0..255 units, are given.
        seed: private generator seed; None uses torch's global RNG.
    """

    def __init__(
        self,
        mean_rgb: Sequence[float],
        scale: int | Sequence[int] = (256, 512),
        crop: int = 224,
        flip: bool = True,
        lighting: float = 0.1,
        eigval: Sequence[float] | None = None,
        eigvec: Sequence[Sequence[float]] | None = None,
        seed: int | None = None,
    ) -> None:
        self.mean = _mean_tensor(mean_rgb)
        self.rescale = IsotropicRescale(scale, seed=None)
        if crop > self.rescale.scale_min:
            raise ValueError(f"crop={crop} is larger than the smallest scale {scale!r}")
        self.crop, self.flip, self.lighting = int(crop), bool(flip), float(lighting)
        if (eigval is None) != (eigvec is None):
            raise ValueError("lighting needs both eigval and eigvec (or neither)")
        self.eigval = None if eigval is None else torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = None if eigvec is None else torch.tensor(eigvec, dtype=torch.float32)
        # One generator drives every draw, so a seeded preset replays the same sequence.
        self.generator = self.rescale.generator = _generator(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.generator))

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x = self.rescale(to_chw_float(img))
        h, w = x.shape[-2:]
        top, left = self._randint(h - self.crop + 1), self._randint(w - self.crop + 1)
        x = x[:, top : top + self.crop, left : left + self.crop]
        if self.flip and self._randint(2):
            x = torch.flip(x, dims=(-1,))
        if self.eigval is not None and self.lighting > 0:
            alpha = torch.randn(3, generator=self.generator) * self.lighting
            shift = self.eigvec @ (alpha * self.eigval)  # one RGB offset for the whole image
            x = x + shift.view(3, 1, 1)
        return (x - self.mean).contiguous()


class VGGDenseEval:
    """Dense-evaluation preset: shorter side to Q, minus the mean RGB, whole image (3xHxW)."""

    def __init__(self, mean_rgb: Sequence[float], scale: int = 256) -> None:
        self.mean = _mean_tensor(mean_rgb)
        self.rescale = IsotropicRescale(int(scale))

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return (self.rescale(to_chw_float(img)) - self.mean).contiguous()
