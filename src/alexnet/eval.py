"""Evaluate a checkpoint: `python -m alexnet.eval ckpt_path=PATH [aug=paper aug.eval=ten_crop]
[split=val|both]`.

The network comes back from the checkpoint alone (its hyper-parameters rebuild it); the data and
the test-time augmentation come from the config, so the same checkpoint can be scored with a
centre crop or the paper's ten crops. Prints the errors and writes `eval.json` in the run dir.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from alexnet.config import CONF_DIR
from alexnet.config.entry import build_data, one_line_errors
from alexnet.config.hardware import resolve_auto
from alexnet.config.validate import validate_config
from alexnet.training.module import Classifier

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Scores of `cfg.ckpt_path` on the chosen split(s); returns what `eval.json` holds."""
    resolve_auto(cfg)
    validate_config(cfg, "eval")  # before any data or model work; checks the checkpoint too
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed)
    ckpt_path = cfg.ckpt_path
    datamodule = build_data(cfg)
    # weights_only: loading a checkpoint never runs code from it (alexnet.training.checkpoints).
    module = Classifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    splits = ["val", "test"] if cfg.split == "both" else [cfg.split]
    metrics: dict[str, float] = {}
    for split in splits:
        if split == "val":
            # The validation loop logs val/*; `test` on the val loader would rename them test/*.
            out = trainer.validate(module, datamodule=datamodule)
        else:
            out = trainer.test(module, datamodule=datamodule)
        metrics.update({k: float(v) for k, v in out[0].items()})
    results = {
        "ckpt_path": str(Path(ckpt_path).resolve()),
        "eval": OmegaConf.to_container(cfg.aug, resolve=True).get("eval", "center"),
        "metrics": metrics,
        "bad_images": datamodule.bad_images(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (output_dir / "eval.json").write_text(json.dumps(results, indent=2))
    for name, value in sorted(metrics.items()):
        print(f"{name}: {value:.4f}")
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    with one_line_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
