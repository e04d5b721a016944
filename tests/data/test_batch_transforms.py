"""The batched tensor transforms equal the albumentations presets for the same random draws.

albumentations records what each transform drew (`save_applied_params`): RandomCrop's corner,
whether HorizontalFlip ran, PCALighting's alpha. Those draws are handed to `BatchTrain.apply`,
and the tensors must be equal to the last bit.
"""

import numpy as np
import pytest
import torch

from alexnet.data.augment.batched import (
    BatchEval,
    BatchTrain,
    Draws,
    batch_transform_of,
)
from alexnet.data.augment.presets import (
    CifarTrain,
    NoAug,
    PaperAug,
    PaperEval,
    PaperTrain,
    TenCrop,
    to_chw_tensor,
)
from alexnet.data.stats import compute_stats


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _reference_with_draws(preset, images):
    """Run the albumentations preset image by image; return its outputs and its draws."""
    preset.compose.save_applied_params = True
    outs, tops, lefts, flips, alphas = [], [], [], [], []
    for image in images:
        result = preset.compose(image=image)
        applied = dict(result["applied_transforms"])
        x_min, y_min, _, _ = applied["RandomCrop"]["crop_coords"]
        tops.append(y_min)
        lefts.append(x_min)
        flips.append("HorizontalFlip" in applied)
        alphas.append(applied["PCALighting"]["alpha"] if "PCALighting" in applied else None)
        outs.append(to_chw_tensor(result["image"]))
    alpha = None if alphas[0] is None else torch.tensor(np.stack(alphas))
    draws = Draws(torch.tensor(tops), torch.tensor(lefts), torch.tensor(flips), alpha)
    return torch.stack(outs), draws


@pytest.mark.parametrize("lighting", [0.0, 0.1])
def test_cifar_batch_equals_albumentations_for_same_draws(lighting):
    images = _images(48, 32)
    stats = compute_stats(images)
    preset = CifarTrain(stats, pad=4, crop=32, flip=True, lighting=lighting, seed=7)
    want, draws = _reference_with_draws(preset, images)
    assert draws.flip.any() and not draws.flip.all()
    got = batch_transform_of(preset).apply(torch.from_numpy(images), draws)
    assert got.shape == (48, 3, 32, 32) and got.dtype == torch.float32
    assert torch.equal(got, want)


def test_paper_batch_equals_albumentations_for_same_draws():
    images = _images(24, 40, seed=1)
    stats = compute_stats(images)
    preset = PaperTrain(stats, crop=32, flip=True, lighting=0.1, seed=3)
    want, draws = _reference_with_draws(preset, images)
    batch = batch_transform_of(preset)
    assert isinstance(batch, BatchTrain) and batch.pad == 0 and batch.lighting == 0.1
    assert torch.equal(batch.apply(torch.from_numpy(images), draws), want)
    # a (N, 3, H, W) batch, as torchvision's decoder gives, passed as a permuted view
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(batch.apply(nchw.permute(0, 2, 3, 1), draws), want)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: PaperEval(s, crop=32),
        lambda s: TenCrop(s, crop=32),
        lambda s: NoAug(s),
        lambda s: NoAug(s, crop=30),
    ],
    ids=["center", "ten_crop", "full", "none_crop"],
)
def test_eval_batch_equals_presets(make):
    images = _images(5, 40, seed=2)
    stats = compute_stats(images)
    preset = make(stats)
    want = torch.stack([preset(image) for image in images])
    got = batch_transform_of(preset)(torch.from_numpy(images))
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_draws_cover_every_corner_and_follow_the_generator():
    stats = compute_stats(_images(4, 32))
    batch = BatchTrain(stats, crop=32, pad=4, flip=True, lighting=0.1)
    draws = batch.draw(4000, torch.Generator().manual_seed(0), "cpu")
    assert draws.top.min() == 0 and draws.top.max() == 8  # both ends, as A.RandomCrop
    assert set(draws.left.tolist()) == set(range(9))
    assert 0.45 < draws.flip.float().mean() < 0.55
    assert draws.alpha.shape == (4000, 3) and abs(draws.alpha.std().item() - 0.1) < 0.005
    images = torch.from_numpy(_images(6, 32))
    first = batch(images, torch.Generator().manual_seed(5))
    again = batch(images, torch.Generator().manual_seed(5))
    other = batch(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_no_flip_no_lighting_draws_nothing_random_there():
    stats = compute_stats(_images(4, 32))
    draws = BatchTrain(stats, crop=28, flip=False).draw(50, None, "cpu")
    assert not draws.flip.any() and draws.alpha is None


def test_batched_twins_follow_the_aug_config():
    stats = compute_stats(_images(4, 40))
    aug = PaperAug(crop=32, flip=False, lighting=0.05, eval="ten_crop")
    train, test = (batch_transform_of(p) for p in aug.presets(stats))
    assert (train.crop, train.flip, train.lighting) == (32, False, 0.05)
    assert (test.mode, test.crop) == ("ten_crop", 32)


def test_wrong_image_size_is_a_clear_error():
    batch = BatchEval(compute_stats(_images(2, 32)), mode="full")
    with pytest.raises(ValueError, match="mean image"):
        batch(torch.zeros(2, 40, 40, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        batch(torch.zeros(2, 32, 32, 3))
