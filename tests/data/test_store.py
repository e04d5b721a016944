"""The ImageNet JPEG store: written once in the paper's preprocessing, read back in batches.

Decoding runs on the CPU here (the same loader decodes on the GPU during training).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.config.entry import build_data
from alexnet.data import DataError
from alexnet.data.augment.batched import BatchEval, BatchTrain
from alexnet.data.folder import index_folder, resize_shorter_and_center_crop
from alexnet.data.images import open_rgb
from alexnet.data.order import batch_seed
from alexnet.data.stats import imagenet_default_stats
from alexnet.data.store import JpegStore, StoreLoader, store_folder, write_store
from alexnet.prepare_store import prepare_store
from alexnet.training.run import train


@pytest.fixture(scope="module")
def store_root(imagenet_folder, tmp_path_factory):
    """A copy-free data root whose imagenet/store/ holds both splits (written in-process)."""
    folder = imagenet_folder / "imagenet"
    for split in ("train", "val"):
        write_store(
            index_folder(folder / split, "hint"), store_folder(folder), split, quality=90, workers=0
        )
    return imagenet_folder


def test_store_round_trip_is_the_paper_preprocessing(store_root):
    folder = store_root / "imagenet"
    index = index_folder(folder / "train", "hint")
    store = JpegStore(store_folder(folder), "train")
    assert len(store) == len(index) == 14  # 3 classes x 4, a grayscale and a CMYK file
    assert store.labels.tolist() == index.labels and store.classes == index.classes
    assert (store.size, store.quality) == (256, 90)
    assert store.offsets[0] == 0 and np.all(np.diff(store.offsets) > 0)
    for i in range(len(store)):
        want = resize_shorter_and_center_crop(open_rgb(index.paths[i])[0], 256)
        encoded = io.BytesIO()
        Image.fromarray(want).save(encoded, format="JPEG", quality=90)
        assert store.encoded(i).numpy().tobytes() == encoded.getvalue()
        got = store.decode(i)
        assert got.shape == (256, 256, 3) and got.dtype == np.uint8
        # the re-encoding's error; pixel noise, as in these test images, is JPEG's worst case
        assert np.abs(got.astype(np.int16) - want).mean() < 8.0


def test_eval_loader_yields_every_image_once_with_its_label(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "val")
    stats = imagenet_default_stats(256)
    loader = StoreLoader(
        store,
        BatchEval(stats, 224, "center"),
        batch_size=4,
        shuffle=False,
        drop_last=False,
        threads=2,
    )
    assert len(loader) == 2
    xs, ys = zip(*loader, strict=True)
    assert [len(y) for y in ys] == [4, 2]
    assert torch.cat(ys).tolist() == store.labels.tolist()
    decoded = torch.from_numpy(np.stack([store.decode(i) for i in range(len(store))]))
    assert torch.equal(torch.cat(xs), BatchEval(stats, 224, "center")(decoded))


def test_train_loader_equals_batch_transform_of_decoded_images(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "train")
    stats = imagenet_default_stats(256)
    transform = BatchTrain(stats, crop=224, flip=True, lighting=0.1)
    loader = StoreLoader(store, transform, batch_size=5, shuffle=True, drop_last=True, seed=11)
    epoch = list(loader)
    assert len(epoch) == len(loader) == 2
    # Replay: epoch 0's permutation, and each batch's draws from a generator seeded by
    # (seed, epoch, rank, batch), give the same batches.
    order = np.random.default_rng([11, 0]).permutation(len(store))
    for b, (x, y) in enumerate(epoch):
        idx = order[b * 5 : (b + 1) * 5]
        images = torch.from_numpy(np.stack([store.decode(i) for i in idx]))
        generator = torch.Generator().manual_seed(batch_seed(11, 0, 0, b))
        assert torch.equal(x, transform(images, generator))
        assert y.tolist() == store.labels[idx].tolist()
    second = [y for _, y in loader]
    assert not all(torch.equal(a, b) for (_, a), b in zip(epoch, second, strict=True))


def _same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def _train_loader(store, **kw):
    transform = BatchTrain(imagenet_default_stats(256), crop=224, flip=True, lighting=0.1)
    return StoreLoader(
        store, transform, batch_size=3, shuffle=True, drop_last=True, seed=11, threads=2, **kw
    )


def test_store_epoch_does_not_depend_on_the_epochs_before_it(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "train")
    walked = _train_loader(store)
    epochs = [list(walked) for _ in range(3)]  # each complete pass moves on one epoch
    assert walked.epoch == 3 and len(epochs[2]) == 4
    fresh = _train_loader(store)
    fresh.set_epoch(2)
    _same_batches(list(fresh), epochs[2])
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(epochs[1], epochs[2], strict=True))
    # under DDP: one permutation shared, draws per rank
    ranks = [_train_loader(store, rank=r, world_size=2) for r in range(2)]
    shared = np.random.default_rng([11, 2]).permutation(14)
    assert [r.order(2).tolist() for r in ranks] == [shared[0::2].tolist(), shared[1::2].tolist()]
    assert ranks[0].batch_seed(2, 0) != ranks[1].batch_seed(2, 0)


def test_store_loader_resumes_mid_epoch(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "train")
    walked = _train_loader(store)
    epochs = [list(walked) for _ in range(2)]
    resumed = _train_loader(store)
    resumed.resume_at = (1, 3)
    resumed.set_epoch(1)
    assert len(resumed) == 4
    _same_batches(list(resumed), epochs[1][3:])


def test_the_checkpoint_position_reaches_the_store_loader(cfg_factory, store_root):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "aug=paper",
            "data.num_classes=3",
            "data.store=true",
            "data.batch_size=4",
            "data.num_workers=1",
            f"paths.data_dir={store_root}",
        ]
    )
    dm = build_data(cfg)
    dm.load_state_dict({"train_order": {"seed": 9, "epoch": 1, "batches_done": 2}})
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.seed == 9 and loader.resume_at == (1, 2) and loader.sampler is loader
    loader.sampler.set_epoch(1)
    assert len(list(loader)) == len(loader) - 2 == 1


def test_stopping_early_ends_the_producer_thread(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "train")
    loader = StoreLoader(
        store,
        BatchEval(imagenet_default_stats(256), 224),
        batch_size=2,
        shuffle=True,
        drop_last=True,
        prefetch=1,
    )
    for _ in range(3):
        next(iter(loader))  # abandoned generators: their finally blocks stop the producer
    x, _ = next(iter(loader))
    assert x.shape == (2, 3, 224, 224)


def test_store_config_selects_the_store_loader(cfg_factory, store_root):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "aug=paper",
            "data.num_classes=3",
            "data.store=true",
            "data.batch_size=4",
            f"paths.data_dir={store_root}",
        ]
    )
    dm = build_data(cfg)
    loader = dm.train_dataloader()
    assert isinstance(loader, StoreLoader) and isinstance(loader.transform, BatchTrain)
    assert loader.transform.lighting == 0.1 and len(loader) == 3
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and y.dtype == torch.int64


def test_unknown_decode_names_the_config_key(store_root):
    store = JpegStore(store_folder(store_root / "imagenet"), "val")
    with pytest.raises(ValueError, match="data.store_decode"):
        StoreLoader(
            store, BatchEval(imagenet_default_stats(256), 224), 2, False, False, decode="gpu"
        )


def test_missing_store_names_the_make_target(cfg_factory, imagenet_folder, tmp_path):
    empty = tmp_path / "data"
    (empty / "imagenet").mkdir(parents=True)
    cfg = cfg_factory(["data=imagenet", "data.store=true", f"paths.data_dir={empty}"])
    with pytest.raises(DataError, match="make imagenet-store"):
        build_data(cfg)


def test_training_on_the_store(cfg_factory, store_root):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "model=alexnet",
            "aug=paper",
            "aug.eval=ten_crop",
            "data.num_classes=3",
            "data.batch_size=2",
            "data.store=true",
            "debug=limit",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger.wandb=null",
            "trainer.accelerator=cpu",
            "callbacks.progress_bar=false",
            f"paths.data_dir={store_root}",
            # the figures of a store's run: tests/figures/test_render.py (half this test's time)
            "figures.enabled=false",
        ]
    )
    results = train(cfg)
    assert results["steps"] == 2
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0


def test_prepare_store_writes_then_skips(cfg_factory, imagenet_folder, tmp_path):
    root = tmp_path / "data"
    (root / "imagenet").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "imagenet" / split).symlink_to(imagenet_folder / "imagenet" / split)
    cfg = cfg_factory(
        ["data=imagenet", f"paths.data_dir={root}", "data.num_workers=2", "data.store_quality=80"]
    )
    first = prepare_store(cfg)
    assert "train.jpegs: 14 images" in first[0] and "val.jpegs: 6 images" in first[1]
    store = JpegStore(root / "imagenet" / "store", "val")
    assert len(store) == 6 and store.quality == 80
    assert all("skipped" in line for line in prepare_store(cfg))
    with pytest.raises(ValueError, match="data=imagenet"):
        prepare_store(cfg_factory(["data=synthetic"]))


def test_store_holds_what_folder_training_reads_from_a_dirty_folder(cfg_factory, tmp_path):
    # A truncated JPEG and a text file named .JPEG, beside grayscale and CMYK ones: the writer
    # must not stop, and image i of the store must be what FolderDataset gives training for i.
    from alexnet.data.base import FolderDataset
    from conftest import write_jpegs

    root = tmp_path / "data"
    wnids = ["n01440764", "n01443537"]
    write_jpegs(root / "imagenet" / "train", wnids, per_class=3, size=[(300, 260)], seed=5)
    write_jpegs(root / "imagenet" / "val", wnids, per_class=1, size=[(260, 300)], seed=6)
    train = root / "imagenet" / "train"
    good = (train / wnids[0] / "0000.jpg").read_bytes()
    (train / wnids[0] / "0001_truncated.JPEG").write_bytes(good[: len(good) * 6 // 10])
    (train / wnids[1] / "zz_text.JPEG").write_text("<html>404 Not Found</html>\n")
    Image.new("L", (280, 270), 90).save(train / wnids[1] / "0001_gray.JPEG")
    Image.new("CMYK", (270, 280), (10, 200, 30, 40)).save(train / wnids[1] / "0002_cmyk.JPEG")
    cfg = cfg_factory(
        ["data=imagenet", f"paths.data_dir={root}", "data.num_workers=2", "data.num_classes=2"]
    )
    lines = prepare_store(cfg)
    assert "train.jpegs: 10 images" in lines[0]
    for note in ("2 unusable", "not_an_image 1", "truncated 1", "cmyk 1", "grayscale 1"):
        assert note in lines[0]
    index = index_folder(train, "hint")
    store = JpegStore(root / "imagenet" / "store", "train")
    folder = FolderDataset(index, np.asarray, size=256)
    assert len(store) == len(index) == 10
    for i in range(len(store)):
        pixels, label = folder[i]
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="JPEG", quality=90)
        assert store.encoded(i).numpy().tobytes() == encoded.getvalue(), index.paths[i]
        assert int(store.labels[i]) == label
    # the last file is unusable: replaced by the first one, label included, as training does
    assert index.paths[-1].name == "zz_text.JPEG" and int(store.labels[-1]) == 0
