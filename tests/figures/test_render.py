"""The orchestration: every figure for a network and a data module, into one folder."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from alexnet.config.entry import build_data, build_module
from alexnet.data.base import ArrayDataset, FolderDataset
from alexnet.figures import kernel_grid
from alexnet.figures.display import dataset_labels, display_images, with_transform
from alexnet.figures.kernels import TITLE_PX
from alexnet.figures.render import (
    FILES,
    PER_CLASS_CSV,
    RenderOptions,
    draw_kernels,
    first_conv,
    render_figures,
)
from alexnet.models import build_model
from conftest import compose_config

METRICS_CSV = """\
epoch,step,train/loss,train/lr,val/loss,val/top1_err,val/top5_err,train/top1_err
0,0,2.30,0.01,,,,
0,1,2.10,0.01,,,,
0,1,,,2.00,0.80,0.40,0.75
"""


def png(path) -> np.ndarray:
    img = mpimg.imread(path)
    assert img[..., :3].var() > 0, f"{path} is blank"
    return img


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A tiny synthetic data module and an untrained AlexNet-CIFAR with towers=2."""
    cfg = compose_config(
        "train",
        [
            "data=synthetic",
            "aug=none",
            "data.train_size=96",
            "data.val_size=16",
            "data.test_size=24",
            "data.num_classes=4",
            "model.init=kaiming",
        ],  # untrained, yet images differ in fc7
        tmp_path_factory.mktemp("run"),
    )
    torch.manual_seed(0)
    return build_module(cfg), build_data(cfg)


def test_render_writes_every_figure_with_right_content(synthetic, tmp_path):
    module, dm = synthetic
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    opts = RenderOptions(examples=6, queries=3, neighbours=4, device="cpu")
    out = render_figures(module, dm, tmp_path / "figures", opts, metrics_csv=csv_path)

    expected = {*FILES, "per_class_error"}
    assert set(out.paths) == expected
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        [*FILES.values(), PER_CLASS_CSV]
    )
    for name, file in FILES.items():
        assert out.paths[name] == tmp_path / "figures" / file
        png(out.paths[name])
    # Pixel sizes follow the figure modules' documented formulas.
    assert png(out.paths["top5"]).shape[:2] == (2 * 350, 4 * 250)  # 6 images, 4 per row
    assert png(out.paths["neighbours"]).shape[:2] == (3 * 150, 5 * 125)  # 3 queries, 4 + query
    grid = kernel_grid(module.net.conv1.weight, towers=2)
    assert png(out.paths["kernels"]).shape[:2] == (grid.shape[0] + TITLE_PX, grid.shape[1])

    assert module.training  # the module's mode is restored
    # The per-class table counts every test image once; its errors agree with a direct pass.
    labels = dataset_labels(dm.test_set)
    rows = out.tables["per_class_error"]
    assert [r["n"] for r in rows] == np.bincount(labels, minlength=4).tolist()
    with torch.inference_mode():
        x = torch.stack([dm.test_set[i][0] for i in range(len(dm.test_set))])
        pred = module.eval()(x).argmax(1).numpy()
    wrong = pred != labels
    assert out.test_top1_err == pytest.approx(wrong.mean())
    for c, row in enumerate(rows):
        assert row["top1_err"] == pytest.approx(wrong[labels == c].mean())
    with (tmp_path / "figures" / PER_CLASS_CSV).open() as f:
        on_disk = list(csv.DictReader(f))
    assert [r["class"] for r in on_disk] == dm.class_names
    module.train()
    assert set(out.seconds) >= {"kernels", "test_pass", "train_features", "neighbours"}


def test_neighbours_are_the_true_nearest_training_images(synthetic, tmp_path):
    """With the training images as test set, each query's nearest neighbour is itself, and the
    rest follow the brute-force distance order of the features."""
    module, dm = synthetic
    train = dm.train_set
    same = SimpleNamespace(
        train_set=train,
        val_set=dm.val_set,
        num_classes=4,
        batch_size=32,
        test_set=with_transform(train, dm.val_set.transform),
        class_names=[],
    )
    out = render_figures(
        module, same, tmp_path, RenderOptions(examples=2, queries=4, neighbours=3, device="cpu")
    )
    assert out.neighbour_indices.shape == (4, 3)
    assert out.neighbour_indices[:, 0].tolist() == out.query_indices.tolist()
    with torch.inference_mode():
        module.eval()
        feats = module.net.embed(torch.stack([dm.val_set.transform(img) for img in train.images]))
    module.train()
    dist = torch.cdist(feats[out.query_indices].double(), feats.double())
    assert out.neighbour_indices.tolist() == dist.argsort(1)[:, :3].tolist()


def test_train_images_subset_and_options_checked(synthetic, tmp_path):
    module, dm = synthetic
    out = render_figures(
        module,
        dm,
        tmp_path,
        RenderOptions(
            examples=1, queries=2, neighbours=2, train_images=10, test_images=5, device="cpu"
        ),
    )
    assert sum(r["n"] for r in out.tables["per_class_error"]) == 5
    assert len(np.unique(out.neighbour_indices)) <= 10
    with pytest.raises(ValueError, match="figures.queries"):
        render_figures(module, dm, tmp_path, RenderOptions(queries=0))
    with pytest.raises(ValueError, match="figures.train_images"):
        RenderOptions.from_config({"train_images": 0, "enabled": True}).check()


def test_class_mismatch_names_the_fix(synthetic, tmp_path):
    module, dm = synthetic
    other = build_module_with_classes(7)
    with pytest.raises(ValueError, match="7 classes but the data has 4"):
        render_figures(other, dm, tmp_path)
    assert module.hparams.model["num_classes"] == 4


def build_module_with_classes(n: int):
    from alexnet.training.module import Classifier

    return Classifier(model={"name": "alexnet_cifar", "num_classes": n})


@pytest.mark.parametrize(
    "name,kwargs,towers",
    [
        ("alexnet", {"towers": 2}, 2),
        ("alexnet", {"towers": 1}, 1),
        ("alexnet_cifar", {"towers": 1}, 1),
        ("alexnet_tv", {}, 1),
        ("vgg_cifar", {"config": "A"}, 1),
    ],
)
def test_draw_kernels_layout_per_network(name, kwargs, towers, tmp_path):
    net = build_model(name, num_classes=10, **kwargs)
    weight = first_conv(net).weight
    path = draw_kernels(net, towers, tmp_path)
    grid = kernel_grid(weight, towers=towers)
    assert png(path).shape[:2] == (grid.shape[0] + TITLE_PX, grid.shape[1])
    k = weight.shape[0]
    rows_per_tower = -(-k // towers // 16)
    tile = weight.shape[-1] * max(1, 44 // weight.shape[-1])
    block = rows_per_tower * tile + rows_per_tower + 1
    assert grid.shape[0] == towers * block + (towers - 1) * 8


# ---- display images ----------------------------------------------------------------------------


def test_display_images_from_arrays_folders_and_subsets(imagenet_folder):
    from alexnet.data.folder import index_folder

    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    arrays = ArrayDataset(images, np.arange(10) % 3, transform=lambda a: a)
    assert np.array_equal(display_images(arrays, [4, 1]), images[[4, 1]])
    sub = Subset(arrays, [9, 7, 5])
    assert np.array_equal(display_images(sub, [1, 2]), images[[7, 5]])
    assert dataset_labels(sub).tolist() == [0, 1, 2]

    index = index_folder(imagenet_folder / "imagenet" / "val", "hint")
    folder = FolderDataset(index, transform=lambda a: a, size=64)
    shown = display_images(Subset(folder, [5, 0]), [0, 1])
    assert shown.shape == (2, 64, 64, 3) and shown.dtype == np.uint8
    assert np.array_equal(shown[1], folder.load(0))
    assert dataset_labels(folder).tolist() == index.labels
    copy = with_transform(Subset(folder, [1]), transform=lambda a: a.mean())
    assert copy.dataset.transform is not folder.transform and copy.dataset.index is index


def test_train_images_auto_is_sized_to_the_device():
    from alexnet.figures.render import CPU_TRAIN_IMAGES, GPU_TRAIN_IMAGES, train_images_for

    auto = RenderOptions.from_config({"train_images": "auto"}).check()
    assert train_images_for(auto, torch.device("cpu")) == CPU_TRAIN_IMAGES < GPU_TRAIN_IMAGES
    assert train_images_for(auto, torch.device("cuda")) == GPU_TRAIN_IMAGES
    assert train_images_for(RenderOptions(train_images=123), torch.device("cpu")) == 123
    with pytest.raises(ValueError, match="figures.train_images"):
        RenderOptions.from_config({"train_images": "many"}).check()


def test_render_from_the_jpeg_store(imagenet_folder, tmp_path):
    # data.store=true: the splits are StoreDatasets, whose images and labels are in the store.
    from alexnet.data.folder import index_folder
    from alexnet.data.store import StoreDataset, store_folder, write_store

    root = tmp_path / "data"
    (root / "imagenet").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "imagenet" / split).symlink_to(imagenet_folder / "imagenet" / split)
        write_store(
            index_folder(root / "imagenet" / split, "hint"),
            store_folder(root / "imagenet"),
            split,
            workers=0,
        )
    cfg = compose_config(
        "train",
        [
            "data=imagenet",
            "model=alexnet",
            "aug=paper",
            "data.num_classes=3",
            "data.store=true",
            "data.batch_size=4",
            "data.num_workers=0",
            f"paths.data_dir={root}",
        ],
        tmp_path / "run",
    )
    torch.manual_seed(0)
    module, dm = build_module(cfg), build_data(cfg)
    assert isinstance(dm.test_set, StoreDataset)
    out = render_figures(
        module,
        dm,
        tmp_path / "figures",
        RenderOptions(examples=2, queries=2, neighbours=2, device="cpu"),
    )
    assert set(out.paths) == {"kernels", "top5", "neighbours", "confusion", "per_class_error"}
    for name in ("top5", "neighbours", "confusion"):
        png(out.paths[name])
    assert [r["n"] for r in out.tables["per_class_error"]] == [2, 2, 2]
    shown = display_images(dm.train_set, [3, 0])
    assert shown.shape == (2, 256, 256, 3)
    assert np.array_equal(shown[1], dm.train_set.store.decode(0))
    assert dataset_labels(dm.train_set).tolist() == dm.train_set.store.labels.tolist()
