"""The data modules: both CIFAR-10 layouts, the ImageNet tree, statistics, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from alexnet.data import CIFAR10DataModule, DataError, ImageNetDataModule, SyntheticDataModule
from alexnet.data.augment.presets import CifarAug, PaperAug, PlainAug
from alexnet.prepare import prepare

CIFAR_AUG = CifarAug(pad=4, crop=32, flip=True, lighting=0.0)


def write_python_batches(folder, n_per_batch: int = 20, seed: int = 0):
    """The official layout: pickled dicts with "data" (N, 3072 uint8) and "labels"."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        labels[:10] = list(range(10))  # every class present
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    classes = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)


def test_cifar_python_batches_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    # The real files carry md5 sums torchvision checks; ours are fakes with the same layout.
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
    monkeypatch.setattr("alexnet.data.cifar10.verify_batches", lambda folder: None)
    write_python_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    dm = CIFAR10DataModule(root=tmp_path, batch_size=8, num_workers=0, val_size=10, aug=CIFAR_AUG)
    dm.setup("fit")
    assert len(dm.train_set) == 90 and len(dm.val_set) == 10 and len(dm.test_set) == 20
    assert dm.class_names[0] == "airplane"
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar_corrupt_python_batches_are_a_clear_error(tmp_path):
    write_python_batches(tmp_path / "cifar10" / "cifar-10-batches-py")  # md5s do not match
    dm = CIFAR10DataModule(root=tmp_path, aug=CIFAR_AUG)
    with pytest.raises(DataError, match="corrupt; delete"):
        dm.setup("fit")


def test_cifar_folder_layout_is_shuffled_split_and_cached(cifar_folder):
    dm = CIFAR10DataModule(
        root=cifar_folder, batch_size=16, num_workers=0, val_size=40, aug=CIFAR_AUG
    )
    dm.setup("fit")
    assert len(dm.train_set) == 200 and len(dm.val_set) == 40 and len(dm.test_set) == 60
    # a prefix of the test set mixes classes (folder trees list them class by class)
    assert len(set(dm.test_set.labels[:16].tolist())) > 3
    assert (cifar_folder / "cifar10" / "decoded-train.npz").is_file()
    again = CIFAR10DataModule(root=cifar_folder, val_size=40, aug=CIFAR_AUG)
    images, labels = again.arrays("train")
    np.testing.assert_array_equal(images, dm.arrays("train")[0])
    # the validation split does not depend on anything but the data's own seed
    np.testing.assert_array_equal(again_val_labels(cifar_folder), dm.val_set.labels)


def again_val_labels(root):
    dm = CIFAR10DataModule(root=root, val_size=40, aug=CIFAR_AUG)
    dm.setup("fit")
    return dm.val_set.labels


def test_cifar_wrong_num_classes_is_clear(cifar_folder):
    dm = CIFAR10DataModule(root=cifar_folder, num_classes=100, aug=CIFAR_AUG, val_size=40)
    with pytest.raises(ValueError, match="data.num_classes=100 .* holds 10 classes"):
        dm.setup("fit")


def test_cifar_empty_folder_is_clear(tmp_path):
    (tmp_path / "cifar10" / "train").mkdir(parents=True)
    dm = CIFAR10DataModule(root=tmp_path)
    with pytest.raises(DataError, match="holds no images"):
        dm.setup("fit")


def test_imagenet_tree_decodes_odd_images_to_256(imagenet_folder):
    dm = ImageNetDataModule(
        root=imagenet_folder,
        num_classes=3,
        batch_size=2,
        num_workers=0,
        aug=PaperAug(crop=224, eval="ten_crop"),
    )
    dm.setup("fit")
    names = [p.name for p in dm.train_set.index.paths]
    for odd in ("gray scale.JPEG", "it's cmyk.JPEG"):
        image = dm.train_set.load(names.index(odd))
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    x, _ = dm.train_set[0]
    assert x.shape == (3, 224, 224)
    assert dm.val_set[0][0].shape == (3, 224, 224)  # validation: centre crop
    assert dm.test_set[0][0].shape == (10, 3, 224, 224)  # test: the paper's ten crops
    assert dm.stats().count == 0  # no stats file yet: the published ImageNet constants


def test_prepare_computes_and_caches_stats(cfg_factory, imagenet_folder):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "model=alexnet",
            "aug=paper",
            f"paths.data_dir={imagenet_folder}",
            "data.num_classes=3",
            "data.num_workers=0",
        ]
    )
    message = prepare(cfg)
    stats_file = imagenet_folder / "imagenet" / "stats.npz"
    assert str(stats_file) in message and stats_file.is_file()
    dm = ImageNetDataModule(root=imagenet_folder, num_classes=3)
    stats = dm.stats()
    assert stats.count == 14 and stats.mean_image.shape == (256, 256, 3)
    stats_file.unlink()


def test_synthetic_data_is_learnable_and_deterministic():
    dm = SyntheticDataModule(num_classes=4, image_size=16, train_size=64, aug=PlainAug())
    dm.setup("fit")
    images, labels = dm.arrays("train")
    again, _ = SyntheticDataModule(num_classes=4, image_size=16, train_size=64).arrays("train")
    np.testing.assert_array_equal(images, again)
    # class means differ far more than the noise averages out: the labels are learnable
    means = np.stack([images[labels == c].mean(axis=(0, 1, 2)) for c in range(4)])
    assert np.abs(means[:, None] - means[None]).max() > 20
