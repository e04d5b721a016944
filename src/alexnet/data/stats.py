"""Training-set statistics that section 4.1 of the paper needs: the mean image and RGB eigens.

The paper centres every input by subtracting "the mean activity over the training set from each
pixel" (a full-size mean image, 256x256x3 for ImageNet), and its PCA lighting perturbs colours
along the principal components of "the set of RGB pixel values throughout the ImageNet training
set". Both are computed here in one streaming pass, so the same code serves CIFAR-10 (50,000
32x32 images in memory) and ImageNet (1.28M images read batch by batch).

Units, chosen so that published constants apply unchanged:

- `mean_image` is float32 in 0..255 pixel units (the network sees raw pixel values minus it);
- `eigval` / `eigvec` are of the RGB covariance of pixels scaled to [0, 1], the convention of the
  widely used ImageNet constants from fb.resnet.torch (`IMAGENET_EIGVAL`, `IMAGENET_EIGVEC`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Published ImageNet per-channel RGB mean for pixels in [0, 1] (torchvision / fb.resnet.torch).
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406])
# Published ImageNet RGB eigens for pixels in [0, 1] (fb.resnet.torch); columns are eigenvectors.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)

# Pixels converted to float64 at once while streaming: bounds the temporary memory (~24 MiB).
_CHUNK_PIXELS = 1 << 20


@dataclass(eq=False)
class DatasetStats:
    """Mean image and RGB eigen-decomposition of a training set.

    Attributes:
        mean_image: float32 (H, W, 3), per-pixel mean in 0..255 units.
        eigval: float64 (3,), eigenvalues of the RGB covariance of [0, 1] pixels, descending.
        eigvec: float64 (3, 3), column `i` is the unit eigenvector of `eigval[i]`.
        count: number of images the statistics were computed from (0 for published constants).
    """

    mean_image: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray
    count: int

    def __post_init__(self) -> None:
        self.mean_image = np.asarray(self.mean_image, dtype=np.float32)
        self.eigval = np.asarray(self.eigval, dtype=np.float64)
        self.eigvec = np.asarray(self.eigvec, dtype=np.float64)
        self.count = int(self.count)
        if self.mean_image.ndim != 3 or self.mean_image.shape[2] != 3:
            raise ValueError(f"mean_image must be (H, W, 3), got {self.mean_image.shape}")
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(
                f"eigval must be (3,) and eigvec (3, 3), got {self.eigval.shape} "
                f"and {self.eigvec.shape}"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images these statistics belong to."""
        return self.mean_image.shape[0], self.mean_image.shape[1]

    def __repr__(self) -> str:
        mean_rgb = self.mean_image.mean(axis=(0, 1), dtype=np.float64)
        return (
            f"DatasetStats(image_size={self.image_size}, count={self.count}, "
            f"mean_rgb={np.round(mean_rgb, 2).tolist()}, "
            f"eigval={np.round(self.eigval, 5).tolist()})"
        )

    def save(self, path: str | Path) -> None:
        """Write an .npz at exactly `path` (parent folders created); no pickled objects."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object, so numpy does not append ".npz"
            np.savez(
                f,
                mean_image=self.mean_image,
                eigval=self.eigval,
                eigvec=self.eigvec,
                count=np.int64(self.count),
            )

    @classmethod
    def load(cls, path: str | Path) -> DatasetStats:
        """Read what `save` wrote."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(z["mean_image"], z["eigval"], z["eigvec"], int(z["count"]))


def imagenet_default_stats(size: int = 256) -> DatasetStats:
    """ImageNet's published statistics, for when no computed mean image is cached.

    The mean image is the published per-channel mean colour (0.485, 0.456, 0.406) * 255 repeated
    over a `size` x `size` image -- a flat stand-in for the paper's per-pixel mean image -- and the
    eigens are the published `IMAGENET_EIGVAL` / `IMAGENET_EIGVEC`. `count` is 0.
    """
    mean = np.broadcast_to(IMAGENET_MEAN_RGB * 255.0, (size, size, 3))
    return DatasetStats(mean.copy(), IMAGENET_EIGVAL.copy(), IMAGENET_EIGVEC.copy(), count=0)


class _RunningSums:
    """Float64 sums over images: per-pixel values, and RGB values and outer products of [0, 255]
    pixels. Products of uint8 values are integers below 2**16, so these sums stay exact in
    float64 up to ~1.4e11 pixels (ImageNet's 1.28M 256x256 images are 8.4e10)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.images = 0
        self.pixel_sum = np.zeros(shape, dtype=np.float64)
        self.rgb_sum = np.zeros(3, dtype=np.float64)
        self.rgb_outer = np.zeros((3, 3), dtype=np.float64)

    def add(self, batch: np.ndarray) -> None:
        """Add an (N, H, W, 3) uint8 batch, a bounded number of pixels at a time."""
        if batch.shape[1:] != self.shape:
            raise ValueError(
                f"compute_stats needs images of one size: got {batch.shape[1:]} after "
                f"{self.shape}; resize/crop them first (ImageNet: shorter side 256, centre crop)"
            )
        step = max(1, _CHUNK_PIXELS // (self.shape[0] * self.shape[1]))
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            self.pixel_sum += chunk.sum(axis=0, dtype=np.float64)
            pixels = chunk.reshape(-1, 3).astype(np.float64)
            self.rgb_sum += pixels.sum(axis=0)
            self.rgb_outer += pixels.T @ pixels
        self.images += len(batch)

    def finish(self) -> DatasetStats:
        n_pixels = self.images * self.shape[0] * self.shape[1]
        mean_rgb = self.rgb_sum / n_pixels
        cov = (self.rgb_outer / n_pixels - np.outer(mean_rgb, mean_rgb)) / 255.0**2
        eigval, eigvec = principal_components(cov)
        mean_image = (self.pixel_sum / self.images).astype(np.float32)
        return DatasetStats(mean_image, eigval, eigvec, count=self.images)


def principal_components(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, tiny negative round-off clipped to 0) and unit eigenvectors
    (columns) of a symmetric 3x3 covariance.

    An eigenvector's sign is arbitrary; we fix it so that its largest-magnitude component is
    negative, which makes the first (brightness) eigenvector all-negative as in the published
    ImageNet constants. Under this rule the published second column would be negated; the sign
    has no effect on PCA lighting, whose coefficients are symmetric about 0.
    """
    eigval, eigvec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    largest = eigvec[np.argmax(np.abs(eigvec), axis=0), np.arange(3)]
    eigvec = eigvec * np.where(largest > 0, -1.0, 1.0)
    return eigval, eigvec


def compute_stats(images: np.ndarray | Iterable[np.ndarray]) -> DatasetStats:
    """Mean image and RGB eigens of a training set, in one streaming pass.

    `images` is one uint8 (H, W, 3) image, an (N, H, W, 3) uint8 array, or an iterable whose
    items are (H, W, 3) images or (N, H, W, 3) batches (e.g. a DataLoader yielding uint8 arrays
    or CPU tensors), all of one size. Memory is O(H * W * 3) beyond one batch.

    The mean image is the per-pixel mean (0..255 units). The covariance is over all pixels of all
    images around the global mean colour, with pixels scaled to [0, 1]; see `principal_components`
    for the order and sign of the eigenvectors.

    Raises ValueError for no images, a non-uint8 input (guards against [0, 1] floats, which would
    silently give statistics in the wrong units) or images of different sizes.
    """
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        images = [images]
    sums: _RunningSums | None = None
    for item in images:
        batch = np.asarray(item)
        if batch.dtype != np.uint8:
            raise ValueError(f"compute_stats expects uint8 images in 0..255, got {batch.dtype}")
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(
                f"compute_stats expects (H, W, 3) images or (N, H, W, 3) batches, got {batch.shape}"
            )
        if sums is None:
            sums = _RunningSums(batch.shape[1:])
        sums.add(batch)
    if sums is None or sums.images == 0:
        raise ValueError("compute_stats got no images")
    return sums.finish()


def lighting_offset(alpha, eigval, eigvec, scale: float = 255.0):
    """The colour the paper adds to every pixel: `scale * eigvec @ (alpha * eigval)`.

    `alpha` is (3,) or a batch (N, 3); `eigval` (3,); `eigvec` (3, 3) with eigenvectors as
    columns. Returns (3,) or (N, 3) in the type of the inputs (numpy arrays or torch tensors,
    all of one kind), so a batched GPU implementation can reuse it and be checked against
    `PCALighting` with the same alphas. `scale=255` converts the [0, 1]-pixel eigens to 0..255.
    """
    return scale * (alpha * eigval) @ eigvec.T
