"""The README and docs match the code: the code map lists what `ls src/alexnet` shows, the docs
it links exist, and the scripts in docs/ compose."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_map() -> list[str]:
    """The names in the README's code map under `src/alexnet/` (first column, two-space indent)."""
    block = README.split("## Code map", 1)[1].split("```", 2)[1]
    names, inside = [], False
    for line in block.splitlines():
        if line.startswith("src/alexnet/"):
            inside = True
            continue
        if inside and re.match(r"^  \S", line):
            names.append(line.split()[0])
        elif inside and line and not line.startswith(" "):
            break
    return names


def test_code_map_matches_the_package():
    listed = code_map()
    package = REPO / "src" / "alexnet"
    present = {
        p.name + ("/" if p.is_dir() else "")
        for p in package.iterdir()
        if not p.name.startswith(("_", ".")) and (p.is_dir() or p.suffix == ".py")
    }
    assert len(listed) == len(set(listed)), "a module listed twice"
    assert set(listed) == present, (
        f"in the README but not in src/alexnet: {sorted(set(listed) - present)}; "
        f"in src/alexnet but not in the README: {sorted(present - set(listed))}"
    )


def test_linked_docs_exist():
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", README):
        assert (REPO / link).is_file(), link


def test_the_slurm_script_composes(cfg_factory, monkeypatch):
    """docs/slurm/requeue.sbatch's training command is a valid config (SLURM's variables set)."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    script = (REPO / "docs" / "slurm" / "requeue.sbatch").read_text()
    command = script.split("srun ", 1)[1].split("\nstatus=", 1)[0].replace("\\\n", " ")
    words = shlex.split(command.replace("${SLURM_JOB_ID}", "1234"))
    assert words[:3] == ["python", "-m", "alexnet.train"]
    overrides = words[3:]
    OverridesParser.create().parse_overrides(overrides)
    monkeypatch.setenv("SLURM_PROCID", "0")
    cfg = cfg_factory([o for o in overrides if not o.startswith("hydra.")])
    assert cfg.ckpt_path == "auto" and cfg.trainer.devices == 2


def test_the_wandb_sweep_composes(cfg_factory, monkeypatch):
    """docs/sweeps/wandb_lr.yaml: its command, expanded as `wandb agent` expands it, is a valid
    train config at both ends of the range, which is the Optuna preset's."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    from alexnet.config.validate import METRICS

    sweep = sweep_utils.load_sweep_config(str(REPO / "docs" / "sweeps" / "wandb_lr.yaml"))
    assert sweep["metric"]["name"] in METRICS and sweep["metric"]["goal"] == "minimize"
    lr = sweep["parameters"]["optim.lr"]
    preset = OmegaConf.load(REPO / "conf" / "hparams_search" / "lr_optuna.yaml")
    searched = preset.hydra.sweeper.params["optim.lr"]  # tag(log, interval(low, high))
    low, high = re.search(r"interval\(([^,]+),([^)]+)\)", searched).groups()
    assert lr["distribution"] == "log_uniform_values"
    assert (lr["min"], lr["max"]) == (float(low), float(high))

    monkeypatch.setenv("WANDB_RUN_ID", "a1b2c3")  # what the agent sets for each trial
    for value in (lr["min"], lr["max"]):
        # what the agent gets for a trial: every parameter's value
        args = {
            k: {"value": value if k == "optim.lr" else p["value"]}
            for k, p in sweep["parameters"].items()
        }
        macros = sweep_utils.create_sweep_command_args({"args": args})
        macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
        words: list[str] = []
        for word in map(str, sweep_utils.create_sweep_command(list(sweep["command"]))):
            macro = word.startswith("${") and word.endswith("}")
            words += (macros.get(word[2:-1]) or []) if macro else [word]
        assert words[:4] == ["/usr/bin/env", "python", "-m", "alexnet.train"]
        overrides = words[4:]
        OverridesParser.create().parse_overrides(overrides)
        cfg = cfg_factory([o for o in overrides if not o.startswith("hydra.")])
        assert cfg.optim.lr == value and cfg.task_name == "cifar10_alexnet"
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            full = compose("train", overrides=overrides, return_hydra_config=True)
        assert full.hydra.run.dir == f"{full.paths.log_dir}/wandb_lr/a1b2c3"
