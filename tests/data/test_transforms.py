"""Section 4.1 augmentation: crops, flips, ten-crop, mean subtraction, PCA lighting, seeding."""

from __future__ import annotations

import albumentations as A
import hydra
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet.data.augment.presets import (
    Augmentation,
    CifarAug,
    CifarTrain,
    NoAug,
    PaperAug,
    PaperEval,
    PaperTrain,
    PCALighting,
    PlainAug,
    TenCrop,
    lighting_offset,
)
from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, DatasetStats


def zero_mean_stats(h: int, w: int | None = None) -> DatasetStats:
    """Statistics whose mean image is 0, so pixel values pass through unchanged."""
    return DatasetStats(np.zeros((h, w or h, 3)), IMAGENET_EIGVAL, IMAGENET_EIGVEC, count=1)


def coord_image(h: int, w: int | None = None) -> np.ndarray:
    """uint8 image whose R channel is the row and G channel the column of each pixel."""
    rows, cols = np.indices((h, w or h))
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def origin(out: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, flipped) of a (3, c, c) crop of a `coord_image`, checking it is one piece."""
    r, g = out[0].numpy(), out[1].numpy()
    c = r.shape[0]
    flipped = bool(g[0, 0] > g[0, -1])
    top, left = int(r[0, 0]), int(g[0, -1] if flipped else g[0, 0])
    np.testing.assert_array_equal(r, top + np.arange(c)[:, None] + 0 * g)
    cols = left + np.arange(c)
    np.testing.assert_array_equal(g, np.broadcast_to(cols[::-1] if flipped else cols, (c, c)))
    return top, left, flipped


# -- mean subtraction ------------------------------------------------------------------------


def test_mean_subtraction_is_exact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)
    out = NoAug(DatasetStats(mean, IMAGENET_EIGVAL, IMAGENET_EIGVEC, 1))(image)
    assert out.dtype == torch.float32 and out.shape == (3, 6, 5) and out.is_contiguous()
    expected = image.astype(np.float32) - mean
    np.testing.assert_array_equal(out.numpy(), expected.transpose(2, 0, 1))


def test_mean_image_of_another_size_is_an_error():
    with pytest.raises(ValueError, match=r"\(10, 10, 3\).*\(8, 8, 3\).*another image size"):
        NoAug(zero_mean_stats(8))(coord_image(10))


# -- crops and flips -------------------------------------------------------------------------


def test_random_crop_stays_inside_and_covers_every_position():
    t = PaperTrain(zero_mean_stats(40), crop=32, flip=False, lighting=0.0, seed=0)
    seen = {origin(t(coord_image(40)))[:2] for _ in range(400)}
    assert {top for top, _ in seen} == set(range(9))  # 40 - 32 + 1 positions, both ends
    assert {left for _, left in seen} == set(range(9))


def test_paper_crop_on_full_size_image():
    out = PaperTrain(zero_mean_stats(256), lighting=0.0, seed=0)(coord_image(256))
    assert out.shape == (3, 224, 224)
    top, left, _ = origin(out)
    assert 0 <= top <= 32 and 0 <= left <= 32


def test_flip_mirrors_exactly_about_half_the_time():
    t = PaperTrain(zero_mean_stats(40), crop=32, flip=True, lighting=0.0, seed=1)
    flips = [origin(t(coord_image(40)))[2] for _ in range(300)]  # origin checks the mirroring
    assert 0.4 < np.mean(flips) < 0.6
    t = PaperTrain(zero_mean_stats(40), crop=32, flip=False, lighting=0.0, seed=1)
    assert not any(origin(t(coord_image(40)))[2] for _ in range(50))


@pytest.mark.parametrize(
    ("h", "w", "crop", "top", "left"),
    [(256, 256, 224, 16, 16), (41, 40, 32, 4, 4), (32, 32, 32, 0, 0)],
)
def test_centre_crop_offsets(h, w, crop, top, left):
    out = PaperEval(zero_mean_stats(h, w), crop=crop)(coord_image(h, w))
    assert out.shape == (3, crop, crop)
    assert origin(out) == (top, left, False)


def test_ten_crop_geometry():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (12, 15, 3)).astype(np.float32)
    out = TenCrop(DatasetStats(mean, IMAGENET_EIGVAL, IMAGENET_EIGVEC, 1), crop=8)(image)
    assert out.shape == (10, 3, 8, 8) and out.dtype == torch.float32
    centred = (image.astype(np.float32) - mean).transpose(2, 0, 1)
    corners = [(0, 0), (0, 7), (4, 0), (4, 7), (2, 3)]  # tl, tr, bl, br, centre
    for i, (y, x) in enumerate(corners):
        patch = centred[:, y : y + 8, x : x + 8]
        np.testing.assert_array_equal(out[i].numpy(), patch)
        np.testing.assert_array_equal(out[i + 5].numpy(), patch[:, :, ::-1])


def test_ten_crop_centre_equals_paper_eval():
    stats, image = zero_mean_stats(256), coord_image(256)
    torch.testing.assert_close(TenCrop(stats)(image)[4], PaperEval(stats)(image))


def test_cifar_pads_with_the_mean_colour_then_crops():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    stats = DatasetStats(mean, IMAGENET_EIGVAL, IMAGENET_EIGVEC, 1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.zeros((40, 40, 3), np.float32)
    padded[4:36, 4:36] = image - mean
    t = CifarTrain(stats, pad=4, crop=32, flip=False, seed=0)
    found = set()
    for _ in range(300):
        out = t(image).numpy().transpose(1, 2, 0)
        matches = [
            (y, x)
            for y in range(9)
            for x in range(9)
            if np.array_equal(out, padded[y : y + 32, x : x + 32])
        ]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 60  # of 81 padded positions


# -- PCA lighting ----------------------------------------------------------------------------


def test_lighting_offset_numpy_batched_and_torch_agree():
    rng = np.random.default_rng(0)
    alpha = rng.normal(0, 0.1, (5, 3))
    batched = lighting_offset(alpha, IMAGENET_EIGVAL, IMAGENET_EIGVEC, 255.0)
    for a, row in zip(alpha, batched, strict=True):
        np.testing.assert_allclose(row, 255.0 * IMAGENET_EIGVEC @ (a * IMAGENET_EIGVAL))
    as_torch = lighting_offset(
        torch.from_numpy(alpha),
        torch.from_numpy(IMAGENET_EIGVAL),
        torch.from_numpy(IMAGENET_EIGVEC),
        255.0,
    )
    np.testing.assert_allclose(as_torch.numpy(), batched)


def test_lighting_offset_statistics():
    n, std = 4000, 0.1
    t = A.Compose([PCALighting(IMAGENET_EIGVAL, IMAGENET_EIGVEC, alpha_std=std)], seed=0)
    image = np.zeros((4, 4, 3), np.float32)
    outs = np.stack([t(image=image)["image"] for _ in range(n)])
    assert outs.dtype == np.float32
    # One offset per image, the same for all of its pixels.
    np.testing.assert_array_equal(outs, np.broadcast_to(outs[:, :1, :1], outs.shape))
    offsets = outs[:, 0, 0].astype(np.float64)
    expected = (
        255.0**2 * IMAGENET_EIGVEC @ np.diag((std * IMAGENET_EIGVAL) ** 2) @ IMAGENET_EIGVEC.T
    )
    var = np.diag(expected)
    assert np.all(np.abs(offsets.mean(axis=0)) < 5 * np.sqrt(var / n))
    cov_se = np.sqrt((np.outer(var, var) + expected**2) / n)
    assert np.all(np.abs(np.cov(offsets.T, bias=True) - expected) < 5 * cov_se)
    # The coefficients behind the offsets are independent N(0, std).
    alphas = np.linalg.solve(IMAGENET_EIGVEC, offsets.T).T / (255.0 * IMAGENET_EIGVAL)
    np.testing.assert_allclose(alphas.std(axis=0), std, rtol=5 / np.sqrt(2 * n))
    corr = np.corrcoef(alphas.T)[np.triu_indices(3, 1)]
    assert np.all(np.abs(corr) < 5 / np.sqrt(n))


def test_lighting_alpha_is_recorded_and_replayable():
    lighting = PCALighting(IMAGENET_EIGVAL, IMAGENET_EIGVEC)
    t = A.Compose([lighting], seed=3, save_applied_params=True)
    image = np.random.default_rng(0).uniform(-100, 100, (5, 6, 3)).astype(np.float32)
    result = t(image=image)
    ((name, params),) = result["applied_transforms"]
    assert name == "PCALighting" and params["alpha"].shape == (3,)
    np.testing.assert_array_equal(lighting.params["alpha"], params["alpha"])
    offset = lighting_offset(params["alpha"], IMAGENET_EIGVAL, IMAGENET_EIGVEC)
    np.testing.assert_allclose(result["image"], image + offset, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(lighting.apply(image, alpha=params["alpha"]), result["image"])


def test_paper_train_shifts_each_image_by_one_colour():
    t = PaperTrain(zero_mean_stats(40), crop=32, seed=0)
    offsets = []
    for _ in range(20):
        out = t(np.zeros((40, 40, 3), np.uint8)).numpy()
        np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1, :1], out.shape))
        offsets.append(out[:, 0, 0])
    assert len({tuple(o) for o in offsets}) == 20


# -- randomness ------------------------------------------------------------------------------


def test_seed_makes_presets_reproducible():
    image = coord_image(40)

    def draws(seed):
        t = PaperTrain(zero_mean_stats(40), crop=32, seed=seed)
        return torch.stack([t(image) for _ in range(5)])

    torch.testing.assert_close(draws(123), draws(123), rtol=0, atol=0)
    assert not torch.equal(draws(123), draws(124))


class _SameImage(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(coord_image(40))


def _epoch(loader):
    return torch.cat(list(loader))


@pytest.mark.parametrize("persistent", [False, True])
def test_workers_draw_differently_and_epochs_differ(persistent):
    dataset = _SameImage(PaperTrain(zero_mean_stats(40), crop=32))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=persistent)
    torch.manual_seed(0)
    first, second = _epoch(loader), _epoch(loader)
    assert len({x.numpy().tobytes() for x in torch.cat([first, second])}) == 16
    torch.manual_seed(0)  # the worker seeds follow torch's global RNG
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=persistent)
    torch.testing.assert_close(_epoch(loader), first, rtol=0, atol=0)


# -- the aug group's choices ------------------------------------------------------------------


def test_aug_choices_build_their_presets():
    stats = zero_mean_stats(256)
    train, ev = PaperAug(crop=224, flip=True, lighting=0.1, eval="center").presets(stats)
    assert isinstance(train, PaperTrain) and isinstance(ev, PaperEval)
    assert (train.crop, train.flip, train.lighting, ev.crop) == (224, True, 0.1, 224)
    train, ev = PaperAug(crop=200, eval="ten_crop").presets(stats, seed=5)
    assert isinstance(ev, TenCrop) and ev.crop == 200 and train.seed == 5
    train, ev = CifarAug(pad=4, crop=32, flip=True, lighting=0.0).presets(zero_mean_stats(32))
    assert isinstance(train, CifarTrain) and type(ev) is NoAug and train.pad == 4
    train, ev = PlainAug().presets(stats)
    assert type(train) is NoAug and type(ev) is NoAug
    train, ev = PlainAug(crop=224).presets(stats)
    assert train(coord_image(256)).shape == ev(coord_image(256)).shape == (3, 224, 224)
    assert PaperAug(eval="ten_crop").centre_eval() == PaperAug()


@pytest.mark.parametrize("choice", ["paper", "cifar", "none", "vgg", "vgg_cifar"])
def test_every_aug_config_instantiates_its_choice(cfg_factory, choice):
    aug = hydra.utils.instantiate(cfg_factory([f"aug={choice}"]).aug, _convert_="all")
    assert isinstance(aug, Augmentation) and aug.name == choice.split("_")[0]


def test_aug_errors_name_the_key():
    stats = zero_mean_stats(256)
    with pytest.raises(ValueError, match="aug.eval='five_crop' is unknown for aug=paper"):
        PaperAug(eval="five_crop")
    with pytest.raises(TypeError, match="scale"):
        PaperAug(scale=0.5)
    train, ev = PaperAug(crop=300).presets(stats)
    for t in (train, ev):
        with pytest.raises(ValueError, match=r"crop=300 is larger than the image \(256x256\)"):
            t(coord_image(256))
    train, _ = CifarAug(pad=4, crop=48).presets(zero_mean_stats(32))
    with pytest.raises(ValueError, match=r"crop=48 .*\(40x40 after padding by 4\)"):
        train(coord_image(32))
