"""Write ImageNet's JPEG store: `python -m alexnet.prepare_store data=imagenet [key=value ...]`.

Once per dataset: every train and val image through the paper's preprocessing (shorter side to
`data.image_size`, central square), re-encoded as a JPEG of `data.store_quality`, into
`<data root>/imagenet/store/` (see `alexnet.data.store`), using `data.num_workers` processes.
A split whose store already holds as many images, at the same size, is skipped (`+force=true`
redoes it). Then train with `data.store=true`. Files are opened as training opens them: a file
training would skip is stored as its replacement, and each split's line counts them.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from alexnet.config import CONF_DIR
from alexnet.config.entry import one_line_errors
from alexnet.data.folder import DataError, index_folder
from alexnet.data.imagenet import HOW_TO_GET, ImageNetDataModule
from alexnet.data.images import SKIPPED, count_kinds
from alexnet.data.store import JpegStore, store_folder, write_store

log = logging.getLogger(__name__)


def prepare_store(cfg: DictConfig) -> list[str]:
    """Write (or skip) the train and val stores; returns one summary line per split."""
    datamodule = hydra.utils.instantiate(cfg.data)
    if not isinstance(datamodule, ImageNetDataModule):
        raise ValueError("the JPEG store is for ImageNet: run with data=imagenet")
    folder = store_folder(datamodule.folder)
    lines = []
    for split in ("train", "val"):
        index = index_folder(datamodule.folder / split, HOW_TO_GET)
        if not cfg.get("force") and _complete(folder, split, len(index), datamodule.image_size):
            lines.append(f"{folder / split}.jpegs: up to date ({len(index)} images), skipped")
            continue
        start = time.perf_counter()
        write_store(
            index,
            folder,
            split,
            size=datamodule.image_size,
            quality=datamodule.store_quality,
            workers=datamodule.num_workers,
            max_pixels=datamodule.max_pixels,
        )
        store = JpegStore(folder, split)
        seconds = time.perf_counter() - start
        lines.append(
            f"{store.path}: {len(store)} images, {store.offsets[-1] / 2**30:.2f} GiB, "
            f"{len(store) / seconds:.0f} img/s{_problems(store.flags)}"
        )
    return lines


def _problems(flags) -> str:
    """What the split's files needed, for its summary line ('' when nothing)."""
    counts = count_kinds(flags)

    def listed(kinds: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in kinds.items())

    skipped = {k: n for k, n in counts.items() if k in SKIPPED}
    converted = {k: n for k, n in counts.items() if k not in SKIPPED}
    text = ""
    if skipped:  # one kind per unusable file, so the counts add up to the files
        text += (
            f"; {sum(skipped.values())} unusable files stored as the next usable image "
            f"({listed(skipped)})"
        )
    if converted:
        text += f"; converted: {listed(converted)}"
    return text


def _complete(folder, split: str, count: int, size: int) -> bool:
    try:
        store = JpegStore(folder, split)
    except DataError:
        return False
    return len(store) == count and store.size == size


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        for line in prepare_store(cfg):
            print(line)


if __name__ == "__main__":
    main()
