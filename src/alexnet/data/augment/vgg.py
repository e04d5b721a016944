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

Testing, the alternatives the paper compares in Table 5: ``VGGCenterEval`` (one centre crop of
the image rescaled to Q) and ``VGGMultiCrop`` (a 5x5 regular grid of crops and their flips, 50 per
scale). Several test scales Q (Table 4) are given as a list: dense evaluation then averages the
posteriors over the scales, multi-crop over all crops of all scales.

``VGGAug`` (the ``aug`` group's choice ``vgg``) builds the (train, eval) pair;
the mean RGB is the mean over the pixels of the dataset's mean image (``mean_rgb_from_stats``), so
one statistics file serves AlexNet's mean-image centring and VGG's mean-colour centring.

Randomness: with ``seed=None`` the draws come from torch's global RNG, which DataLoader workers and
Lightning's ``seed_everything`` already seed per worker; pass ``seed`` for a private generator
(reproducible sequences in a single process, e.g. tests and figures; inside a DataLoader worker
the private generator is reseeded from ``seed`` and the worker's seed, so workers differ).
In training, ``VGGTrain.reseed`` restarts a private generator from each batch's seed
(``alexnet.data.order``), as the AlexNet presets do: augmentation is then independent of the
worker count and exactly resumable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import get_worker_info

from alexnet.data.augment.presets import Augmentation
from alexnet.data.stats import DatasetStats, lighting_offset


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def to_chw_uint8(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> uint8 3xHxW (a view when possible).

    The presets rescale and crop in uint8 and convert only the result to float: torch's
    antialiased bilinear resize is 3-5x faster on uint8 than on float32, at the cost of rounding
    to whole levels. Measured once (median of 30) for a 500x375 image on one thread of a loaded
    2-core Intel Xeon VM (AVX-512), torch 2.14: to S = 384, 0.7 ms vs 3.4 ms (~5x); to S = 256,
    0.5 ms vs 1.7 ms (~3x).
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    if not arr.flags.writeable:  # torch warns on read-only arrays (e.g. np.asarray(PIL image))
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


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
    """Rescale a 3xHxW tensor (uint8 or float) so its shorter side is S, keeping the aspect ratio.

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
        mean_rgb: per-channel mean in 0..255 units (``mean_rgb_from_stats``).
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
        self.seed = seed
        self.generator = self.rescale.generator = _generator(seed)
        self._worker_seed: int | None = None

    def __repr__(self) -> str:
        return (
            f"VGGTrain(scale={(self.rescale.scale_min, self.rescale.scale_max)}, "
            f"crop={self.crop}, flip={self.flip}, lighting={self.lighting}, seed={self.seed})"
        )

    def reseed(self, seed: int) -> None:
        """Restart the random draws from `seed`, as `augment.presets.Preset.reseed`: the
        training sampler passes one seed per batch (alexnet.data.order), so the scales, crops,
        flips and lighting of a batch depend neither on the workers nor on where a run resumed."""
        info = get_worker_info()
        self._worker_seed = None if info is None else info.seed
        if self.generator is None:  # seed=None drew from torch's global RNG until now
            self.generator = self.rescale.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def _reseed_in_worker(self) -> None:
        # Forked workers inherit copies of one private generator: without this every worker
        # would replay the same scales, crops and flips.
        info = get_worker_info()
        if self.generator is None or info is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        entropy = [info.seed] if self.seed is None else [int(self.seed), info.seed]
        self.generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.generator))

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        self._reseed_in_worker()
        x = self.rescale(to_chw_uint8(img))
        h, w = x.shape[-2:]
        top, left = self._randint(h - self.crop + 1), self._randint(w - self.crop + 1)
        x = x[:, top : top + self.crop, left : left + self.crop].float()
        if self.flip and self._randint(2):
            x = torch.flip(x, dims=(-1,))
        if self.eigval is not None and self.lighting > 0:
            alpha = torch.randn(3, generator=self.generator) * self.lighting
            # one RGB offset for the whole image: the paper's formula, as the AlexNet presets
            shift = lighting_offset(alpha, self.eigval, self.eigvec, scale=1.0)
            x = x + shift.view(3, 1, 1)
        return (x - self.mean).contiguous()


class VGGDenseEval:
    """Dense-evaluation preset: shorter side to Q, minus the mean RGB, the whole image.

    ``scale`` is one Q (returns a 3xHxW tensor) or a list of them (returns a tuple with one
    tensor per Q, for multi-scale evaluation). The images of a batch differ in size, so a loader
    must batch them with ``dense_collate`` (``collate_fn`` says so to the data modules).
    """

    def __init__(self, mean_rgb: Sequence[float], scale: int | Sequence[int] = 256) -> None:
        self.mean = _mean_tensor(mean_rgb)
        self.scales = _scales(scale)
        self.multi_scale = not isinstance(scale, int)
        self.rescales = [IsotropicRescale(q) for q in self.scales]

    def __repr__(self) -> str:
        return f"VGGDenseEval(scale={self.scales if self.multi_scale else self.scales[0]})"

    def __call__(self, img: np.ndarray) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = to_chw_uint8(img)
        views = tuple((rescale(x).float() - self.mean).contiguous() for rescale in self.rescales)
        return views if self.multi_scale else views[0]

    @staticmethod
    def collate_fn(batch: list[tuple[Any, int]]) -> tuple[list[Any], torch.Tensor]:
        return dense_collate(batch)


def dense_collate(batch: list[tuple[Any, int]]) -> tuple[list[Any], torch.Tensor]:
    """Batch whole images of different sizes without padding: (list of images, labels).

    Padding would change what the network sees at the borders and so the scores; instead the
    model groups images of equal size itself (``alexnet.models.dense.dense_posteriors``).
    """
    images, labels = zip(*batch, strict=True)
    return list(images), torch.as_tensor(labels, dtype=torch.long)


def _scales(scale: int | Sequence[int]) -> list[int]:
    scales = [scale] if isinstance(scale, int) else [int(q) for q in scale]
    if not scales or min(scales) < 1:
        raise ValueError(f"eval scale {scale!r} must be a positive Q or a non-empty list of them")
    return scales


class VGGCenterEval:
    """Shorter side to Q, minus the mean RGB, the centre ``crop`` x ``crop`` patch.

    One Q gives a (3, crop, crop) tensor; a list of Qs gives (len(Q), 3, crop, crop), one centre
    crop per scale, whose soft-max the model averages (as for AlexNet's ten crops).
    """

    def __init__(
        self, mean_rgb: Sequence[float], scale: int | Sequence[int] = 256, crop: int = 224
    ) -> None:
        self.mean = _mean_tensor(mean_rgb)
        self.scales, self.crop = _scales(scale), int(crop)
        if self.crop > min(self.scales):
            raise ValueError(f"crop={crop} is larger than the smallest eval scale {scale!r}")
        self.multi_scale = not isinstance(scale, int)
        self.rescales = [IsotropicRescale(q) for q in self.scales]

    def __repr__(self) -> str:
        return f"VGGCenterEval(scale={self.scales}, crop={self.crop})"

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x, c = to_chw_uint8(img), self.crop
        crops = []
        for rescale in self.rescales:
            y = rescale(x)
            top, left = (y.shape[-2] - c) // 2, (y.shape[-1] - c) // 2
            crops.append(y[:, top : top + c, left : left + c].float() - self.mean)
        out = torch.stack(crops) if self.multi_scale else crops[0]
        return out.contiguous()


class VGGMultiCrop:
    """Multi-crop evaluation (section 3.2, Table 5): per scale Q, a ``grid`` x ``grid`` regular grid
    of ``crop`` x ``crop`` patches over the rescaled image and their horizontal flips.

    Returns (len(Q) * grid^2 * 2, 3, crop, crop): the paper's 50 crops per scale (150 over its
    three scales); the model averages their soft-max. Crop corners are spread evenly from one
    border to the other (rounded to whole pixels). Order: scale, then row, column, then flips.
    """

    def __init__(
        self,
        mean_rgb: Sequence[float],
        scale: int | Sequence[int] = 256,
        crop: int = 224,
        grid: int = 5,
        flip: bool = True,
    ) -> None:
        self.mean = _mean_tensor(mean_rgb)
        self.scales, self.crop, self.grid, self.flip = _scales(scale), int(crop), int(grid), flip
        if self.crop > min(self.scales):
            raise ValueError(f"crop={crop} is larger than the smallest eval scale {scale!r}")
        if self.grid < 1:
            raise ValueError(f"grid={grid} must be >= 1")
        self.rescales = [IsotropicRescale(q) for q in self.scales]

    def __repr__(self) -> str:
        return f"VGGMultiCrop(scale={self.scales}, crop={self.crop}, grid={self.grid})"

    def _corners(self, size: int) -> list[int]:
        if self.grid == 1:
            return [(size - self.crop) // 2]
        return np.linspace(0, size - self.crop, self.grid).round().astype(int).tolist()

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x, c = to_chw_uint8(img), self.crop
        crops = []
        for rescale in self.rescales:
            y = rescale(x).float() - self.mean
            grid = [
                y[:, top : top + c, left : left + c]
                for top in self._corners(y.shape[-2])
                for left in self._corners(y.shape[-1])
            ]
            crops += grid + ([torch.flip(g, dims=(-1,)) for g in grid] if self.flip else [])
        return torch.stack(crops).contiguous()


# --------------------------------------------------------------------------------------------
# The `aug` config group's choice `vgg`: a (train, eval) pair
# --------------------------------------------------------------------------------------------


def mean_rgb_from_stats(stats: DatasetStats) -> tuple[float, float, float]:
    """The mean RGB colour VGG subtracts: the dataset's mean image averaged over its pixels."""
    mean = np.asarray(stats.mean_image, dtype=np.float64).mean(axis=(0, 1))
    return tuple(float(m) for m in mean)


def default_eval_scale(scale: int | Sequence[int]) -> int:
    """Section 4.1's test scale: Q = S for a fixed S, Q = (S_min + S_max) / 2 under scale jitter."""
    lo, hi = _scale_range(scale)
    return (lo + hi) // 2


@dataclass(frozen=True)
class VGGAug(Augmentation):
    """`aug=vgg`: ``scale`` (S, or [S_min, S_max] for scale jitter), ``crop``, ``flip``,
    ``lighting`` (std of the PCA colour shift; 0 turns it off), ``eval`` (dense | multi_crop |
    center) and ``eval_scale`` (Q, a list of Qs, or null for ``default_eval_scale``).

    Mean RGB from ``mean_rgb_from_stats(stats)``; the PCA lighting uses the dataset's RGB eigens
    (for [0, 1] pixels, so scaled by 255 to shift 0..255 pixels exactly as AlexNet's
    ``PCALighting`` does).
    """

    name: ClassVar[str] = "vgg"
    eval_modes: ClassVar[tuple[str, ...]] = ("dense", "multi_crop", "center")
    eval: str = "dense"
    scale: int | Sequence[int] = (256, 512)
    crop: int = 224
    flip: bool = True
    lighting: float = 0.1
    eval_scale: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lighting < 0:
            raise ValueError(
                f"aug.lighting={self.lighting} is the std of the PCA coefficients; use >= 0"
            )
        scale = self.scale if isinstance(self.scale, int) else tuple(int(s) for s in self.scale)
        if not isinstance(scale, int) and len(scale) == 1:
            scale = scale[0]
        object.__setattr__(self, "scale", scale)
        q = self.eval_scale
        if q is not None and not isinstance(q, int):
            object.__setattr__(self, "eval_scale", tuple(int(v) for v in q))

    def presets(
        self, stats: DatasetStats, seed: int | None = None
    ) -> tuple[VGGTrain, VGGCenterEval | VGGMultiCrop | VGGDenseEval]:
        mean = mean_rgb_from_stats(stats)
        lit = self.lighting > 0
        train = VGGTrain(
            mean,
            scale=self.scale,
            crop=self.crop,
            flip=self.flip,
            lighting=self.lighting,
            eigval=(np.asarray(stats.eigval) * 255.0).tolist() if lit else None,
            eigvec=np.asarray(stats.eigvec).tolist() if lit else None,
            seed=seed,
        )
        q = default_eval_scale(self.scale) if self.eval_scale is None else self.eval_scale
        q = q if isinstance(q, int) else list(q)
        if self.eval == "dense":
            return train, VGGDenseEval(mean, scale=q)
        if self.eval == "multi_crop":
            return train, VGGMultiCrop(mean, scale=q, crop=self.crop)
        return train, VGGCenterEval(mean, scale=q, crop=self.crop)
