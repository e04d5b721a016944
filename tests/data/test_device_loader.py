"""GPU-resident data: batches made on the model's device (here the CPU) from in-memory uint8."""

import numpy as np
import pytest
import torch

from alexnet.data.batch_transforms import BatchEval, BatchTrain
from alexnet.data.device_loader import DeviceLoader
from alexnet.data.stats import compute_stats
from alexnet.train import build_data


def _labelled_images(n=50, size=8):
    """Image i is filled with the grey level i, so a batch tells which images it holds."""
    labels = np.arange(n) % 10
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 3))
    return np.ascontiguousarray(images), labels


def _ids(loader_images, stats):
    # Undo the centring: (x + mean) is the grey level, constant over each image.
    mean = torch.as_tensor(stats.mean_image).permute(2, 0, 1)
    return (loader_images + mean).mean(dim=(1, 2, 3)).round().long()


def test_eval_epoch_yields_every_image_once_in_order_with_its_label():
    images, labels = _labelled_images()
    stats = compute_stats(images)
    loader = DeviceLoader(images, labels, BatchEval(stats, mode="full"), batch_size=16,
                          shuffle=False, drop_last=False)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    ids = torch.cat([_ids(x, stats) for x, _ in batches])
    assert ids.tolist() == list(range(50))
    assert torch.cat([y for _, y in batches]).tolist() == labels.tolist()


def test_train_epochs_reshuffle_and_repeat_with_the_seed():
    images, labels = _labelled_images()
    stats = compute_stats(images)

    def epochs(seed):
        loader = DeviceLoader(images, labels, BatchTrain(stats, crop=8, pad=2, lighting=0.1),
                              batch_size=16, shuffle=True, drop_last=True, seed=seed)
        return [torch.cat([y for _, y in loader]) for _ in range(2)], loader

    (first, second), loader = epochs(seed=3)
    assert len(loader) == 3 and len(first) == 48  # drop_last: 3 full batches of 16
    assert not torch.equal(first, second)  # a new order every epoch
    again, _ = epochs(seed=3)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)
    x, _ = next(iter(loader))
    assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32


def test_ranks_split_one_permutation():
    images, labels = _labelled_images(n=40)
    stats = compute_stats(images)
    seen = []
    for rank in range(2):
        loader = DeviceLoader(images, labels, BatchEval(stats, mode="full"), batch_size=8,
                              shuffle=True, drop_last=True, seed=1, rank=rank, world_size=2)
        assert len(loader) == 2
        seen.append(torch.cat([_ids(x, stats) for x, _ in loader]).tolist())
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 16


def test_cifar_config_selects_the_device_loader(cfg_factory, cifar_folder):
    cfg = cfg_factory(["data.gpu_resident=true", f"paths.data_dir={cifar_folder}",
                       "data.val_size=40", "data.batch_size=16"])
    dm = build_data(cfg)
    train = dm.train_dataloader()
    assert isinstance(train, DeviceLoader) and isinstance(train.transform, BatchTrain)
    assert train.transform.pad == 4 and len(train) == (240 - 40) // 16
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,) and x.device.type == "cpu"
    val = dm.val_dataloader()
    assert isinstance(val.transform, BatchEval) and sum(len(y) for _, y in val) == 40


def test_gpu_resident_imagenet_is_a_clear_error(cfg_factory, imagenet_folder):
    cfg = cfg_factory(["data=imagenet", "aug=paper", "data.num_classes=3",
                       f"paths.data_dir={imagenet_folder}", "+data.gpu_resident=true"])
    dm = build_data(cfg)
    with pytest.raises(ValueError, match="data.store=true"):
        dm.train_dataloader()


def test_training_runs_end_to_end_on_gpu_resident_data(cfg_factory, cifar_folder, tmp_path):
    from alexnet.train import train

    cfg = cfg_factory(["experiment=cifar10_alexnet", "debug=limit", "data.gpu_resident=true",
                       "trainer.accelerator=cpu", "callbacks.progress_bar=false",
                       "logger.wandb=null", f"paths.data_dir={cifar_folder}",
                       "data.batch_size=16", "data.val_size=40", "model.conv_width=0.25"])
    results = train(cfg)
    assert results["steps"] == 8 and results["train_img_per_s"] > 0
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0
    assert "train/loss" in results["metrics"]


def test_ranks_share_the_run_seed_but_not_the_augmentation(monkeypatch):
    """Per-rank reseeding of torch's RNG (issue 5's RankSeed) must not split the permutation."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    images, labels = _labelled_images(n=40)
    stats = compute_stats(images)
    loaders = []
    for rank in range(2):
        torch.manual_seed(100 + rank)  # what per-rank reseeding does before the loaders exist
        loaders.append(DeviceLoader(images, labels, BatchEval(stats, mode="full"), 8,
                                    shuffle=True, drop_last=True, rank=rank, world_size=2))
    assert loaders[0].seed == loaders[1].seed == 3
    assert loaders[0].aug_seed != loaders[1].aug_seed
    seen = [set(torch.cat([_ids(x, stats) for x, _ in loader]).tolist()) for loader in loaders]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 32
