"""The paper's figures on tiny synthetic data: right pixel sizes, not blank, right numbers."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn

from alexnet.figures import (
    confusion_figure,
    extract_features,
    grid_shape,
    kernel_grid,
    learning_curves,
    nearest_neighbours,
    neighbours_figure,
    normalise_kernels,
    per_class_error,
    read_metrics_csv,
    save_kernel_figure,
    top5,
    top5_figure,
)


def png_shape(path) -> tuple[int, int]:
    """(H, W) of a written PNG, after checking it is not a blank canvas."""
    img = mpimg.imread(path)
    assert img[..., :3].var() > 0, f"{path} is blank"
    return img.shape[:2]


def uint8_images(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# ---- Figure 3: kernels ---------------------------------------------------------------------------


def test_grid_shape_is_16_wide_like_the_paper():
    assert grid_shape(48) == (3, 16)
    assert grid_shape(96) == (6, 16)
    assert grid_shape(64) == (4, 16)
    assert grid_shape(10) == (1, 10)
    assert grid_shape(17) == (2, 16)


def test_kernel_grid_two_towers_puts_first_half_on_top():
    w = torch.randn(96, 3, 11, 11)
    up, pad, gap = 4, 1, 8
    grid = kernel_grid(w, towers=2, pad=pad, upscale=up, gap=gap)
    tile = 11 * up
    block_h = 3 * tile + 4 * pad
    assert grid.shape == (2 * block_h + gap, 16 * tile + 17 * pad, 3)
    assert grid.dtype == np.uint8
    tiles = normalise_kernels(w)

    def tile_at(tower: int, r: int, c: int) -> np.ndarray:
        y = tower * (block_h + gap) + pad + r * (tile + pad)
        x = pad + c * (tile + pad)
        return grid[y : y + tile : up, x : x + tile : up]

    assert np.array_equal(tile_at(0, 0, 0), tiles[0])
    assert np.array_equal(tile_at(0, 2, 15), tiles[47])
    assert np.array_equal(tile_at(1, 0, 0), tiles[48])
    assert np.array_equal(tile_at(1, 1, 3), tiles[48 + 16 + 3])
    assert np.array_equal(tile_at(1, 2, 15), tiles[95])
    # The gap between the two blocks is plain background.
    assert (grid[block_h : block_h + gap] == 255).all()


def test_kernel_grid_one_tower_is_one_block_and_default_upscale():
    w = torch.randn(64, 3, 5, 5)  # the CIFAR variant's conv1
    grid = kernel_grid(w, towers=1)
    tile = 5 * 8  # default upscale for 5x5 kernels
    assert grid.shape == (4 * tile + 5, 16 * tile + 17, 3)
    assert np.array_equal(grid[1 : 1 + tile : 8, 1 : 1 + tile : 8], normalise_kernels(w)[0])
    assert kernel_grid(torch.randn(96, 3, 11, 11)).shape == (6 * 44 + 7, 721, 3)  # paper size


def test_normalise_kernels_each_kernel_spans_0_255():
    w = torch.randn(6, 3, 4, 4) * torch.arange(1, 7).view(6, 1, 1, 1)
    w[5] = 0.3  # constant kernel -> mid-grey, no division by zero
    tiles = normalise_kernels(w)
    assert tiles.shape == (6, 4, 4, 3)
    assert (tiles[:5].reshape(5, -1).min(1) == 0).all()
    assert (tiles[:5].reshape(5, -1).max(1) == 255).all()
    assert (tiles[5] == 128).all()


def test_kernel_grid_rejects_uneven_towers_and_wrong_shapes():
    with pytest.raises(ValueError, match="towers"):
        kernel_grid(torch.randn(95, 3, 11, 11), towers=2)
    with pytest.raises(ValueError, match="K, 3"):
        kernel_grid(torch.randn(8, 1, 5, 5))


def test_save_kernel_figure_png_size(tmp_path):
    w = torch.randn(96, 3, 11, 11, requires_grad=True)
    h, wd, _ = kernel_grid(w, towers=2).shape
    plain = save_kernel_figure(w, tmp_path / "k.png", towers=2)
    assert png_shape(plain) == (h, wd)
    titled = save_kernel_figure(w, tmp_path / "sub" / "kt.png", towers=2, title="conv1, epoch 3")
    assert png_shape(titled) == (h + 28, wd)


# ---- Figure 4 left: top-5 ------------------------------------------------------------------------


def test_top5_sorted_descending():
    probs = torch.softmax(torch.randn(4, 10), dim=1)
    values, indices = top5(probs)
    assert values.shape == indices.shape == (4, 5)
    assert (values[:, :-1] >= values[:, 1:]).all()
    assert torch.equal(indices[:, 0], probs.argmax(1))
    v_np, _ = top5(probs.numpy(), k=3)
    assert torch.allclose(v_np, values[:, :3])


def test_top5_figure_png_size(tmp_path):
    names = [f"class {i}" for i in range(10)]
    probs = torch.softmax(torch.randn(6, 10) * 3, dim=1)
    labels = probs.argmax(1)
    labels[1] = probs[1].argmin()  # one image whose true label is not in the top 5
    out = top5_figure(uint8_images(6, 32, 32), labels, probs, names, tmp_path / "top5.png")
    assert png_shape(out) == (2 * 350, 4 * 250)
    few = top5_figure(
        uint8_images(2, 16, 16),
        [0, 1],
        np.eye(3)[:2],
        ["a", "b", "c"],
        tmp_path / "few.png",
        ncols=4,
    )
    assert png_shape(few) == (350, 2 * 250)  # cols = min(ncols, N); C < 5 shows C bars


def test_top5_figure_rejects_network_inputs(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        top5_figure(
            torch.randn(2, 8, 8, 3), [0, 1], torch.rand(2, 5), list("abcde"), tmp_path / "x.png"
        )


# ---- Figure 4 right: nearest neighbours ----------------------------------------------------------


class TinyNet(nn.Module):
    """A stand-in with the networks' ``embed`` API, and dropout so eval mode matters."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.5)
        )

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.embed(x).sum(1)


def test_extract_features_batched_equals_one_batch_and_restores_mode():
    torch.manual_seed(0)
    net = TinyNet().train()
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10)
    whole = extract_features(net.embed, [x])
    loader = [(x[i : i + 3], y[i : i + 3]) for i in range(0, 10, 3)]
    batched, labels = extract_features(net.embed, loader, with_labels=True)
    assert batched.shape == (10, 16)
    assert torch.allclose(whole, batched, atol=1e-6)
    assert torch.equal(labels, y)
    assert net.training  # eval only for the pass
    net.eval()
    assert torch.allclose(whole, net.embed(x), atol=1e-6)  # dropout was off
    half = extract_features(net.body, [x], dtype=torch.float16)  # a module used as embed
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), whole, atol=1e-2)
    with pytest.raises(ValueError, match="features"):
        extract_features(net, [x])  # forward gives (N,) here, not features


@pytest.mark.parametrize("chunk", [1000, 7, 1])
def test_nearest_neighbours_matches_brute_force(chunk):
    g = torch.Generator().manual_seed(0)
    queries, database = torch.randn(5, 12, generator=g), torch.randn(40, 12, generator=g)
    dist, idx = nearest_neighbours(queries, database, k=6, chunk=chunk)
    full = torch.cdist(queries.double(), database.double())
    expected = full.argsort(dim=1)[:, :6]
    assert torch.equal(idx, expected)
    assert torch.allclose(dist.double(), full.gather(1, expected), atol=1e-4)


def test_nearest_neighbours_finds_itself_and_checks_k():
    database = torch.randn(20, 8)
    dist, idx = nearest_neighbours(database[[3, 11]], database, k=2, chunk=6)
    assert idx[:, 0].tolist() == [3, 11]
    assert torch.all(dist[:, 0] < 1e-3)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(database[:1], database, k=21)


def test_neighbours_figure_png_size(tmp_path):
    out = neighbours_figure(
        uint8_images(3, 16, 16),
        uint8_images(3, 6, 16, 16, seed=1),
        tmp_path / "nn.png",
        query_labels=[0, 1, 2],
        neighbour_labels=np.zeros((3, 6), int),
        class_names=["a", "b", "c"],
    )
    assert png_shape(out) == (3 * 150, 7 * 125)
    bare = neighbours_figure(uint8_images(1, 8, 8), uint8_images(1, 2, 8, 8), tmp_path / "b.png")
    assert png_shape(bare) == (150, 3 * 125)


# ---- confusion matrix ----------------------------------------------------------------------------


def test_per_class_error_hand_computed():
    confmat = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    rows = per_class_error(confmat, ["cat", "dog", "emu"])
    assert [r["class"] for r in rows] == ["cat", "dog", "emu"]
    assert [r["n"] for r in rows] == [10, 4, 0]
    assert rows[0]["top1_err"] == pytest.approx(0.2)
    assert rows[1]["top1_err"] == pytest.approx(0.25)
    assert math.isnan(rows[2]["top1_err"])
    assert per_class_error(np.eye(2, dtype=int))[1] == {"class": "1", "n": 1, "top1_err": 0.0}


@pytest.mark.parametrize("c,normalize", [(4, True), (4, False), (40, True)])
def test_confusion_figure_png_size(tmp_path, c, normalize):
    confmat = np.random.default_rng(c).integers(0, 20, (c, c)) + 30 * np.eye(c, dtype=int)
    confmat[0] = 0  # a class with no samples must not divide by zero
    out = confusion_figure(confmat, [f"c{i}" for i in range(c)], tmp_path / "cm.png", normalize)
    assert png_shape(out) == (700, 800)


# ---- learning curves -----------------------------------------------------------------------------

SPARSE_CSV = """\
epoch,step,train/loss,train/lr,val/loss,val/top1_err,val/top5_err,train/top1_err
0,0,2.30,0.01,,,,
0,1,2.10,0.01,,,,
0,1,,,2.00,0.80,0.40,
0,1,,,,,,0.75
1,2,1.90,0.01,,,,
1,3,1.70,0.001,,,,
1,3,,,1.80,0.70,0.30,
1,3,,,,,,0.65
"""


def test_read_metrics_csv_sparse_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(SPARSE_CSV + ",,,,,,,\n")  # a row with nothing in it is ignored
    m = read_metrics_csv(path)
    assert set(m) == {
        "train/loss",
        "train/lr",
        "val/loss",
        "val/top1_err",
        "val/top5_err",
        "train/top1_err",
    }
    assert m["train/loss"] == [(0, 0, 2.3), (0, 1, 2.1), (1, 2, 1.9), (1, 3, 1.7)]
    assert m["val/top1_err"] == [(0, 1, 0.8), (1, 3, 0.7)]


def test_learning_curves_png_size(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(SPARSE_CSV)
    assert png_shape(learning_curves(csv_path, tmp_path / "curves.png")) == (400, 1200)
    # Only some columns, no epoch column, LearningRateMonitor naming: still plots.
    partial = tmp_path / "partial.csv"
    partial.write_text("step,train/loss_step,lr-SGD\n0,2.3,0.01\n1,2.2,\n1,,0.01\n")
    assert png_shape(learning_curves(partial, tmp_path / "partial.png")) == (400, 1200)


def test_learning_curves_without_usable_rows_names_the_file(tmp_path):
    empty = tmp_path / "empty_metrics.csv"
    empty.write_text("epoch,step,train/loss,val/top1_err\n0,0,,\n")
    with pytest.raises(ValueError, match="empty_metrics.csv"):
        learning_curves(empty, tmp_path / "x.png")
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match="blank.csv"):
        learning_curves(blank, tmp_path / "y.png")
