"""The keys of each entry point's config and their types, declared once as Hydra schemas.

Each entry config (`conf/train.yaml`, `eval.yaml`, `figures.yaml`, `bench.yaml`) lists its schema
first in its defaults (`schema_train`, ...), so Hydra checks types at composition: `seed=one`
or `test=maybe` stop there with Hydra's own message naming the key. The values stay in the YAML
files; the fields here are `MISSING` and only say what may be there. They are registered in
Hydra's ConfigStore when this module is imported, which `hydra_plugins.alexnet_schemas` does
whenever Hydra composes.

A group (`data`, `model`, `optim`, ...) is typed `Any` here: its owner checks it. Hydra-built
nodes (`optim`, `sched`, `trainer`, each `callbacks.<name>` and `logger.<name>`) are checked
against the signature of their `_target_`, a misspelt key named with the closest one, and
`model`/`data`/`aug` by the constructors they reach (`alexnet.config.validate`).

Hydra's `+key=value` adds a key even to a schema'd config, so a typo such as `+optimizer.lr=0.1`
(for `optim.lr`) would be carried along and ignored; `unknown_key` finds such keys by comparing
the composed config with these declarations, and `alexnet.config.validate` refuses them.
"""

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Split(StrEnum):
    """What `python -m alexnet.eval` scores: the test split, the validation split or both."""

    test = "test"
    val = "val"
    both = "both"


@dataclass
class Paths:
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str | None = MISSING


@dataclass
class Figures:
    enabled: bool = MISSING
    kernels_every_n_epochs: int = MISSING
    examples: int = MISSING
    queries: int = MISSING
    neighbours: int = MISSING
    train_images: Any = MISSING  # auto | a count | null (all)
    test_images: int | None = MISSING
    device: str = MISSING
    seed: int = MISSING


@dataclass
class Entry:
    """What every entry config holds."""

    task_name: str = MISSING
    paths: Paths = field(default_factory=Paths)
    data: Any = MISSING


@dataclass
class Train(Entry):
    tags: list[str] = field(default_factory=list)
    seed: int = MISSING
    ckpt_path: str | None = MISSING
    test: bool = MISSING
    compile: bool = MISSING
    lr_find: bool = MISSING
    channels_last: Any = MISSING  # auto | true | false
    optimized_metric: str | None = MISSING
    objective_if_failed: float | None = MISSING
    figures: Figures = field(default_factory=Figures)
    model: Any = MISSING
    aug: Any = MISSING
    optim: Any = MISSING
    sched: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING


@dataclass
class Eval(Entry):
    ckpt_path: str = MISSING
    split: Split = MISSING
    seed: int = MISSING
    aug: Any = MISSING
    trainer: Any = MISSING
    figures: Any = None  # set by debug presets for training (debug=limit); evaluation ignores it


@dataclass
class FiguresEntry(Entry):
    ckpt_path: str = MISSING
    out_dir: str | None = MISSING
    seed: int = MISSING
    figures: Figures = field(default_factory=Figures)
    aug: Any = MISSING
    logger: Any = MISSING


@dataclass
class Bench(Entry):
    device: str = MISSING
    profile: str = MISSING
    sections: list[str] = MISSING
    compile: bool = MISSING
    output: str | None = MISSING
    only: list[str] | None = MISSING
    model: Any = MISSING
    profiles: Any = MISSING
    variants: Any = MISSING
    loop: Any = MISSING
    input: Any = MISSING
    cpu_train: Any = MISSING


SCHEMAS = {"train": Train, "eval": Eval, "figures": FiguresEntry, "bench": Bench}

for _name, _node in SCHEMAS.items():
    ConfigStore.instance().store(name=f"schema_{_name}", node=_node)


def unknown_key(cfg: Mapping[str, Any], schema: type, prefix: str = "") -> str | None:
    """One line naming the first key of `cfg` that `schema` does not declare, with the closest
    declared key as the likely fix; None when every key is declared."""
    declared = {f.name: f.type for f in fields(schema)}
    for key in cfg:
        if key not in declared:
            # a declared key that begins the unknown one (optimizer: optim) first, else the
            # closest spelling
            close = sorted((k for k in declared if str(key).startswith(k)), key=len)[-1:]
            close = close or difflib.get_close_matches(str(key), declared, n=1)
            fix = f"did you mean {prefix}{close[0]}?" if close else "remove it"
            return (
                f"{prefix}{key} is not a setting of {prefix.rstrip('.') or 'this config'} "
                f"({', '.join(sorted(declared))}); {fix}"
            )
        sub = declared[key]
        if is_dataclass(sub) and isinstance(cfg[key], Mapping):
            found = unknown_key(cfg[key], sub, f"{prefix}{key}.")
            if found:
                return found
    return None
