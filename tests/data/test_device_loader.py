"""GPU-resident data: batches made on the model's device (here the CPU) from in-memory uint8."""

import numpy as np
import pytest
import torch

from alexnet.config.entry import build_data
from alexnet.data.augment.batched import BatchEval, BatchTrain
from alexnet.data.device_loader import DeviceLoader
from alexnet.data.order import TrainOrder, batch_seed, epoch_permutation
from alexnet.data.stats import compute_stats


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
    loader = DeviceLoader(
        images, labels, BatchEval(stats, mode="full"), batch_size=16, shuffle=False, drop_last=False
    )
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
        loader = DeviceLoader(
            images,
            labels,
            BatchTrain(stats, crop=8, pad=2, lighting=0.1),
            batch_size=16,
            shuffle=True,
            drop_last=True,
            seed=seed,
        )
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
        loader = DeviceLoader(
            images,
            labels,
            BatchEval(stats, mode="full"),
            batch_size=8,
            shuffle=True,
            drop_last=True,
            seed=1,
            rank=rank,
            world_size=2,
        )
        assert len(loader) == 2
        seen.append(torch.cat([_ids(x, stats) for x, _ in loader]).tolist())
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 16


def test_cifar_config_selects_the_device_loader(cfg_factory, cifar_folder):
    cfg = cfg_factory(
        [
            "data.gpu_resident=true",
            f"paths.data_dir={cifar_folder}",
            "data.val_size=40",
            "data.batch_size=16",
        ]
    )
    dm = build_data(cfg)
    train = dm.train_dataloader()
    assert isinstance(train, DeviceLoader) and isinstance(train.transform, BatchTrain)
    assert train.transform.pad == 4 and len(train) == (240 - 40) // 16
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,) and x.device.type == "cpu"
    val = dm.val_dataloader()
    assert isinstance(val.transform, BatchEval) and sum(len(y) for _, y in val) == 40


def test_gpu_resident_imagenet_is_a_clear_error(cfg_factory, imagenet_folder):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "aug=paper",
            "data.num_classes=3",
            f"paths.data_dir={imagenet_folder}",
            "+data.gpu_resident=true",
        ]
    )
    dm = build_data(cfg)
    with pytest.raises(ValueError, match="data.store=true"):
        dm.train_dataloader()


def test_training_runs_end_to_end_on_gpu_resident_data(cfg_factory, cifar_folder, tmp_path):
    from alexnet.training.run import train

    cfg = cfg_factory(
        [
            "experiment=cifar10_alexnet",
            "debug=limit",
            "data.gpu_resident=true",
            "trainer.accelerator=cpu",
            "callbacks.progress_bar=false",
            "logger.wandb=null",
            f"paths.data_dir={cifar_folder}",
            "data.batch_size=16",
            "data.val_size=40",
            "model.conv_width=0.25",
        ]
    )
    results = train(cfg)
    assert results["steps"] == 8 and results["train_img_per_s"] > 0
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0
    assert "train/loss" in results["metrics"]


def test_ranks_share_the_run_seed_but_not_the_augmentation(monkeypatch):
    """Per-rank reseeding of torch's RNG (RankSeed) must not split the permutation."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    images, labels = _labelled_images(n=40)
    stats = compute_stats(images)
    loaders = []
    for rank in range(2):
        torch.manual_seed(100 + rank)  # what per-rank reseeding does before the loaders exist
        loaders.append(
            DeviceLoader(
                images,
                labels,
                BatchEval(stats, mode="full"),
                8,
                shuffle=True,
                drop_last=True,
                rank=rank,
                world_size=2,
            )
        )
    assert loaders[0].seed == loaders[1].seed == 3
    assert loaders[0].batch_seed(0, 0) != loaders[1].batch_seed(0, 0)
    seen = [set(torch.cat([_ids(x, stats) for x, _ in loader]).tolist()) for loader in loaders]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 32


def _train_loader(images, labels, **kw):
    stats = compute_stats(images)
    transform = BatchTrain(stats, crop=8, pad=2, lighting=0.1)
    return DeviceLoader(
        images, labels, transform, batch_size=8, shuffle=True, drop_last=True, **{"seed": 5, **kw}
    )


def _same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_an_epoch_does_not_depend_on_the_epochs_before_it():
    images, labels = _labelled_images(n=50)
    walked = _train_loader(images, labels)
    epochs = [list(walked) for _ in range(3)]  # each complete pass moves on one epoch
    assert walked.epoch == 3
    fresh = _train_loader(images, labels)
    fresh.set_epoch(2)  # what Lightning does when a run resumes into epoch 2
    _same_batches(list(fresh), epochs[2])
    again = _train_loader(images, labels)
    again.set_epoch(0)
    _same_batches(list(again), epochs[0])
    assert not torch.equal(epochs[1][0][1], epochs[2][0][1])  # still a new order every epoch


def test_epoch_order_and_draws_come_from_seed_epoch_rank_batch():
    """Epoch e's order is epoch_permutation(seed, e); batch b is augmented by a generator
    seeded from batch_seed(seed, e, rank, b): the same draws as the DataLoader path's seeds."""
    images, labels = _labelled_images(n=50)
    for rank in range(2):
        loader = _train_loader(images, labels, rank=rank, world_size=2)
        loader.set_epoch(3)
        order = epoch_permutation(5, 3, 50)[rank::2][:25]
        assert len(loader) == 3
        for b, (x, y) in enumerate(loader):
            idx = order[b * 8 : (b + 1) * 8]
            generator = torch.Generator().manual_seed(batch_seed(5, 3, rank, b))
            assert torch.equal(x, loader.transform(torch.from_numpy(images[idx]), generator))
            assert y.tolist() == labels[idx].tolist()


def test_resuming_mid_epoch_starts_at_the_next_batch():
    images, labels = _labelled_images(n=50)
    walked = _train_loader(images, labels)
    epochs = [list(walked) for _ in range(2)]
    resumed = _train_loader(images, labels)
    resumed.resume_at = (1, 2)  # two batches of epoch 1 trained on
    resumed.set_epoch(1)
    assert len(resumed) == 6  # the whole epoch's count, as Lightning expects
    _same_batches(list(resumed), epochs[1][2:])
    resumed.set_epoch(1)
    _same_batches(list(resumed), epochs[1][2:])  # iterated again: the same place
    resumed.set_epoch(2)  # later epochs start at their beginning
    assert len(list(resumed)) == 6


def test_the_checkpoint_position_reaches_the_device_loader(cfg_factory, cifar_folder):
    cfg = cfg_factory(
        [
            "data.gpu_resident=true",
            f"paths.data_dir={cifar_folder}",
            "data.val_size=40",
            "data.batch_size=16",
        ]
    )
    dm = build_data(cfg)
    dm.load_state_dict({"train_order": {"seed": 11, "epoch": 2, "batches_done": 3}})
    dm.setup("fit")
    train = dm.train_dataloader()
    assert train.seed == 11 and train.resume_at == (2, 3)
    assert train.sampler is train  # Lightning sets the epoch through it
    train.sampler.set_epoch(2)
    resumed = list(train)
    full = dm.train_dataloader()
    full.resume_at = None
    full.set_epoch(2)
    _same_batches(resumed, list(full)[3:])


def test_training_ranks_get_the_samplers_images_and_batch_count():
    """One epoch plan for both training paths: the fast loader's share of an epoch is the
    DataLoader sampler's (`TrainOrder`), tail padded by wrapping, so every rank has as many
    batches under either loader and the same images in each."""
    images, labels = _labelled_images(n=51)  # a tail for 2 and 4 ranks, none for 3
    for world in (2, 3, 4):
        counts = set()
        for rank in range(world):
            loader = _train_loader(images, labels, rank=rank, world_size=world)
            sampler = TrainOrder(51, batch_size=8, seed=5, num_replicas=world, rank=rank)
            want = sampler.indices(2)
            assert loader.order(2).tolist() == want.tolist()
            assert len(loader) == len(want) // 8  # the DataLoader drops the last partial batch
            counts.add(len(loader))
        assert len(counts) == 1  # no rank waits for a batch another rank does not have
