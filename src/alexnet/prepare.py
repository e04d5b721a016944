"""Get a dataset ready: `python -m alexnet.prepare data=cifar10|imagenet [data.download=true]`.

Downloads what can be downloaded (CIFAR-10), decodes and caches CIFAR-10, and computes the
training set's mean image and RGB eigen-decomposition (for PCA lighting) into
`<data root>/<dataset>/stats.npz`, recomputing it even when a cached copy exists.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from alexnet.config import CONF_DIR
from alexnet.config.entry import one_line_errors
from alexnet.config.validate import validate_config


def prepare(cfg: DictConfig) -> str:
    validate_config(cfg, "data")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    stats = datamodule.compute_stats()
    datamodule.save_stats(stats)
    eig = ", ".join(f"{v:.4f}" for v in stats.eigval)
    return (
        f"{datamodule.stats_path}: mean image {stats.mean_image.shape}, "
        f"RGB eigenvalues ({eig}) over {stats.count} images"
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        print(prepare(cfg))


if __name__ == "__main__":
    main()
