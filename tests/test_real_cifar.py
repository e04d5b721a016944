"""AlexNet-CIFAR on the real CIFAR-10 for a bounded number of CPU steps: it must learn."""

from __future__ import annotations

import pytest

from alexnet.training.run import train
from conftest import REAL_DATA

STEPS = 200


# The suite's longest test, run on its own by `make test-real-data` (docs/tests.md): 200
# AlexNet-CIFAR steps at batch 64 and a 2,560-image test. Kept at this size: at batch 32 it reached
# 0.781 top-1 error, after 150 steps 0.816 and after 100 steps 0.81, too near the 0.82 bound below
@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(
    not (REAL_DATA / "cifar10" / "train").is_dir()
    and not (REAL_DATA / "cifar10" / "cifar-10-batches-py").is_dir(),
    reason=f"no CIFAR-10 under {REAL_DATA} (extract the shared archive into data/)",
)
def test_alexnet_cifar_learns_on_real_cifar10(cfg_factory):
    cfg = cfg_factory(
        [
            "experiment=cifar10_alexnet",
            f"paths.data_dir={REAL_DATA}",
            "data.download=false",
            "data.batch_size=64",
            "data.num_workers=1",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={STEPS}",
            "+trainer.limit_val_batches=10",
            "+trainer.limit_test_batches=40",
            "logger.wandb=null",
            "callbacks.progress_bar=false",
            "figures.enabled=false",  # the figure pass over 45k images would triple the test's time
        ]
    )
    results = train(cfg)
    print(
        "real CIFAR-10 after",
        STEPS,
        "steps:",
        {k: round(v, 4) for k, v in results["metrics"].items()},
    )
    assert results["steps"] == STEPS
    # Chance is 0.90 top-1 / 0.50 top-5 on 10 balanced classes; the test set is 2,560 images.
    # Measured: test top-1/top-5 error 0.760 / 0.180 after these 200 steps on 2 threads (0.754 /
    # 0.195 on one).
    assert results["metrics"]["test/top1_err"] < 0.82
    assert results["metrics"]["test/top5_err"] < 0.40
