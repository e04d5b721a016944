"""Bad configs fail before any data or model work, with one line naming key, problem and fix."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from alexnet.config import ConfigError
from alexnet.config.validate import validate_config

REPO = Path(__file__).resolve().parents[2]
SYNTH = ["data=synthetic", "trainer.accelerator=cpu"]
IMAGENET_LIKE = [
    "data=synthetic",
    "data.image_size=256",
    "model=alexnet",
    "aug=paper",
    "trainer.accelerator=cpu",
]

# (overrides, the message must contain) -- each is a mistake people make
CASES = [
    (["model.name=alexnett"], "model.name='alexnett' is unknown; choose one of alexnet"),
    (["model.pool=max"], "model.pool='max' is unknown; choose one of 'overlap', 'nonoverlap'"),
    (["model.towers=3"], "model.towers=3 is unknown; choose one of 1, 2"),
    (["model.dropout=1.5"], "model.dropout=1.5 must be a probability in [0, 1)"),
    (["+model.depth=5"], "unexpected keyword argument 'depth'"),
    (["model.num_classes=5"], "model.num_classes=5 but data.num_classes=10; leave model."),
    (["+aug.name=fancy"], "aug.name is not a setting of alexnet.data.augment.presets.CifarAug"),
    (["+aug.eval=ten_crop"], "aug.eval='ten_crop' is unknown for aug=cifar; choose center"),
    (["aug.lighting=-1"], "aug.lighting=-1 is the std of the PCA coefficients; use >= 0"),
    (["data.batch_size=abc"], "data.batch_size='abc' must be a whole number"),
    (["data.batch_size=0"], "data.batch_size=0 must be >= 1"),
    (["data.num_workers=-2"], "data.num_workers=-2 must be >= 0"),
    (["+data.shuffle=false"], "data.shuffle is not a setting of alexnet.data.SyntheticDataModule"),
    (["optim.lr=0"], "optim.lr=0 must be > 0"),
    (["optim.lr=-0.1"], "optim.lr=-0.1 must be > 0"),
    (["optim.lr=fast"], "optim.lr='fast' must be a number"),
    (["optim.momentum=1.5"], "optim.momentum=1.5 must be < 1"),
    (["sched.factor=2"], "sched.factor=2 must be < 1"),
    (["sched=cosine", "trainer.max_epochs=-1"], "sched.T_max=-1 must be >= 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5 must be a whole number"),
    (["trainer.precision=bf17"], "trainer.precision='bf17' is unknown; use auto, 32-true"),
    (["+trainer.strategy=dpp"], "trainer.strategy='dpp' is unknown"),
    (["trainer.devices=3"], "data.batch_size=32 is not divisible by the 3 devices"),
    (["trainer.devices=0"], "trainer.devices=0 is not a device count"),
    (
        ["+trainer.max_epoch=3"],
        "trainer.max_epoch is not a setting of lightning.Trainer; did you mean trainer.max_epochs?",
    ),
    (
        ["callbacks.checkpoint.monitor=val/top1_error"],
        "callbacks.checkpoint.monitor='val/top1_error' is not a metric the module logs",
    ),
    (["callbacks.last.every_n_steps=-5"], "every_n_steps=-5 must be >= 0"),
    (
        ["callbacks.nonfinite.mode=ignore"],
        "callbacks.nonfinite.mode='ignore' is unknown; choose one of stop",
    ),
    (["logger.wandb.mode=sometimes"], "logger.wandb.mode='sometimes' is unknown"),
    (
        ["+logger.wandb.projcet=x"],
        "logger.wandb.projcet is not a setting of alexnet.training.tracking.ResumableWandbLogger; "
        "did you mean logger.wandb.project?",
    ),
    (["+logger.wandb.jobtype=x"], "did you mean logger.wandb.job_type?"),
    (["+logger.csv.flush_every=9"], "did you mean logger.csv.flush_logs_every_n_steps?"),
    (
        ["+logger.wandbb.project=x"],
        "logger.wandbb is not a logger (it has no _target_); did you mean logger.wandb?",
    ),
    (["logger.csv=true"], "logger.csv=True is not a logger; give a _target_ node, or logger."),
    (["+logger.wandb.offline=true"], "logger.wandb.offline=True is not used here; set mode="),
    (["paths.data_dir=${oc.env:ALEXNET_NO_SUCH_VAR}"], "cannot be resolved"),
    (["+foo=bar"], "foo is not a setting of this config (aug, callbacks, "),
    (["+optimizer.lr=0.1"], "optimizer is not a setting of this config (aug, "),
    (["+optimizer.lr=0.1"], "did you mean optim?"),
    (["+figures.exampels=3"], "figures.exampels is not a setting of figures (device, enabled"),
    (["+paths.dta=x"], "paths.dta is not a setting of paths (data_dir, log_dir, output_dir)"),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_value_is_one_clear_line(overrides, message, cfg_factory):
    cfg = cfg_factory([*SYNTH, *overrides])
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


IMAGENET_CASES = [
    (["aug.crop=300"], "aug.crop=300 is larger than the image (256x256); lower aug.crop"),
    (
        ["aug.crop=200"],
        "aug.crop=200 gives train inputs of 200x200 pixels, which model 'alexnet' cannot take",
    ),
    (
        ["aug.eval=twelve_crop"],
        "aug.eval='twelve_crop' is unknown for aug=paper; choose center, ten_crop",
    ),
    (["aug=cifar"], "it is built for 224-pixel crops: use data=imagenet aug=paper or experiment="),
    (["model=four_layer"], "it is built for 32-pixel crops: use data=cifar10 aug=cifar"),
    (["aug=vgg"], "aug.eval='dense' needs a network with dense evaluation (model vgg or vgg_cifar"),
    (
        ["model=vgg", "aug=vgg", "+data.gpu_resident=true"],
        "aug=vgg (aug.eval=dense) has no batched version, which data.gpu_resident=true needs",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), IMAGENET_CASES, ids=[" ".join(c[0]) for c in IMAGENET_CASES]
)
def test_crop_must_fit_the_image_and_the_network(overrides, message, cfg_factory):
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg_factory([*IMAGENET_LIKE, *overrides]))
    assert message in str(caught.value)


def test_good_configs_pass(cfg_factory, cifar_folder):
    validate_config(cfg_factory(SYNTH))
    validate_config(cfg_factory(IMAGENET_LIKE))
    # VGG's dense evaluation takes whole 384-pixel images, which its forward (224 crops) cannot
    validate_config(cfg_factory([*IMAGENET_LIKE, "model=vgg", "aug=vgg"]))
    validate_config(
        cfg_factory(
            [
                "experiment=cifar10_alexnet",
                f"paths.data_dir={cifar_folder}",
                "trainer.accelerator=cpu",
            ]
        )
    )


def test_num_classes_must_match_the_folders(cfg_factory, cifar_folder):
    cfg = cfg_factory(
        [f"paths.data_dir={cifar_folder}", "data.num_classes=5", "trainer.accelerator=cpu"]
    )
    with pytest.raises(
        ConfigError,
        match=r"data.num_classes=5 but .*cifar10 holds 10 classes; "
        r"set data.num_classes=10",
    ):
        validate_config(cfg)


def test_missing_data_root(cfg_factory, tmp_path):
    cfg = cfg_factory([f"paths.data_dir={tmp_path / 'nope'}", "data.download=false"])
    with pytest.raises(
        ConfigError,
        match=r"data.root=.*nope does not exist, so .*nope/cifar10 "
        r"cannot hold the data; point DATA_DIR",
    ):
        validate_config(cfg)


def test_unwritable_output_dir(cfg_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = cfg_factory(SYNTH, output_dir=blocker / "run")  # works as root too, unlike chmod
    with pytest.raises(ConfigError, match=r"paths.output_dir=.*a-file/run is not writable"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.ckpt", r"missing.ckpt does not exist; give a .ckpt file"),
        (lambda p: p, r"is a folder; give the .ckpt file in it"),
        (
            lambda p: (p / "notes.ckpt", (p / "notes.ckpt").write_text("hello"))[0],
            r"notes.ckpt is not a PyTorch checkpoint",
        ),
        (
            lambda p: (p / "w.pt", torch.save({"w": torch.zeros(1)}, p / "w.pt"))[0],
            r"w.pt lacks state_dict, loops, optimizer_states needed to resume training",
        ),
    ],
)
def test_bad_ckpt_path(make, message, cfg_factory, tmp_path):
    cfg = cfg_factory([*SYNTH, f"ckpt_path={make(tmp_path)}"])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_eval_needs_a_checkpoint_and_a_known_split(cfg_factory, tmp_path):
    with pytest.raises(
        ConfigError, match="ckpt_path is required; give it on the command line: ckpt_path=path/to/"
    ):
        validate_config(cfg_factory(["data=synthetic"], name="eval"), "eval")
    with pytest.raises(ConfigCompositionException, match="Error merging override split=tst"):
        cfg_factory(["data=synthetic", "split=tst", f"ckpt_path={tmp_path}"], name="eval")


def test_model_for_imagenet_on_cifar_names_the_fix(cfg_factory):
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg_factory(["model=alexnet", "trainer.accelerator=cpu"]))
    assert str(caught.value).endswith(
        "it is built for 224-pixel crops: use data=imagenet aug=paper or "
        "experiment=paper_imagenet (or model=alexnet_cifar for CIFAR-10's 32-pixel crops)"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_trainer_without_a_gpu(cfg_factory):
    with pytest.raises(
        ConfigError, match="trainer.accelerator='gpu' but no CUDA GPU is visible; use trainer=cpu"
    ):
        validate_config(cfg_factory(["data=synthetic", "trainer=gpu"]))


def test_two_tower_strategy_needs_two_processes(cfg_factory, monkeypatch):
    # The tower strategy is another module's; any importable target named like it is checked.
    fake = types.ModuleType("alexnet_fake_towers")
    fake.TowerParallelStrategy = type("TowerParallelStrategy", (), {})
    monkeypatch.setitem(sys.modules, "alexnet_fake_towers", fake)
    target = "+trainer.strategy._target_=alexnet_fake_towers.TowerParallelStrategy"
    with pytest.raises(ConfigError, match="two-tower strategy .* needs exactly 2 processes"):
        validate_config(cfg_factory([*SYNTH, target, "trainer.devices=4"]))
    validate_config(cfg_factory([*SYNTH, target, "trainer.devices=2"]))


def test_hydra_refuses_unknown_choices_and_keys(cfg_factory):
    with pytest.raises(MissingConfigException, match="Could not find 'data/imagenett'"):
        cfg_factory(["data=imagenett"])
    with pytest.raises(ConfigCompositionException, match="Could not override 'data.batchsize'"):
        cfg_factory(["data.batchsize=3"])
    # a key a node does not declare needs `+`, after which the preflight names the closest one
    with pytest.raises(
        ConfigCompositionException, match="Could not override 'logger.wandb.projcet'"
    ):
        cfg_factory(["logger.wandb.projcet=x"])
    # the entry configs' schemas (alexnet.config.schema) type their own keys
    for override in ("seed=one", "test=maybe", "figures.examples=many", "tags=5"):
        with pytest.raises(ConfigCompositionException, match=f"Error merging override {override}"):
            cfg_factory([override])


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alexnet.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **env},
    )


def test_cli_prints_one_line_and_traceback_only_on_request(tmp_path):
    args = ["data=synthetic", "optim.lr=0", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: optim.lr=0 must be > 0")
    assert "Traceback" not in proc.stderr
    full = run_cli(args, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode != 0 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_cli_unwritable_log_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli(["data=synthetic", f"paths.log_dir={blocker / 'logs'}"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: paths.log_dir={blocker / 'logs'} is not writable (Not a directory); set LOG_DIR "
        "or paths.log_dir to a folder you can write"
    )
    assert "Traceback" not in proc.stderr


def test_callbacks_are_target_nodes_with_every_option_of_their_class(cfg_factory, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

    from alexnet.config.entry import build_callbacks
    from alexnet.training.nonfinite import NonFiniteGuard
    from alexnet.training.resume import BestCheckpoint, ResumeCheckpoint

    cfg = cfg_factory([*SYNTH, "callbacks.checkpoint.save_top_k=3", "callbacks.nonfinite=null"])
    validate_config(cfg)
    built = build_callbacks(cfg)
    (best,) = [c for c in built if isinstance(c, BestCheckpoint)]
    assert best.save_top_k == 3 and best.dirpath == str(tmp_path / "run" / "checkpoints")
    assert not any(isinstance(c, NonFiniteGuard) for c in built)  # null removes one
    assert any(isinstance(c, ResumeCheckpoint) for c in built)
    cfg = cfg_factory([*SYNTH, "callbacks.progress_bar=false", "experiment=relu_vs_tanh"])
    kinds = {type(c) for c in build_callbacks(cfg)}
    assert EarlyStopping in kinds and TQDMProgressBar not in kinds  # a recipe adds its own
    for overrides, message in [
        (
            ["+callbacks.checkpoint.save_top=3"],
            "callbacks.checkpoint.save_top is not a setting of alexnet.training.resume."
            "BestCheckpoint; did you mean callbacks.checkpoint.save_top_k?",
        ),
        (["callbacks.progress_bar=5"], "callbacks.progress_bar=5 is not a callback"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg_factory([*SYNTH, *overrides]))


def test_loggers_are_target_nodes_with_every_option_of_their_class(cfg_factory):
    # declared keys need no `+`; any other keyword of WandbLogger or wandb.init takes one
    validate_config(
        cfg_factory(
            [
                *SYNTH,
                "logger.wandb.tags=[a,b]",
                "logger.wandb.job_type=x",
                "logger.wandb.entity=me",
                "logger.wandb.log_model=all",
                "+logger.wandb.notes=n",
                "+logger.wandb.settings.init_timeout=5",
                "+logger.csv.prefix=p",
            ]
        )
    )
    for off in ("logger.wandb=null", "logger.csv=null", "logger.csv=false", "logger=none"):
        validate_config(cfg_factory([*SYNTH, off]))
