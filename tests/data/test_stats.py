"""Dataset statistics: mean image and RGB eigens, streamed; save/load; ImageNet defaults."""

from __future__ import annotations

import numpy as np
import pytest

from alexnet.data import stats as stats_module
from alexnet.data.stats import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    DatasetStats,
    compute_stats,
    imagenet_default_stats,
    principal_components,
)

# A known RGB covariance in 0..255 units: orthonormal axes Q, standard deviations 30, 10, 4.
_Q, _ = np.linalg.qr(np.array([[1.0, 0.3, 0.2], [1.0, -0.5, 0.1], [1.0, 0.2, -0.7]]))
_STD = np.array([30.0, 10.0, 4.0])
_MEAN_RGB = np.array([120.0, 110.0, 100.0])


def synthetic_images(n: int = 200, size: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3) images whose pixels are mean + Q diag(std) z, z ~ N(0, I)."""
    z = np.random.default_rng(seed).standard_normal((n, size, size, 3))
    pixels = _MEAN_RGB + (z * _STD) @ _Q.T
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def assert_same_stats(a: DatasetStats, b: DatasetStats) -> None:
    assert a.count == b.count
    np.testing.assert_allclose(a.mean_image, b.mean_image, rtol=1e-6)
    np.testing.assert_allclose(a.eigval, b.eigval, rtol=1e-9)
    np.testing.assert_allclose(a.eigvec, b.eigvec, atol=1e-9)


def test_mean_image_and_covariance_match_direct_numpy():
    images = synthetic_images()
    s = compute_stats(images)
    assert s.count == len(images)
    assert s.mean_image.dtype == np.float32 and s.mean_image.shape == (8, 8, 3)
    np.testing.assert_allclose(s.mean_image, images.mean(axis=0), rtol=1e-6)
    cov = np.cov(images.reshape(-1, 3).T / 255.0, bias=True)
    np.testing.assert_allclose(s.eigvec @ np.diag(s.eigval) @ s.eigvec.T, cov, atol=1e-12)


def test_recovers_known_eigens():
    s = compute_stats(synthetic_images())
    # Rounding to uint8 adds uniform noise of variance 1/12 to every channel.
    expected = (_STD**2 + 1 / 12) / 255.0**2
    n = 200 * 8 * 8
    np.testing.assert_allclose(s.eigval, expected, rtol=5 * np.sqrt(2 / n))
    # Same axes up to sign; well separated eigenvalues keep the axes within a few degrees.
    assert np.all(np.abs(np.sum(s.eigvec * _Q, axis=0)) > 0.995)


def test_eigvec_orthonormal_sorted_and_sign_convention():
    s = compute_stats(synthetic_images())
    np.testing.assert_allclose(s.eigvec.T @ s.eigvec, np.eye(3), atol=1e-12)
    assert np.all(np.diff(s.eigval) < 0) and np.all(s.eigval >= 0)
    largest = s.eigvec[np.argmax(np.abs(s.eigvec), axis=0), np.arange(3)]
    assert np.all(largest < 0)


def test_principal_components_of_imagenet_covariance():
    cov = IMAGENET_EIGVEC @ np.diag(IMAGENET_EIGVAL) @ IMAGENET_EIGVEC.T
    eigval, eigvec = principal_components(cov)
    np.testing.assert_allclose(eigval, IMAGENET_EIGVAL, atol=2e-4)
    # The published first and third columns already follow the convention; the second is
    # negated by it (the sign is arbitrary and irrelevant to PCA lighting).
    np.testing.assert_allclose(eigvec * [1, -1, 1], IMAGENET_EIGVEC, atol=2e-3)


def test_streaming_over_images_and_batches_equals_one_shot(monkeypatch):
    images = synthetic_images(n=37)
    one_shot = compute_stats(images)
    assert_same_stats(compute_stats(list(images)), one_shot)
    assert_same_stats(compute_stats(iter([images[:5], images[5:6], images[6:]])), one_shot)
    assert_same_stats(compute_stats(img for img in images), one_shot)
    # Chunks of 2 images inside each batch.
    monkeypatch.setattr(stats_module, "_CHUNK_PIXELS", 2 * 8 * 8)
    assert_same_stats(compute_stats(images), one_shot)


def test_single_image_is_a_dataset_of_one():
    image = synthetic_images(n=1)[0]
    s = compute_stats(image)
    assert s.count == 1
    np.testing.assert_array_equal(s.mean_image, image.astype(np.float32))


def test_errors():
    with pytest.raises(ValueError, match="no images"):
        compute_stats([])
    with pytest.raises(ValueError, match="uint8"):
        compute_stats(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="one size"):
        compute_stats([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        compute_stats([np.zeros((4, 4), np.uint8)])


def test_save_load_round_trip(tmp_path):
    s = compute_stats(synthetic_images(n=10))
    path = tmp_path / "nested" / "stats.npz"
    s.save(path)
    assert path.exists()
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"mean_image", "eigval", "eigvec", "count"}
    assert_same_stats(DatasetStats.load(path), s)
    # No ".npz" appended to a path without it.
    s.save(tmp_path / "stats.bin")
    assert_same_stats(DatasetStats.load(tmp_path / "stats.bin"), s)


def test_imagenet_defaults():
    s = imagenet_default_stats()
    assert s.mean_image.shape == (256, 256, 3) and s.mean_image.dtype == np.float32
    assert s.image_size == (256, 256) and s.count == 0
    np.testing.assert_allclose(s.mean_image[17, 200], [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_array_equal(s.eigval, IMAGENET_EIGVAL)
    np.testing.assert_array_equal(s.eigvec, IMAGENET_EIGVEC)
    assert imagenet_default_stats(size=64).mean_image.shape == (64, 64, 3)
    # The published eigenvectors are orthonormal to the printed precision.
    np.testing.assert_allclose(IMAGENET_EIGVEC.T @ IMAGENET_EIGVEC, np.eye(3), atol=1e-3)


def test_stats_validates_shapes():
    with pytest.raises(ValueError, match="mean_image"):
        DatasetStats(np.zeros((4, 4)), IMAGENET_EIGVAL, IMAGENET_EIGVEC, 1)
    with pytest.raises(ValueError, match="eigvec"):
        DatasetStats(np.zeros((4, 4, 3)), IMAGENET_EIGVAL, np.eye(2), 1)
