"""Scan a dataset for images training would skip or convert, without training.

    python -m alexnet.check_data data=imagenet [paths.data_dir=...] [data.num_workers=16]
    make check-data DATA=imagenet

Every image of every split folder is opened and decoded as training would (alexnet.data.images),
in `data.num_workers` processes. Files training would skip are listed one per line; converted
ones (grayscale, CMYK, ...) are counted, with a few examples. CIFAR-10's python batches are
checked against their official MD5s instead. The full list goes to `check_data.json` in the run
directory. Exit status: 0 when every file is usable, 1 when some would be skipped, 2 for errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from alexnet.config import CONF_DIR
from alexnet.config.entry import one_line_errors
from alexnet.config.validate import validate_config
from alexnet.data.folder import DataError, index_folder
from alexnet.data.images import (
    CONVERTED,
    MAX_PIXELS,
    SKIPPED,
    BadImage,
    count_kinds,
    flags_of,
    kinds_of,
    open_rgb,
)

EXAMPLES = 5  # converted files listed per kind on the terminal (all of them in the json)


class _Scan(Dataset):
    def __init__(self, paths: list[Path], max_pixels: int) -> None:
        self.paths, self.max_pixels = paths, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, int, str]:
        try:
            _, notes = open_rgb(self.paths[i], self.max_pixels)
            return i, flags_of(notes), ""
        except BadImage as bad:
            return i, flags_of([bad.kind]), bad.detail


def scan(paths: list[Path], max_pixels: int = MAX_PIXELS, workers: int = 0) -> list[dict]:
    """[{"path", "kinds", "detail"}] for every file showing any kind, in index order."""
    loader = DataLoader(
        _Scan(paths, max_pixels), batch_size=64, num_workers=workers, collate_fn=list
    )
    found = []
    for batch in loader:
        for i, flags, detail in batch:
            if flags:
                found.append({"path": str(paths[i]), "kinds": kinds_of(flags), "detail": detail})
    return found


def check_data(cfg: DictConfig) -> dict[str, Any]:
    """Scan the dataset `cfg.data` points at; returns (and prints) the report."""
    validate_config(cfg, "data")
    datamodule = hydra.utils.instantiate(cfg.data)
    folder = getattr(datamodule, "folder", None)
    report: dict[str, Any] = {"dataset": datamodule.name, "folder": str(folder), "splits": {}}
    if folder is None:
        print(f"{datamodule.name}: generated in memory, nothing on disk to check")
        return report
    batches = Path(folder) / "cifar-10-batches-py"
    if batches.is_dir():
        from alexnet.data.download import verify_batches

        verify_batches(batches)  # raises DataError naming a bad file
        print(f"{batches}: every batch file matches its official MD5")
        report["splits"]["cifar-10-batches-py"] = {"images": 60000, "skipped": {}, "files": []}
        return report
    max_pixels = int(getattr(datamodule, "max_pixels", MAX_PIXELS))
    splits = [s for s in ("train", "val", "test") if (Path(folder) / s).is_dir()]
    if not splits:
        raise DataError(f"{folder} holds no train/, val/ or test/ folder to check")
    for split in splits:
        index = index_folder(Path(folder) / split, "see the data section of the README")
        found = scan(index.paths, max_pixels, datamodule.num_workers)
        report["splits"][split] = summarise(Path(folder) / split, len(index), found)
    return report


def summarise(folder: Path, total: int, found: list[dict]) -> dict[str, Any]:
    skipped = [f for f in found if any(k in SKIPPED for k in f["kinds"])]
    counts = count_kinds(np.array([flags_of(f["kinds"]) for f in found], dtype=np.int16))
    converted = {k: n for k, n in counts.items() if k in CONVERTED}
    print(
        f"{folder}: {total} images, {len(skipped)} would be skipped, "
        f"{len(found) - len(skipped)} converted"
    )
    for f in skipped:
        print(f"  skip  {'+'.join(f['kinds']):<14} {f['path']}  ({f['detail']})")
    for kind, n in converted.items():
        examples = [f["path"] for f in found if kind in f["kinds"]][:EXAMPLES]
        print(f"  ok    {kind:<14} {n} file(s), e.g. {', '.join(examples)}")
    return {
        "images": total,
        "skipped": {k: n for k, n in counts.items() if k in SKIPPED},
        "converted": converted,
        "files": found,
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with one_line_errors():  # a mistake ends the process here, with one line
        report = check_data(cfg)
    out = Path(cfg.paths.output_dir) / "check_data.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out}")
    if any(split["skipped"] for split in report["splits"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
