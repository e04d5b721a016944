"""Section 4.1 of the paper, "Data Augmentation", as albumentations transforms and presets.

Read top to bottom like the paper:

1. every image (already 256x256, or 32x32 for CIFAR) has the training set's mean image
   subtracted, at full size, before any crop (`SubtractMeanImage`);
2. training takes a random 224x224 patch and its horizontal reflection (`PaperTrain`);
3. and adds multiples of the principal components of the training set's RGB values to every
   pixel, with coefficients alpha_i ~ N(0, 0.1) drawn once per image per presentation
   (`PCALighting`, on `alexnet.data.stats.lighting_offset`);
4. at test time the network sees the centre patch (`PaperEval`) or averages its softmax over
   ten patches: four corners, the centre, and their reflections (`TenCrop`).

CIFAR-10 gets the usual pad-and-crop recipe (`CifarTrain`); `NoAug` only subtracts the mean.
`PaperAug`, `CifarAug` and `PlainAug` are the `aug` config group's choices: each builds a (train,
eval) pair of presets.

Values stay in raw pixel units (0..255 minus the mean image, float32): the paper trains "on the
(centered) raw RGB values", and its N(0, 0.01) init and LRN constants assume that scale.

Randomness and DataLoader workers. Every random draw comes from albumentations' own generators
(`self.random_generator` / `self.py_random`), so `seed=...` (forwarded to `A.Compose`) makes a
preset's sequence of draws reproducible in one process. albumentations 2.0.8 does nothing about
worker processes: each worker inherits a copy of the same generator state, so with a plain
`A.Compose` all workers -- and, without persistent workers, all epochs -- repeat the same crops,
flips and lighting. The presets here fix that themselves: the first call inside a worker reseeds
their Compose from `(seed, torch.utils.data.get_worker_info().seed)`. That worker seed differs
per worker and per DataLoader iterator (each epoch, unless workers are persistent, in which case
each worker's generator simply carries on) and follows torch's global RNG, so
`lightning.seed_everything(s)` makes multi-worker augmentation reproducible. A bare `A.Compose`
used in a DataLoader needs the same by hand (`seed_everything(workers=True)`'s worker_init_fn
seeds numpy, `random` and torch, which albumentations does not use), e.g. in a `worker_init_fn`:
`compose.set_random_seed(torch.utils.data.get_worker_info().seed % 2**32)`.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

from alexnet.data.stats import (
    DatasetStats,
    lighting_offset,  # noqa: F401 (used below, and re-exported)
)

# --------------------------------------------------------------------------------------------
# The two transforms the paper adds to albumentations' crops and flips
# --------------------------------------------------------------------------------------------


class SubtractMeanImage(A.ImageOnlyTransform):
    """`image - mean_image` as float32: the paper's centring, on the full-size image.

    `mean_image` is (H, W, 3) in 0..255 units; an image of another shape raises ValueError (the
    statistics were computed for another image size).
    """

    def __init__(self, mean_image: np.ndarray, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.mean_image = np.asarray(mean_image, dtype=np.float32)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if img.shape != self.mean_image.shape:
            raise ValueError(
                f"image shape {img.shape} does not match the mean image shape "
                f"{self.mean_image.shape}: the dataset statistics were computed for another "
                f"image size; recompute them (alexnet.data.stats.compute_stats) for this one"
            )
        return np.subtract(img, self.mean_image, dtype=np.float32)


class PCALighting(A.ImageOnlyTransform):
    """The paper's PCA colour augmentation ("altering the intensities of the RGB channels").

    Adds `lighting_offset(alpha, eigval, eigvec, scale)` to every pixel, with alpha (3,) drawn
    from N(0, alpha_std) once per call, so one image gets one colour shift. The eigens are of the
    whole training set's RGB covariance (not per image, unlike `A.FancyPCA`), for [0, 1] pixels;
    `scale=255` matches images in 0..255 units. Output is float32, not clipped (inputs are
    mean-subtracted). Applied with probability `p=1` as in the paper.

    The draw happens in `get_params`, so the alpha a call used is in `self.params["alpha"]`
    (and in `A.Compose(..., save_applied_params=True)` results, and replayable through
    `A.ReplayCompose` or `apply(img, alpha=...)`).
    """

    def __init__(
        self,
        eigval: Sequence[float] | np.ndarray,
        eigvec: Sequence[Sequence[float]] | np.ndarray,
        alpha_std: float = 0.1,
        scale: float = 255.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.asarray(eigvec, dtype=np.float64)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(
                f"PCALighting needs eigval (3,) and eigvec (3, 3), got {self.eigval.shape} "
                f"and {self.eigvec.shape}"
            )
        if alpha_std < 0:
            raise ValueError(f"alpha_std={alpha_std} must be >= 0")
        self.alpha_std = float(alpha_std)
        self.scale = float(scale)

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.random_generator.normal(0.0, self.alpha_std, size=3)}

    def apply(self, img: np.ndarray, alpha: np.ndarray, **params: Any) -> np.ndarray:
        offset = lighting_offset(np.asarray(alpha), self.eigval, self.eigvec, self.scale)
        return img.astype(np.float32, copy=False) + offset.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Presets: image (uint8 HxWx3 RGB) in, network input (float32 CHW tensor) out
# --------------------------------------------------------------------------------------------


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) numpy -> contiguous float32 (C, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class Preset:
    """Shared by the presets: mean subtraction, then `steps`, then a CHW tensor.

    Checks up front that `crop` fits the (padded) image, and reseeds itself once per DataLoader
    worker (see the module docstring).
    """

    def __init__(
        self,
        stats: DatasetStats,
        steps: Sequence[A.BasicTransform] = (),
        *,
        crop: int | None = None,
        pad: int = 0,
        seed: int | None = None,
    ) -> None:
        if crop is not None and crop < 1:
            raise ValueError(f"crop={crop} must be a positive number of pixels")
        if pad < 0:
            raise ValueError(f"pad={pad} must be >= 0")
        self.stats, self.crop, self.pad, self.seed = stats, crop, pad, seed
        self.compose = A.Compose([SubtractMeanImage(stats.mean_image), *steps], seed=seed)
        self._worker_seed: int | None = None

    def __repr__(self) -> str:
        names = list(inspect.signature(type(self).__init__).parameters)[2:]  # after self, stats
        args = ", ".join(f"{k}={getattr(self, k, None)!r}" for k in names)
        return f"{type(self).__name__}({args})"

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        self._check_crop_fits(image)
        self._reseed_in_worker()
        return self._to_tensor(self.compose(image=image)["image"])

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        return to_chw_tensor(image)

    def _check_crop_fits(self, image: np.ndarray) -> None:
        if self.crop is None:
            return
        h, w = image.shape[0] + 2 * self.pad, image.shape[1] + 2 * self.pad
        if self.crop > h or self.crop > w:
            padded = f" after padding by {self.pad}" if self.pad else ""
            raise ValueError(
                f"crop={self.crop} is larger than the image ({h}x{w}{padded}); "
                f"lower aug.crop or use bigger images"
            )

    def reseed(self, seed: int) -> None:
        """Restart the random draws from `seed`. The training sampler passes one seed per batch
        (alexnet.data.order), which makes augmentation independent of the workers and exactly
        resumable; the per-worker reseed below then has nothing left to do."""
        info = get_worker_info()
        self._worker_seed = None if info is None else info.seed
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _reseed_in_worker(self) -> None:
        info = get_worker_info()
        if info is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        entropy = [info.seed] if self.seed is None else [self.seed, info.seed]
        self.compose.set_random_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))


def _flip_and_lighting(stats: DatasetStats, flip: bool, lighting: float) -> list:
    if lighting < 0:
        raise ValueError(f"lighting={lighting} is the std of the PCA coefficients; use >= 0")
    steps: list = [A.HorizontalFlip(p=0.5)] if flip else []
    if lighting > 0:
        steps.append(PCALighting(stats.eigval, stats.eigvec, alpha_std=lighting))
    return steps


class PaperTrain(Preset):
    """Mean image -> random `crop` x `crop` patch -> horizontal flip with p=0.5 (if `flip`) ->
    PCA lighting with alpha_std=`lighting` (if > 0) -> (3, crop, crop) tensor.

    Patch corners are uniform over all (256 - 224 + 1)^2 = 33^2 positions (albumentations'
    RandomCrop includes both ends; the paper counts 32^2).
    """

    def __init__(
        self,
        stats: DatasetStats,
        crop: int = 224,
        flip: bool = True,
        lighting: float = 0.1,
        seed: int | None = None,
    ) -> None:
        self.flip, self.lighting = flip, lighting
        steps = [A.RandomCrop(crop, crop), *_flip_and_lighting(stats, flip, lighting)]
        super().__init__(stats, steps, crop=crop, seed=seed)


class PaperEval(Preset):
    """Mean image -> centre `crop` x `crop` patch (top-left corner at ((H-crop)//2, (W-crop)//2))
    -> (3, crop, crop) tensor."""

    def __init__(self, stats: DatasetStats, crop: int = 224, seed: int | None = None) -> None:
        super().__init__(stats, [A.CenterCrop(crop, crop)], crop=crop, seed=seed)


class TenCrop(Preset):
    """Mean image -> the paper's ten test patches -> (10, 3, crop, crop) tensor.

    Fixed order: top-left, top-right, bottom-left, bottom-right, centre (as `PaperEval`), then the
    horizontal reflections of those five in the same order. The model averages the softmax.
    """

    def __init__(self, stats: DatasetStats, crop: int = 224, seed: int | None = None) -> None:
        super().__init__(stats, crop=crop, seed=seed)

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        c, (h, w) = self.crop, image.shape[:2]
        corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
        crops = [image[y : y + c, x : x + c] for y, x in corners]
        crops += [crop[:, ::-1] for crop in crops]
        batch = np.stack(crops).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


class CifarTrain(Preset):
    """Mean image -> zero padding by `pad` on each side (zero = the mean colour after the
    subtraction) -> random `crop` x `crop` patch -> flip with p=0.5 (if `flip`) -> PCA lighting
    with alpha_std=`lighting` (if > 0; off by default for CIFAR) -> (3, crop, crop) tensor."""

    def __init__(
        self,
        stats: DatasetStats,
        pad: int = 4,
        crop: int = 32,
        flip: bool = True,
        lighting: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.flip, self.lighting = flip, lighting
        steps: list = []
        if pad > 0:
            steps.append(A.Pad(padding=pad, fill=0, border_mode=cv2.BORDER_CONSTANT))
        steps += [A.RandomCrop(crop, crop), *_flip_and_lighting(stats, flip, lighting)]
        super().__init__(stats, steps, crop=crop, pad=pad, seed=seed)


class NoAug(Preset):
    """Mean image -> (optionally) the centre `crop` x `crop` patch -> tensor; nothing random.

    The eval transform for CIFAR and everything under `aug=none`. With `crop` set, an
    ImageNet run without augmentation trains on centre patches of the network's input size.
    """

    def __init__(
        self, stats: DatasetStats, crop: int | None = None, seed: int | None = None
    ) -> None:
        steps = [A.CenterCrop(crop, crop)] if crop is not None else []
        super().__init__(stats, steps, crop=crop, seed=seed)


# --------------------------------------------------------------------------------------------
# The `aug` config group: which presets a run trains and evaluates with
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """One choice of the `aug` group (conf/aug/*.yaml names a subclass as its `_target_`).

    Its fields are the group's keys, so Hydra and the constructor refuse an unknown key; `name`
    is the group choice that selects it (for messages). `presets` builds the (train, eval)
    pair for a dataset's statistics; `eval` picks the test-time preset, and validation always
    uses `centre_eval()` (many times cheaper; the plateau schedule only needs a ranking).
    """

    name: ClassVar[str] = ""
    eval_modes: ClassVar[tuple[str, ...]] = ("center",)
    eval: str = "center"

    def __post_init__(self) -> None:
        if self.eval not in self.eval_modes:
            raise ValueError(
                f"aug.eval={self.eval!r} is unknown for aug={self.name}; "
                f"choose {', '.join(self.eval_modes)}"
            )

    def presets(self, stats: DatasetStats, seed: int | None = None) -> tuple[Any, Any]:
        """(train, eval) presets; `seed` seeds the train preset's own generator."""
        raise NotImplementedError

    def centre_eval(self) -> Augmentation:
        return replace(self, eval="center")


@dataclass(frozen=True)
class PaperAug(Augmentation):
    """`aug=paper`: `PaperTrain`, and `PaperEval` (`eval: center`) or `TenCrop` (`ten_crop`)."""

    name: ClassVar[str] = "paper"
    eval_modes: ClassVar[tuple[str, ...]] = ("center", "ten_crop")
    crop: int = 224
    flip: bool = True
    lighting: float = 0.1

    def presets(self, stats: DatasetStats, seed: int | None = None) -> tuple[Preset, Preset]:
        train = PaperTrain(stats, self.crop, self.flip, self.lighting, seed=seed)
        evaluate = TenCrop if self.eval == "ten_crop" else PaperEval
        return train, evaluate(stats, crop=self.crop)


@dataclass(frozen=True)
class CifarAug(Augmentation):
    """`aug=cifar`: `CifarTrain`; the whole (mean-subtracted) image for evaluation."""

    name: ClassVar[str] = "cifar"
    pad: int = 4
    crop: int = 32
    flip: bool = True
    lighting: float = 0.0

    def presets(self, stats: DatasetStats, seed: int | None = None) -> tuple[Preset, Preset]:
        train = CifarTrain(stats, self.pad, self.crop, self.flip, self.lighting, seed=seed)
        return train, NoAug(stats)


@dataclass(frozen=True)
class PlainAug(Augmentation):
    """`aug=none`: the mean image subtracted, nothing random (`crop`: centre patches)."""

    name: ClassVar[str] = "none"
    crop: int | None = None

    def presets(self, stats: DatasetStats, seed: int | None = None) -> tuple[Preset, Preset]:
        return NoAug(stats, self.crop, seed=seed), NoAug(stats, self.crop)
