"""Check a composed config before any data is read or any model is built.

A typo found after the dataset was decoded, or after the first epoch (a misspelt monitor key is
only looked up when the first checkpoint is due), costs minutes to hours. `validate_config` runs
first in `train`, `evaluate` and `check_data` and raises `ConfigError` with one line naming the key,
its value, what is wrong and how to fix it.

Besides explicit checks of types and ranges, it builds the cheap objects the run will build, so
that their own argument checks speak early: the data module (constructors read nothing), the
augmentation presets applied to one blank image of the data's size, the network on PyTorch's
`meta` device (no memory, no compute) fed that image's shape, and the optimizer and scheduler on a
dummy parameter. Unknown group choices (`data=imagenett`) and unknown keys (`data.batchsize=1`)
are refused by Hydra itself, before this runs.

`paths.log_dir` is checked earlier, before Hydra creates the run directory in it
(`alexnet.config.log_dir`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from alexnet.config import ConfigError
from alexnet.config.log_dir import unwritable
from alexnet.config.schema import SCHEMAS, unknown_key
from alexnet.training.checkpoints import CheckpointError, check_checkpoint
from alexnet.training.multirun import sweep_dir_of_job

MISSING = object()
STAGES = ("train", "eval", "data")
# What alexnet.training.module logs (and so what a checkpoint or scheduler can monitor).
METRICS = {
    f"{stage}/{name}" for stage in ("train", "val") for name in ("loss", "top1_err", "top5_err")
} | {"train/lr", "train/img_per_s"}
PRECISIONS = {
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "16",
    "32",
    "64",
    "bf16",
    16,
    32,
    64,
    "auto",
}  # auto: alexnet.config.hardware
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def validate_config(cfg: DictConfig, stage: str = "train") -> None:
    """Raise ConfigError for the first problem found in `cfg` (train, eval or data config)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: use one of {STAGES}")
    c = _resolve(cfg)
    _Checks(c, stage).run()


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = err.full_key or "a value"
        hint = " ckpt_path=path/to/checkpoint.ckpt" if key == "ckpt_path" else f" {key}=..."
        raise ConfigError(f"{key} is required; give it on the command line:{hint}") from None
    except OmegaConfBaseException as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{err.full_key or 'the config'} cannot be resolved: {first}") from None


def _prefixed(prefix: str, err: Exception) -> str:
    """`knob=value ...` messages from the code named by their config key (`model.knob=...`)."""
    text = " ".join(str(err).split())
    if text.startswith(f"{prefix}."):
        return text
    return f"{prefix}.{text}" if re.match(r"^[a-z_]\w*=", text) else f"{prefix}: {text}"


class _Checks:
    def __init__(self, c: dict[str, Any], stage: str) -> None:
        self.c, self.stage = c, stage
        self.datamodule: Any = None
        self.checkpoint: dict[str, Any] | None = None

    def run(self) -> None:
        self.top_level()
        if self.stage != "data":
            self.output_dir()
            self.ckpt_path()
        self.data()
        if self.stage == "train":
            self.optim_and_sched()
        if self.stage != "data":
            self.trainer()
        self.model_and_aug()
        if self.stage == "train":
            self.callbacks()
            self.loggers()

    # -- helpers ---------------------------------------------------------------------------
    def get(self, key: str, default: Any = MISSING) -> Any:
        node: Any = self.c
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def fail(self, key: str, problem: str, fix: str = "") -> ConfigError:
        value = self.get(key, None)
        return ConfigError(f"{key}={value!r} {problem}" + (f"; {fix}" if fix else ""))

    def integer(self, key: str, minimum: int | None = None, allow: tuple = ()) -> None:
        value = self.get(key)
        if value is MISSING or value in allow:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be a whole number")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be >= {minimum}")

    def number(
        self,
        key: str,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        value = self.get(key)
        if value is MISSING or value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "must be a number")
        if low is not None and (value <= low if low_open else value < low):
            raise self.fail(key, f"must be {'>' if low_open else '>='} {low}")
        if high is not None and (value >= high if high_open else value > high):
            raise self.fail(key, f"must be {'<' if high_open else '<='} {high}")

    def boolean(self, key: str) -> None:
        value = self.get(key)
        if value is not MISSING and not isinstance(value, bool):
            raise self.fail(key, "must be true or false")

    def choice(self, key: str, options: tuple) -> None:
        value = self.get(key)
        if value is not MISSING and value not in options:
            raise self.fail(key, f"is unknown; choose one of {', '.join(map(str, options))}")

    def kwargs_of(self, group: str, extra: tuple = ()) -> type | Callable:
        """The `_target_` of `group`, after checking the group's keys are its arguments."""
        spec = self.get(group)
        target = spec.get("_target_") if isinstance(spec, Mapping) else None
        if not isinstance(target, str):
            raise ConfigError(f"{group}._target_ is missing; the {group} group needs one")
        obj = _import(target, group)
        accepted, open_ended = _parameters(obj)
        unknown = sorted(
            k for k in spec if not k.startswith("_") and k not in accepted and k not in extra
        )
        if unknown and not open_ended:
            accepted -= {"self"}
            close = difflib.get_close_matches(unknown[0], accepted, n=1)
            takes = "it takes " + ", ".join(sorted(accepted))
            fix = f"did you mean {group}.{close[0]}?" if close else takes
            raise ConfigError(f"{group}.{unknown[0]} is not a setting of {target}; {fix}")
        return obj

    # -- sections --------------------------------------------------------------------------
    def top_level(self) -> None:
        # Types and choices Hydra checked at composition (alexnet.config.schema); a key added with
        # `+key=value` got past it and would be ignored.
        problem = unknown_key(self.c, SCHEMAS["eval" if self.stage == "eval" else "train"])
        if problem:
            raise ConfigError(problem)
        if self.get("channels_last") != "auto":
            self.boolean("channels_last")
        if self.stage == "train" and self.get("lr_find", False):
            self.lr_find()

    def lr_find(self) -> None:
        """The range test starts from the initial weights and stops the run after it."""
        if self.get("trainer.fast_dev_run", False):
            raise self.fail("lr_find", "finds nothing under trainer.fast_dev_run", "drop one")
        if self.get("ckpt_path", None) is not None:
            raise self.fail(
                "lr_find",
                "tests rates from the initial weights and never resumes",
                "drop ckpt_path",
            )
        if sweep_dir_of_job() is not None:
            raise self.fail("lr_find", "stops after the range test", "run it alone, not in a sweep")

    def output_dir(self) -> None:
        out = self.get("paths.output_dir", None)
        if out is None:
            return
        problem = unwritable("paths.output_dir", out)
        if problem is not None:
            raise ConfigError(problem[0])

    def ckpt_path(self) -> None:
        path = self.get("ckpt_path", None)
        if path is None and self.stage == "eval":
            raise ConfigError("ckpt_path is required; give ckpt_path=path/to/checkpoint.ckpt")
        if path is not None:
            purpose = "eval" if self.stage == "eval" else "resume"
            try:
                self.checkpoint = check_checkpoint(path, purpose)
            except CheckpointError as err:
                raise ConfigError(str(err)) from None

    def data(self) -> None:
        cls = self.kwargs_of("data", extra=("aug",))
        for key in ("batch_size", "num_classes"):
            self.integer(f"data.{key}", 1)
        self.integer("data.eval_batch_size", 1, allow=(None,))
        self.integer("data.num_workers", 0)
        for key in ("val_size", "stats_images", "split_seed"):
            self.integer(f"data.{key}", 0)
        self.integer("data.image_size", 1, allow=(None,))  # null: original sizes (VGG jitter)
        for key in ("max_pixels", "train_size", "test_size"):
            self.integer(f"data.{key}", 1)
        for key in ("download", "pin_memory"):
            self.boolean(f"data.{key}")
        kwargs = {k: v for k, v in self.get("data").items() if not k.startswith("_")}
        try:
            self.datamodule = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(_prefixed("data", err)) from None
        self.data_on_disk()

    def data_on_disk(self) -> None:
        dm, c = self.datamodule, self.c
        folder = getattr(dm, "folder", None)
        if folder is None:  # synthetic data: nothing on disk
            return
        root = Path(dm.root)
        if not root.exists() and not getattr(dm, "download", False):
            raise ConfigError(
                f"data.root={root} does not exist, so {folder} cannot hold the data; point "
                f"DATA_DIR or paths.data_dir at the folder that holds {dm.name}/"
                + (" (or set data.download=true)" if "download" in c["data"] else "")
            )
        found = _classes_on_disk(Path(folder))
        if found is not None and found != dm.num_classes:
            raise self.fail(
                "data.num_classes",
                f"but {folder} holds {found} classes",
                f"set data.num_classes={found}",
            )

    def model_and_aug(self) -> None:
        model = self.get("model", None)
        if model is None and self.checkpoint is not None:  # eval: the checkpoint's network
            model = dict(self.checkpoint["hyper_parameters"]["model"])
        if model is not None and self.stage != "eval":
            classes = self.get("data.num_classes", None)
            if model.get("num_classes") != classes:
                raise self.fail(
                    "model.num_classes",
                    f"but data.num_classes={classes}",
                    "leave model.num_classes at ${data.num_classes}",
                )
        shapes = self.aug_shapes()
        if model is None:
            return
        net = self.meta_model(model)
        dense = self.get("aug.eval", None) == "dense"  # whole images through net.dense_scores
        if dense and shapes and not hasattr(net, "dense_scores"):
            raise self.fail(
                "aug.eval",
                f"needs a network with dense evaluation (model vgg or vgg_cifar), not "
                f"{model.get('name')!r}",
                "use aug.eval=center",
            )
        for what, shape in shapes:
            forward = net.dense_scores if dense and what == "eval" else net
            try:
                with torch.device("meta"):
                    forward(torch.empty(2, *shape))
            except Exception as err:
                raise ConfigError(
                    f"aug.crop={self.get('aug.crop', None)!r} gives {what} inputs of "
                    f"{shape[-2]}x{shape[-1]} pixels, which model {model.get('name')!r} cannot "
                    f"take ({str(err).splitlines()[0]}); {self.input_size_fix(net, shape)}"
                ) from None

    def input_size_fix(self, net: torch.nn.Module, shape: tuple[int, ...]) -> str:
        """How to give `net` inputs it can take: the recipes for the size it is built for."""
        fixes = {
            32: "it is built for 32-pixel crops: use data=cifar10 aug=cifar (or a network for "
            "224-pixel ImageNet crops such as model=alexnet)",
            224: "it is built for 224-pixel crops: use data=imagenet aug=paper or "
            "experiment=paper_imagenet (or model=alexnet_cifar for CIFAR-10's 32-pixel crops)",
        }
        for size, fix in fixes.items():
            if size == shape[-1]:
                continue
            try:
                with torch.device("meta"):
                    net(torch.empty(2, shape[0], size, size))
            except Exception:
                continue
            return fix
        return "use the input size it is built for"

    def meta_model(self, model: dict[str, Any]) -> torch.nn.Module:
        from alexnet.models import build_model

        spec = dict(model)
        # How to initialise is a training choice, not a network argument (build_module pops it).
        init_from = spec.pop("init_from", None)
        if init_from is not None:
            try:
                check_checkpoint(init_from, "eval")
            except CheckpointError as err:
                raise ConfigError(str(err).replace("ckpt_path=", "model.init_from=", 1)) from None
        try:
            with torch.device("meta"):
                return build_model(**spec)
        except (TypeError, ValueError) as err:
            raise ConfigError(_prefixed("model", err)) from None

    def aug_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(train or eval, CHW shape) the presets make of an image of the data's size."""
        from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, DatasetStats

        if self.get("aug", None) is None:
            return []
        cls = self.kwargs_of("aug")
        spec = {k: v for k, v in self.get("aug").items() if not k.startswith("_")}
        try:
            aug = cls(**spec)
        except (TypeError, ValueError) as err:
            raise ConfigError(_prefixed("aug", err)) from None
        size = getattr(self.datamodule, "image_size", None)
        if size is None:
            return []
        stats = DatasetStats(
            np.zeros((size, size, 3), np.float32), IMAGENET_EIGVAL, IMAGENET_EIGVEC, 0
        )
        blank = np.zeros((size, size, 3), np.uint8)
        try:
            train, evaluate = aug.presets(stats)
            shapes = [("train", _shape(train(blank))), ("eval", _shape(evaluate(blank)))]
        except (TypeError, ValueError) as err:
            raise ConfigError(_prefixed("aug", err)) from None
        self.batched_twins(aug.name, train, evaluate)
        return [(what, shape[-3:]) for what, shape in shapes]

    def batched_twins(self, name: str, *presets: Any) -> None:
        """The fast loaders augment whole batches on the device: each preset needs a twin."""
        fast = [k for k in ("data.gpu_resident", "data.store") if self.get(k, False) is True]
        if not fast:
            return
        from alexnet.data.augment.batched import batch_transform_of

        for preset in presets:
            try:
                batch_transform_of(preset)
            except TypeError:
                mode = self.get("aug.eval", None)
                raise ConfigError(
                    f"aug={name}"
                    + (f" (aug.eval={mode})" if mode else "")
                    + f" has no batched version, which {fast[0]}=true needs (it augments whole "
                    f"batches on the device); use {fast[0]}=false, or aug=paper, cifar or none"
                ) from None

    def optim_and_sched(self) -> None:
        self.kwargs_of("optim")
        self.number("optim.lr", 0, low_open=True)
        self.number("optim.momentum", 0, 1, high_open=True)
        self.number("optim.weight_decay", 0)
        from hydra.utils import instantiate

        param = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = instantiate(self.get("optim"))([param])
        except Exception as err:
            raise ConfigError(_prefixed("optim", _cause(err))) from None
        sched = self.get("sched", None)
        if not isinstance(sched, Mapping) or "_target_" not in sched:
            return
        self.kwargs_of("sched")
        self.integer("sched.T_max", 1)
        self.number("sched.factor", 0, 1, low_open=True, high_open=True)
        self.integer("sched.patience", 0)
        try:
            instantiate(sched)(optimizer)
        except Exception as err:
            raise ConfigError(_prefixed("sched", _cause(err))) from None

    def trainer(self) -> None:
        if self.get("trainer", None) is None:
            return
        self.kwargs_of("trainer", extra=("logger", "callbacks", "enable_progress_bar"))
        self.integer("trainer.max_epochs", -1)
        if self.get("trainer.max_epochs", None) == 0:
            raise self.fail(
                "trainer.max_epochs", "trains nothing", "use >= 1 (or -1 with trainer.max_steps)"
            )
        self.integer("trainer.max_steps", -1)
        self.integer("trainer.log_every_n_steps", 1)
        self.integer("trainer.num_nodes", 1)
        self.number("trainer.gradient_clip_val", 0)
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = self.get(f"trainer.{key}", None)
            if isinstance(value, float):
                self.number(f"trainer.{key}", 0, 1)
            else:
                self.integer(f"trainer.{key}", 0, allow=(None,))
        self.choice("trainer.deterministic", (True, False, "warn", None))
        precision = self.get("trainer.precision", MISSING)
        if precision is not MISSING and precision not in PRECISIONS:
            raise self.fail(
                "trainer.precision",
                "is unknown",
                "use auto, 32-true, bf16-mixed, 16-mixed, bf16-true or 64-true",
            )
        self.choice("trainer.accelerator", ACCELERATORS)
        self.devices()
        self.strategy()

    def devices(self) -> None:
        devices = self.get("trainer.devices", "auto")
        accelerator = self.get("trainer.accelerator", "auto")
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise self.fail(
                "trainer.accelerator",
                "but no CUDA GPU is visible",
                "use trainer=cpu (or trainer.accelerator=cpu)",
            )
        if isinstance(devices, str) and devices != "auto":
            try:
                devices = [int(d) for d in devices.split(",") if d.strip()]
            except ValueError:
                raise self.fail(
                    "trainer.devices",
                    "is not a device count or list",
                    "use e.g. 1, 2, -1 (all) or auto",
                ) from None
        valid_count = (
            isinstance(devices, int)
            and not isinstance(devices, bool)
            and (devices >= 1 or devices == -1)
        )
        if not (valid_count or devices == "auto" or isinstance(devices, list)):
            raise self.fail(
                "trainer.devices", "is not a device count", "use e.g. 1, 2, -1 (all) or auto"
            )
        count = len(devices) if isinstance(devices, list) else devices
        if (
            accelerator in ("gpu", "cuda")
            and isinstance(count, int)
            and count > torch.cuda.device_count()
        ):
            raise self.fail(
                "trainer.devices",
                f"but {torch.cuda.device_count()} GPU(s) are visible",
                f"use trainer.devices<={torch.cuda.device_count()}",
            )
        # data.batch_size is the global batch that data parallelism splits across processes
        # (conf/trainer/ddp.yaml); the two-tower split gives every process the whole batch.
        if isinstance(count, int) and count > 1 and not self.tower_strategy():
            world = count * self.get("trainer.num_nodes", 1)
            batch = self.get("data.batch_size", None)
            if isinstance(batch, int) and batch % world:
                raise self.fail(
                    "data.batch_size",
                    f"is not divisible by the {world} devices "
                    "(trainer.devices x trainer.num_nodes)",
                    f"use a multiple of {world}",
                )

    def tower_strategy(self) -> bool:
        strategy = self.get("trainer.strategy", None)
        name = strategy.get("_target_", "") if isinstance(strategy, Mapping) else strategy
        return isinstance(name, str) and "tower" in name.lower()

    def strategy(self) -> None:
        strategy = self.get("trainer.strategy", MISSING)
        if strategy is MISSING or strategy is None:
            return
        if isinstance(strategy, str):
            from lightning.pytorch.strategies import StrategyRegistry

            known = ("auto", *sorted(StrategyRegistry.available_strategies()))
            if strategy not in known:
                raise self.fail(
                    "trainer.strategy",
                    "is unknown",
                    "use auto, ddp, ddp_spawn, fsdp or another Lightning strategy",
                )
            name = strategy
        elif isinstance(strategy, Mapping) and isinstance(strategy.get("_target_"), str):
            _import(strategy["_target_"], "trainer.strategy")
            name = strategy["_target_"]
        else:
            raise self.fail("trainer.strategy", "is neither a strategy name nor a _target_")
        if "tower" in name.lower():
            # The paper's two-GPU split: one tower per process, so exactly two processes.
            devices = self.get("trainer.devices", None)
            world = len(devices) if isinstance(devices, list) else devices
            if isinstance(world, int):
                world *= self.get("trainer.num_nodes", 1)
            if world != 2:
                raise self.fail(
                    "trainer.devices",
                    f"gives a world size of {world}, but the "
                    f"two-tower strategy ({name}) needs exactly 2 processes",
                    "set trainer.devices=2 (and trainer.num_nodes=1)",
                )

    def callbacks(self) -> None:
        """Each `callbacks.<name>` node is built now (no callback works in its constructor), so
        an option its class lacks or a value it refuses is one line naming the key."""
        from hydra.utils import instantiate

        for name, node in (self.get("callbacks", None) or {}).items():
            key = f"callbacks.{name}"
            if node is None or node is False:
                continue
            if not isinstance(node, Mapping):
                raise self.fail(key, "is not a callback", f"give a _target_ node, or {key}=null")
            self.kwargs_of(key)
            monitor = node.get("monitor")
            if monitor is not None and monitor not in METRICS:
                raise self.fail(
                    f"{key}.monitor",
                    "is not a metric the module logs",
                    f"choose one of {', '.join(sorted(METRICS))}",
                )
            try:
                instantiate(node)
            except Exception as err:
                raise ConfigError(_prefixed(key, _cause(err))) from None

    def loggers(self) -> None:
        """Each `logger.<name>` node is built now (building a logger starts nothing; the W&B run
        starts in alexnet.train), so an option its class lacks or a value it refuses is one line
        naming the key, before any data is read."""
        from hydra.utils import instantiate

        nodes = self.get("logger", None) or {}
        for name, node in nodes.items():
            key = f"logger.{name}"
            if node is None or node is False:
                continue
            if isinstance(node, Mapping) and "_target_" not in node:
                # `+logger.wandbb.project=x` makes a node of its own
                others = [str(n) for n in nodes if n != name]
                close = difflib.get_close_matches(str(name), others, n=1)
                fix = f"did you mean logger.{close[0]}?" if close else f"give {key}._target_"
                raise ConfigError(f"{key} is not a logger (it has no _target_); {fix}")
            if not isinstance(node, Mapping):
                raise self.fail(key, "is not a logger", f"give a _target_ node, or {key}=null")
            self.kwargs_of(key)
            try:
                instantiate(node, _convert_="all")
            except Exception as err:
                raise ConfigError(_prefixed(key, _cause(err))) from None


# --------------------------------------------------------------------------------------------


def _import(target: str, key: str) -> Any:
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"{key}._target_={target!r} cannot be imported; check the spelling"
        ) from None


def _parameters(obj: Any) -> tuple[set[str], bool]:
    """(keyword names `obj` accepts, whether it takes **kwargs it does not pass to a known base)."""
    # A class whose **kwargs reach a function outside its bases names them itself
    # (tracking.ResumableWandbLogger: wandb.init's keywords).
    accepted_keywords = getattr(obj, "accepted_keywords", None)
    if callable(accepted_keywords):
        return set(accepted_keywords()), False
    names: set[str] = set()
    classes = obj.__mro__ if inspect.isclass(obj) else (obj,)
    for item in classes:
        init = item.__init__ if inspect.isclass(obj) else item
        if inspect.isclass(obj) and "__init__" not in vars(item):
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def _cause(err: BaseException) -> BaseException:
    """Hydra wraps errors of the objects it builds; the original says what is wrong."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _classes_on_disk(folder: Path) -> int | None:
    """Class sub-folders of `folder`/train, 10 for CIFAR-10's python batches, None if unknown."""
    if (folder / "cifar-10-batches-py").is_dir():
        return 10
    train = folder / "train"
    if not train.is_dir():
        return None
    return sum(1 for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))


def _shape(output) -> tuple[int, ...]:
    """An eval transform may give one tensor per test scale (VGG's multi-scale dense eval)."""
    first = output[0] if isinstance(output, (tuple, list)) else output
    return tuple(first.shape)
