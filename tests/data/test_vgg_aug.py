"""`aug=vgg` / `aug=vgg_cifar` built by `VGGAug`: scale jitter from the config, the mean
RGB from the dataset statistics, the three test-time presets, and ImageNet's original images."""

from __future__ import annotations

from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch

from alexnet.config.entry import build_data
from alexnet.data.augment import vgg as vgg_transforms
from alexnet.data.augment.presets import lighting_offset
from alexnet.data.augment.vgg import (
    VGGAug,
    VGGCenterEval,
    VGGDenseEval,
    VGGMultiCrop,
    VGGTrain,
    default_eval_scale,
    dense_collate,
    mean_rgb_from_stats,
)
from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, DatasetStats


def stats_with_mean(mean_image: np.ndarray) -> DatasetStats:
    return DatasetStats(mean_image, IMAGENET_EIGVAL, IMAGENET_EIGVEC, count=1)


def flat_stats(rgb=(0.0, 0.0, 0.0), size: int = 8) -> DatasetStats:
    return stats_with_mean(np.broadcast_to(np.asarray(rgb, np.float32), (size, size, 3)).copy())


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def aug_of(cfg_factory, *overrides: str) -> VGGAug:
    return hydra.utils.instantiate(cfg_factory(list(overrides)).aug, _convert_="all")


# -- the config group -------------------------------------------------------------------------
def test_aug_vgg_config_builds_jitter_and_dense_eval(cfg_factory):
    aug = aug_of(cfg_factory, "aug=vgg")
    assert aug == VGGAug(
        scale=(256, 512), crop=224, flip=True, lighting=0.1, eval="dense", eval_scale=None
    )
    train, test = aug.presets(flat_stats())
    assert isinstance(train, VGGTrain) and isinstance(test, VGGDenseEval)
    assert (train.rescale.scale_min, train.rescale.scale_max) == (256, 512)
    assert train.crop == 224 and train.lighting == 0.1 and train.eigval is not None
    assert test.scales == [384]  # section 4.1: Q = (S_min + S_max) / 2 under jitter


def test_aug_vgg_cifar_config_is_fixed_scale(cfg_factory):
    aug = aug_of(cfg_factory, "aug=vgg_cifar")
    train, test = aug.presets(flat_stats())
    assert (train.rescale.scale_min, train.rescale.scale_max) == (36, 36)
    assert train.crop == 32 and train.eigval is None  # lighting off
    assert test.scales == [36]  # Q = S
    assert train(noise(32, 32)).shape == (3, 32, 32)
    assert test(noise(32, 32)).shape == (3, 36, 36)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("aug.scale=256", (256, 256)),
        ("aug.scale=[256,512]", (256, 512)),
        ("aug.scale=[384]", (384, 384)),
    ],
)
def test_scale_override_from_command_line(cfg_factory, override, expected):
    train, _ = aug_of(cfg_factory, "aug=vgg", override).presets(flat_stats())
    assert (train.rescale.scale_min, train.rescale.scale_max) == expected


def test_scale_jitter_from_config_stays_in_range(cfg_factory):
    train, _ = aug_of(cfg_factory, "aug=vgg", "aug.lighting=0").presets(flat_stats())
    torch.manual_seed(0)
    img = noise(120, 160)  # 3:4, upscaled by every S
    sides = []
    for _ in range(40):
        assert train(img).shape == (3, 224, 224)
        sides.append(train.rescale.last_scale)
    assert 256 <= min(sides) and max(sides) <= 512
    assert max(sides) - min(sides) > 100 and len(set(sides)) > 20


def test_default_eval_scale_rule():
    assert default_eval_scale(256) == 256
    assert default_eval_scale(384) == 384
    assert default_eval_scale([256, 512]) == 384
    assert default_eval_scale([36, 72]) == 54


# -- mean colour and lighting -----------------------------------------------------------------
def test_mean_rgb_is_mean_of_the_mean_image():
    rows = np.arange(8, dtype=np.float32)[:, None, None]
    mean_image = np.concatenate(
        [np.broadcast_to(rows * 10, (8, 8, 1)), np.full((8, 8, 1), 50.0), np.full((8, 8, 1), 7.0)],
        axis=-1,
    )
    stats = stats_with_mean(mean_image)
    assert mean_rgb_from_stats(stats) == pytest.approx((35.0, 50.0, 7.0))
    # a constant image minus the mean colour, whatever crop, flip and scale were drawn
    train, test = VGGAug(scale=[40, 60], crop=32, lighting=0.0).presets(stats)
    flat = np.full((40, 50, 3), (200, 100, 50), dtype=np.uint8)
    expected = torch.tensor([165.0, 50.0, 43.0]).view(3, 1, 1)
    torch.testing.assert_close(train(flat), expected.expand(3, 32, 32))
    torch.testing.assert_close(test(flat), expected.expand(3, 50, 62))


def test_lighting_is_alexnets_pca_offset():
    # Same statistics file, same colour shift as AlexNet's PCALighting for the same alphas.
    stats = flat_stats((10.0, 20.0, 30.0))
    train, _ = VGGAug(scale=40, crop=32, flip=False, lighting=0.1).presets(stats, seed=5)
    out = train(np.full((40, 40, 3), 100, dtype=np.uint8))
    g = torch.Generator().manual_seed(5)
    torch.randint(0, 9, (1,), generator=g), torch.randint(0, 9, (1,), generator=g)  # crop corner
    alpha = (torch.randn(3, generator=g) * 0.1).numpy()
    offset = lighting_offset(alpha, stats.eigval, stats.eigvec)
    expected = np.array([90.0, 80.0, 70.0]) + offset
    np.testing.assert_allclose(out.mean((1, 2)).numpy(), expected, rtol=1e-5, atol=1e-4)
    assert float(np.abs(offset).sum()) > 0.1


# -- test-time presets ------------------------------------------------------------------------
def ramp(h: int, w: int) -> np.ndarray:
    """An image whose R channel grows down the rows and G across the columns."""
    r = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    g = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    return np.stack([r, g, np.full_like(r, 9)], -1).round().astype(np.uint8)


def test_center_eval_is_the_centre_of_the_rescaled_image():
    img = ramp(60, 90)
    centre = VGGCenterEval((0, 0, 0), scale=40, crop=32)(img)
    whole = VGGDenseEval((0, 0, 0), scale=40)(img)
    assert whole.shape == (3, 40, 60) and centre.shape == (3, 32, 32)
    torch.testing.assert_close(centre, whole[:, 4:36, 14:46])
    stacked = VGGCenterEval((0, 0, 0), scale=[40, 48], crop=32)(img)
    assert stacked.shape == (2, 3, 32, 32)
    torch.testing.assert_close(stacked[0], centre)


def test_multi_crop_is_a_5x5_grid_and_flips_per_scale():
    img = ramp(60, 90)
    whole = VGGDenseEval((0, 0, 0), scale=40)(img)  # 40 x 60
    crops = VGGMultiCrop((0, 0, 0), scale=40, crop=32)(img)
    assert crops.shape == (50, 3, 32, 32)
    tops, lefts = [0, 2, 4, 6, 8], [0, 7, 14, 21, 28]
    for i, (top, left) in enumerate((t, lf) for t in tops for lf in lefts):
        torch.testing.assert_close(crops[i], whole[:, top : top + 32, left : left + 32])
        torch.testing.assert_close(crops[25 + i], torch.flip(crops[i], dims=(-1,)))
    assert VGGMultiCrop((0, 0, 0), scale=[32, 40, 48], crop=32)(img).shape == (150, 3, 32, 32)


def test_dense_eval_multi_scale_returns_one_view_per_scale():
    views = VGGDenseEval((0, 0, 0), scale=[32, 48])(ramp(60, 90))
    assert isinstance(views, tuple) and [v.shape for v in views] == [(3, 32, 48), (3, 48, 72)]


def test_dense_collate_keeps_sizes():
    batch = [(torch.zeros(3, 32, 40), 1), (torch.zeros(3, 32, 32), 4)]
    images, labels = dense_collate(batch)
    assert [tuple(x.shape) for x in images] == [(3, 32, 40), (3, 32, 32)]
    assert labels.tolist() == [1, 4] and labels.dtype == torch.long
    assert VGGDenseEval.collate_fn is not None and not hasattr(VGGCenterEval, "collate_fn")


@pytest.mark.parametrize(
    "aug, match",
    [
        ({"scale": 256, "pad": 4}, "pad"),
        ({"scale": 256, "eval": "ten_crop"}, "aug.eval='ten_crop' is unknown for aug=vgg"),
        ({"scale": 256, "lighting": -1}, "lighting"),
        ({"scale": 200}, "crop=224 is larger than the smallest scale"),
        ({"scale": 256, "eval": "center", "eval_scale": 200}, "crop=224 is larger"),
        ({"scale": [512, 256]}, "S_min <= S_max"),
    ],
)
def test_bad_aug_raises_clearly(aug, match):
    with pytest.raises((TypeError, ValueError), match=match):
        VGGAug(**aug).presets(flat_stats())


def test_seeded_train_preset_differs_per_worker(monkeypatch):
    # Forked workers copy the private generator; each must reseed from its own worker seed.
    img = ramp(60, 90)
    draws = {}
    for worker_seed in (11, 12, 11):
        train = VGGTrain((0, 0, 0), scale=[32, 64], crop=32, seed=3)
        info = SimpleNamespace(seed=worker_seed)
        monkeypatch.setattr(vgg_transforms, "get_worker_info", lambda info=info: info)
        draws.setdefault(worker_seed, []).append(torch.stack([train(img) for _ in range(3)]))
    torch.testing.assert_close(draws[11][0], draws[11][1])  # same worker seed: same sequence
    assert not torch.equal(draws[11][0], draws[12][0])


@pytest.fixture
def vgg_synthetic(cfg_factory):
    """A tiny synthetic data module with aug=vgg_cifar (scale jitter, so every draw shows)."""

    def make(num_workers: int):
        cfg = cfg_factory(
            [
                "data=synthetic",
                "data.train_size=24",
                "data.batch_size=4",
                f"data.num_workers={num_workers}",
                "aug=vgg_cifar",
                "aug.scale=[32,48]",
                "aug.lighting=0.1",
            ]
        )
        dm = build_data(cfg)
        dm.order_seed = 7
        return dm

    return make


def train_batches(dm) -> list[torch.Tensor]:
    return [x for x, _ in dm.train_dataloader()]


def test_vgg_train_batches_do_not_depend_on_the_worker_count(vgg_synthetic):
    torch.manual_seed(0)
    one = train_batches(vgg_synthetic(0))
    torch.manual_seed(1)  # the global RNG (and so the worker seeds) must not matter
    two = train_batches(vgg_synthetic(2))
    assert len(one) == len(two) == 6
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_vgg_resumed_epoch_sees_the_same_batches(vgg_synthetic):
    full = train_batches(vgg_synthetic(0))
    dm = vgg_synthetic(0)
    dm.load_state_dict({"train_order": {"seed": 7, "epoch": 0, "batches_done": 2}})
    torch.manual_seed(123)
    tail = train_batches(dm)
    assert len(tail) == 4
    assert all(torch.equal(a, b) for a, b in zip(full[2:], tail, strict=True))


# -- ImageNet: the original images for VGG ----------------------------------------------------
IMAGENET = ["data=imagenet", "data.num_classes=3", "data.batch_size=4", "data.num_workers=0"]


def test_imagenet_image_size_null_keeps_originals(cfg_factory, imagenet_folder):
    cfg = cfg_factory(
        [
            *IMAGENET,
            f"paths.data_dir={imagenet_folder}",
            "data.image_size=null",
            "aug=vgg",
            "aug.scale=[40,64]",
            "aug.crop=32",
            "aug.eval_scale=48",
        ]
    )
    dm = build_data(cfg)
    assert dm.train_set.load(0).shape == (260, 300, 3)  # the file's own size
    assert dm.stats().image_size == (256, 256)  # statistics from the 256 centre crops
    assert dm.train_set[0][0].shape == (3, 32, 32)
    assert dm.val_set[0][0].shape == (3, 32, 32)  # validation: centre crop at Q
    images, labels = next(iter(dm.test_dataloader()))  # dense: whole images, sizes differ
    assert len(images) == len(labels) == 4
    assert {min(x.shape[-2:]) for x in images} == {48}
    assert len({tuple(x.shape) for x in images}) > 1


def test_imagenet_image_size_null_needs_aug_vgg(cfg_factory, imagenet_folder):
    cfg = cfg_factory(
        [*IMAGENET, f"paths.data_dir={imagenet_folder}", "data.image_size=null", "aug=paper"]
    )
    with pytest.raises(ValueError, match="data.image_size=null .* only aug=vgg .* aug=paper"):
        build_data(cfg)
