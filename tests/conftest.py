"""Shared fixtures: compose the real Hydra configs, build tiny datasets on disk, and switch
Triton's CPU interpreter on or off for one test (tests/kernels)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Before anything imports albumentations or wandb: no update checks, no network, no prompts.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet import long_lived_imports  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
REAL_DATA = Path(os.environ.get("DATA_DIR", REPO / "data"))
HAS_TRITON = importlib.util.find_spec("triton") is not None

# Keep CPU tests on the cores CI has, shared between pytest-xdist's workers (`make test` runs
# one per core): more threads than cores only slows them down.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


def pytest_collection_modifyitems(config, items):
    """The real-data tests first, the rest in file order. Each takes minutes: in a run of the
    whole suite on several workers (which take it in order), one started last would run alone
    at the end while the other workers sit idle. `make test` leaves them out."""
    items.sort(key=lambda item: item.get_closest_marker("real_data") is None)


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The real config as Hydra composes it, with the run dir set (no HydraConfig in tests)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    def make(overrides: list[str], name: str = "train", output_dir: Path | None = None):
        return compose_config(name, overrides, output_dir or tmp_path / "run")

    return make


def write_jpegs(folder: Path, classes: list[str], per_class: int, size, seed: int = 0) -> None:
    """Class-coloured noisy JPEGs, `size` either an int or a list of (w, h) cycled over files."""
    rng = np.random.default_rng(seed)
    sizes = [(size, size)] if isinstance(size, int) else list(size)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = np.array([40 + 50 * (c % 4), 200 - 40 * (c % 3), 60 + 30 * c]) % 256
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            pixels = np.clip(colour + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:04d}.jpg", quality=90)


CIFAR_CLASSES = [
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


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory) -> Path:
    """A data root holding cifar10/{train,test}/<class>/*.jpg like the shared archive, tiny."""
    root = tmp_path_factory.mktemp("cifar_root")
    write_jpegs(root / "cifar10" / "train", CIFAR_CLASSES, per_class=24, size=32, seed=0)
    write_jpegs(root / "cifar10" / "test", CIFAR_CLASSES, per_class=6, size=32, seed=1)
    return root


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory) -> Path:
    """imagenet/{train,val}/<wnid>/*.JPEG with mixed sizes (some under 256), a grayscale and a
    CMYK file, and a name with a space and an apostrophe, as real ImageNet folders have."""
    root = tmp_path_factory.mktemp("imagenet_root")
    wnids = ["n01440764", "n01443537", "n01484850"]
    sizes = [(300, 260), (180, 240), (256, 256), (500, 333)]
    write_jpegs(root / "imagenet" / "train", wnids, per_class=4, size=sizes, seed=2)
    write_jpegs(root / "imagenet" / "val", wnids, per_class=2, size=sizes, seed=3)
    odd = root / "imagenet" / "train" / wnids[0]
    gray = (np.random.default_rng(4).uniform(0, 255, (200, 270))).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(odd / "gray scale.JPEG")
    Image.new("CMYK", (280, 300), (10, 200, 30, 40)).save(odd / "it's cmyk.JPEG")
    return root


# Here rather than in tests/kernels/conftest.py: tests import this file as `conftest`, and a
# second conftest.py would shadow it. alexnet.kernels is imported inside the fixtures so that
# runs which do not use them never import triton.
@pytest.fixture
def interpret(monkeypatch):
    """TRITON_INTERPRET=1 for one test: the Triton kernels run on CPU tensors."""
    from alexnet.kernels import lrn as klrn

    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert klrn._interpreting()


@pytest.fixture
def no_interpret(monkeypatch):
    from alexnet.kernels import lrn as klrn

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not klrn._interpreting()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    # Collection imports torch, Lightning and every test module, which live as long as this
    # process: what the entry points do around their import (~10% less CPU in-process).
    with long_lived_imports():
        return (yield)
