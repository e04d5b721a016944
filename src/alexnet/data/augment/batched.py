"""Section 4.1's preprocessing and augmentation on whole batches, on any device (the GPU paths).

The albumentations presets of `alexnet.data.augment.presets` stay the reference: one image at a time
on CPU worker processes. Here the same steps run on a batch of uint8 images where the batch already
is (the GPU during training, the CPU in tests), as a few tensor ops and no Python loop per image:

1. the mean image is subtracted (full size, before any crop);
2. each image gets its own crop corner (after zero padding, for CIFAR) and, with p=0.5, its
   horizontal reflection -- both done by one gather that reads each output pixel straight from
   the uint8 source;
3. PCA lighting adds `lighting_offset(alpha, eigval, eigvec)` with one alpha (3,) per image.

Each training transform separates drawing its random numbers (`draw`, from a `torch.Generator` on
the batch's device) from applying them (`apply`), so the tests hand `apply` the draws that
albumentations made and compare the tensors: for the same crop corners, flips and alphas the
outputs are equal to the last bit (same float32 subtraction and addition, offsets computed in
float64 as `PCALighting` does).

Images come in as uint8 (N, H, W, 3) -- any strides, so a (N, 3, H, W) batch can be passed as
`batch.permute(0, 2, 3, 1)` without a copy. Outputs are float32 (N, 3, crop, crop) laid out
channels_last (the gather writes pixel by pixel), which is the layout the fast models want; call
`.contiguous()` for NCHW. Ten-crop evaluation returns (N, 10, 3, crop, crop).

`batch_transform_of(preset)` builds the batched twin of a reference preset, so both paths take
their parameters (and their config errors) from the same `aug` config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alexnet.data.augment.presets import (
    CifarTrain,
    NoAug,
    PaperEval,
    PaperTrain,
    Preset,
    TenCrop,
)
from alexnet.data.stats import DatasetStats, lighting_offset


@dataclass
class Draws:
    """The random numbers of one batch: crop corners in the padded image, flips, lighting."""

    top: torch.Tensor  # (N,) int64 row of the crop's top-left corner
    left: torch.Tensor  # (N,) int64 column of that corner
    flip: torch.Tensor  # (N,) bool, mirror left-right
    alpha: torch.Tensor | None  # (N, 3) float64 PCA coefficients, None without lighting


class _Stats:
    """The statistics as tensors, cached per device (moved there once, not per batch)."""

    def __init__(self, stats: DatasetStats) -> None:
        self.stats = stats
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean_image (H, W, 3) float32, eigval (3,) float64, eigvec (3, 3) float64)."""
        device = torch.device(device)
        if device not in self._cache:
            s = self.stats
            self._cache[device] = (
                torch.as_tensor(s.mean_image, dtype=torch.float32, device=device),
                torch.as_tensor(s.eigval, dtype=torch.float64, device=device),
                torch.as_tensor(s.eigvec, dtype=torch.float64, device=device),
            )
        return self._cache[device]


def crop_flip_centre(
    images: torch.Tensor,
    mean_image: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    crop: int,
    pad: int = 0,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """`(image - mean_image)`, zero-padded by `pad`, cropped at (top, left), mirrored where `flip`.

    images uint8 (N, H, W, 3), mean_image float32 (H, W, 3), top/left/flip (M,), one patch each;
    patch m is cut from image `source[m]` (default: image m, so M = N). Returns float32
    (M, crop, crop, 3). One gather: output pixel (i, j) of patch m reads source row
    `top + i - pad` and column `left + j - pad` (or `left + crop - 1 - j - pad` when mirrored);
    positions in the padding read 0, the mean colour after centring, as `A.Pad(fill=0)` gives.
    """
    _, h, w, _ = images.shape
    steps = torch.arange(crop, device=images.device)
    rows = top[:, None] + steps - pad  # (N, crop)
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - steps, steps) - pad
    inside = None
    if pad:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    r, c = rows[:, :, None], cols[:, None, :]
    if source is None:
        source = torch.arange(len(top), device=images.device)
    out = images[source[:, None, None], r, c].float() - mean_image[r, c]
    if inside is not None:
        out = torch.where(inside[..., None], out, 0.0)
    return out


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    # (..., H, W, 3) -> (..., 3, H, W) as a view: channels_last memory, no copy.
    return x.movedim(-1, -3)


def _check_batch(images: torch.Tensor, mean_image: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"batch transforms take uint8 (N, H, W, 3) images, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if images.shape[1:] != mean_image.shape:
        raise ValueError(
            f"image size {tuple(images.shape[1:])} does not match the mean image "
            f"{tuple(mean_image.shape)}: the dataset statistics were computed for another size"
        )


class BatchTrain:
    """`PaperTrain` (pad=0) and `CifarTrain` on batches: centre, pad, crop, flip, lighting."""

    def __init__(
        self,
        stats: DatasetStats,
        crop: int,
        pad: int = 0,
        flip: bool = True,
        lighting: float = 0.0,
    ) -> None:
        self.crop, self.pad, self.flip, self.lighting = crop, pad, flip, lighting
        self._stats = _Stats(stats)
        h, w = stats.image_size
        if crop > h + 2 * pad or crop > w + 2 * pad:
            raise ValueError(f"crop={crop} is larger than the image ({h + 2 * pad}x{w + 2 * pad})")

    def __repr__(self) -> str:
        return (
            f"BatchTrain(crop={self.crop}, pad={self.pad}, flip={self.flip}, "
            f"lighting={self.lighting})"
        )

    def draw(self, n: int, generator: torch.Generator | None, device) -> Draws:
        """Crop corners uniform over every position (both ends included, as `A.RandomCrop`),
        flips with p=0.5, alphas ~ N(0, lighting)."""
        h, w = self._stats.stats.image_size
        kw = {"generator": generator, "device": device}
        top = torch.randint(0, h + 2 * self.pad - self.crop + 1, (n,), **kw)
        left = torch.randint(0, w + 2 * self.pad - self.crop + 1, (n,), **kw)
        if self.flip:
            flip = torch.rand(n, **kw) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        alpha = None
        if self.lighting > 0:
            alpha = torch.randn(n, 3, dtype=torch.float64, **kw) * self.lighting
        return Draws(top, left, flip, alpha)

    def apply(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        """float32 (N, 3, crop, crop), channels_last memory, for uint8 (N, H, W, 3) images."""
        mean_image, eigval, eigvec = self._stats.on(images.device)
        _check_batch(images, mean_image)
        out = crop_flip_centre(
            images, mean_image, draws.top, draws.left, draws.flip, self.crop, self.pad
        )
        if draws.alpha is not None:
            offset = lighting_offset(draws.alpha.to(torch.float64), eigval, eigvec)
            out = out + offset.float()[:, None, None, :]
        return _to_nchw(out)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        return self.apply(images, self.draw(len(images), generator, images.device))


# The ten test patches of `TenCrop`, in its order: four corners and the centre, then mirrored.
def _ten_crop_corners(h: int, w: int, c: int) -> list[tuple[int, int, bool]]:
    corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    return [(y, x, False) for y, x in corners] + [(y, x, True) for y, x in corners]


class BatchEval:
    """The deterministic presets on batches: `mode` "full" (`NoAug`, whole image), "center"
    (`PaperEval`, or `NoAug` with a crop) or "ten_crop" (`TenCrop`: (N, 10, 3, crop, crop))."""

    MODES = ("full", "center", "ten_crop")

    def __init__(self, stats: DatasetStats, crop: int | None = None, mode: str = "center"):
        if mode not in self.MODES:
            raise ValueError(f"BatchEval mode={mode!r} is unknown; choose one of {self.MODES}")
        h, w = stats.image_size
        if mode == "full":
            crop = None
        elif crop is None or crop > min(h, w):
            raise ValueError(f"crop={crop} must be given and fit the {h}x{w} images")
        self.crop, self.mode = crop, mode
        self._stats = _Stats(stats)
        self._fixed: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __repr__(self) -> str:
        return f"BatchEval(crop={self.crop}, mode={self.mode!r})"

    def _patches(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(top, left, flip) of the patches every image gets, one entry per patch."""
        if device not in self._fixed:
            h, w = self._stats.stats.image_size
            if self.mode == "ten_crop":
                patches = _ten_crop_corners(h, w, self.crop)
            elif self.mode == "center":
                patches = [((h - self.crop) // 2, (w - self.crop) // 2, False)]
            else:
                patches = [(0, 0, False)]
            top, left, flip = zip(*patches, strict=True)
            self._fixed[device] = (
                torch.tensor(top, device=device),
                torch.tensor(left, device=device),
                torch.tensor(flip, device=device),
            )
        return self._fixed[device]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        mean_image, _, _ = self._stats.on(images.device)
        _check_batch(images, mean_image)
        n = len(images)
        if self.mode == "full":
            return _to_nchw(images.float() - mean_image)
        top, left, flip = self._patches(images.device)
        k = len(top)
        # Image i's patches are rows i*k .. i*k + k - 1 of the output.
        source = torch.arange(n, device=images.device).repeat_interleave(k)
        out = crop_flip_centre(
            images,
            mean_image,
            top.repeat(n),
            left.repeat(n),
            flip.repeat(n),
            self.crop,
            source=source,
        )
        out = _to_nchw(out)
        return out.unflatten(0, (n, k)) if self.mode == "ten_crop" else out


BatchTransform = BatchTrain | BatchEval


def batch_transform_of(preset: Preset) -> BatchTransform:
    """The batched twin of a reference preset (same statistics, crop, pad, flip, lighting)."""
    if isinstance(preset, (PaperTrain, CifarTrain)):
        return BatchTrain(
            preset.stats,
            crop=preset.crop,
            pad=preset.pad,
            flip=preset.flip,
            lighting=preset.lighting,
        )
    if isinstance(preset, TenCrop):
        return BatchEval(preset.stats, preset.crop, "ten_crop")
    if isinstance(preset, PaperEval):
        return BatchEval(preset.stats, preset.crop, "center")
    if isinstance(preset, NoAug):
        mode = "full" if preset.crop is None else "center"
        return BatchEval(preset.stats, preset.crop, mode)
    raise TypeError(f"no batched version of {type(preset).__name__}")


__all__ = [
    "BatchEval",
    "BatchTrain",
    "BatchTransform",
    "Draws",
    "batch_transform_of",
    "crop_flip_centre",
]
