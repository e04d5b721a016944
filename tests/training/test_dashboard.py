"""Figures and W&B wiring: train-end rendering, `python -m alexnet.figures`, offline W&B media."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import yaml

from alexnet.figures.__main__ import run_dir_of
from alexnet.figures.render import FILES, PER_CLASS_CSV, RenderOptions
from alexnet.training.figure_callbacks import REPORT_PATTERNS, log_csv_tables
from alexnet.training.run import train
from alexnet.training.tracking import sweep_dir_of, wandb_identity
from wandb_files import wandb_records

REPO = Path(__file__).resolve().parents[2]
# Tiny synthetic data and two one-batch epochs: the network and its checkpoints are real.
TINY = [
    "data=synthetic",
    "aug=none",
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=false",
    "debug=limit",
    "trainer.limit_train_batches=1",
    "callbacks.last=null",
]
ALL_PNGS = sorted(FILES.values())


def pngs(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob("*.png"))
    for name in names:
        assert mpimg.imread(folder / name)[..., :3].var() > 0, f"{name} is blank"
    return names


def last_summary(records, key: str):
    value = None
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                if (item.key or "/".join(item.nested_key)) == key:
                    value = json.loads(item.value_json)
    return value


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A W&B-logged (offline) tiny run with kernel snapshots every epoch."""
    from conftest import compose_config

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_config("train", [*TINY, "figures.kernels_every_n_epochs=1", "tags=[tiny]"], out)
    return out, train(cfg)


def test_train_renders_figures_at_the_end(trained):
    out, results = trained
    assert pngs(out / "figures") == ALL_PNGS
    assert (out / "figures" / PER_CLASS_CSV).is_file()
    # Snapshots after each epoch, for watching the kernels form.
    assert pngs(out / "figures" / "kernels") == ["epoch_001.png", "epoch_002.png"]
    assert results["status"] == "ok"


def test_train_logs_figures_tables_and_min_summary_to_wandb(trained):
    out, results = trained
    (run,) = (out / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    images = [p.name for p in (media / "images").rglob("*.png")]
    for name in ("kernels", "top5", "neighbours", "confusion", "learning_curves"):
        assert any(n.startswith(name) for n in images), (name, images)
    assert sum(n.startswith("kernels") for n in images) == 3  # two snapshots and the final
    (table,) = (media / "table" / "tables").glob("per_class_error*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["class", "n", "top1_err"] and len(rows["data"]) == 10
    records = list(wandb_records(next(run.glob("run-*.wandb"))))
    metric = [
        r.metric
        for r in records
        if r.WhichOneof("record_type") == "metric" and r.metric.name == "val/top1_err"
    ]
    assert metric and metric[-1].summary.min and metric[-1].step_metric == "trainer/global_step"
    with (out / "csv" / "metrics.csv").open() as f:
        errs = [float(r["val/top1_err"]) for r in csv.DictReader(f) if r["val/top1_err"]]
    assert last_summary(records, "val/top1_err") == {"min": pytest.approx(min(errs))}
    config = [r.config for r in records if r.WhichOneof("record_type") == "config"]
    keys = {item.key for c in config for item in c.update}
    assert {"model", "optim", "figures", "data"} <= keys  # the resolved Hydra config
    # and what results.json records of the run: its size and where it came from
    values = {item.key: json.loads(item.value_json) for c in config for item in c.update}
    assert values["parameters"] == results["parameters"] > 0
    assert values["provenance"]["commit"] == results["provenance"]["commit"]
    assert values["provenance"]["versions"]["torch"] == results["provenance"]["versions"]["torch"]
    run_info = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_info.run_group == "train" and run_info.display_name == "train"
    assert list(run_info.tags) == ["tiny"]


def test_figures_entry_renders_checkpoint_in_its_run_dir(trained, tmp_path):
    out, results = trained
    ckpt = Path(results["best_ckpt"])
    assert run_dir_of(ckpt) == out
    for png in (out / "figures").glob("*.png"):
        png.unlink()
    before = set((out / "wandb").glob("offline-run-*"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet.figures",
            f"ckpt_path={ckpt}",
            *TINY[:5],
            "figures.queries=2",
            f"hydra.run.dir={tmp_path / 'figures_job'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pngs(out / "figures") == ALL_PNGS
    assert f"kernels: {out / 'figures' / 'kernels.png'}" in proc.stdout
    assert "train_features" in proc.stdout  # the timings
    # The W&B run of the figures sits beside the training run's, in its group.
    (fig_run,) = set((out / "wandb").glob("offline-run-*")) - before
    records = list(wandb_records(next(fig_run.glob("run-*.wandb"))))
    info = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert info.job_type == "figures" and info.run_group == "train"
    assert info.display_name == "train/figures"
    assert len(list((fig_run / "files" / "media" / "images").rglob("*.png"))) == 5


def test_figures_entry_class_mismatch_is_one_clear_line(trained, tmp_path):
    _, results = trained
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet.figures",
            f"ckpt_path={results['best_ckpt']}",
            "data=synthetic",
            "data.num_classes=4",
            "logger.wandb=null",
            f"hydra.run.dir={tmp_path / 'job'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: the checkpoint's network has 10 classes but the data has 4; pass the data it "
        "was trained on (e.g. data=imagenet)"
    )


def test_train_end_rendering_switches_off(cfg_factory, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_factory(
        [
            *TINY,
            "figures.enabled=false",
            "figures.kernels_every_n_epochs=1",
            "logger.wandb=null",
            "trainer.max_epochs=1",
            "test=false",
        ],
        output_dir=out,
    )
    train(cfg)
    assert (out / "results.json").is_file()
    assert not (out / "figures").exists()


def test_bad_figure_option_fails_before_training(cfg_factory, tmp_path):
    cfg = cfg_factory([*TINY, "figures.neighbours=0"], output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="figures.neighbours=0"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- names, groups, configs ----------------------------------------------------------------------


def test_wandb_identity_single_run_and_sweep(tmp_path):
    single = tmp_path / "logs" / "cifar10_alexnet" / "2026-01-01" / "10-00-00"
    single.mkdir(parents=True)
    assert sweep_dir_of(single) is None
    assert wandb_identity("cifar10_alexnet", ["cifar10"], single) == (
        "cifar10_alexnet",
        "cifar10_alexnet",
        ["cifar10"],
    )
    sweep = tmp_path / "logs" / "ablate" / "multirun" / "2026-01-01_10-00-00"
    job = sweep / "model.lrn=false"
    job.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    assert sweep_dir_of(job) == sweep.resolve()
    assert wandb_identity("ablate", ["cifar10"], job) == (
        "model.lrn=false",
        "2026-01-01_10-00-00",
        ["cifar10", "sweep"],
    )
    # the run's logger.wandb names win over both defaults
    assert wandb_identity("ablate", [], job, {"name": "mine", "group": None}) == (
        "mine",
        "2026-01-01_10-00-00",
        ["sweep"],
    )
    assert wandb_identity("ablate", [], single, {"group": "g"}) == ("ablate", "g", [])
    # its tags are the run's tags as given: no `sweep` added
    assert wandb_identity("ablate", ["cifar10"], job, {"tags": ["a"]}) == (
        "model.lrn=false",
        "2026-01-01_10-00-00",
        ["a"],
    )


@pytest.mark.parametrize(
    "overrides, name, group",
    [
        ([], "model.lrn=false,seed=0", "2026-01-01_10-00-00"),
        (["logger.wandb.group=mine"], "model.lrn=false,seed=0", "mine"),
    ],
)
def test_figures_run_of_a_sweep_job_joins_the_training_runs_group(
    cfg_factory, tmp_path, monkeypatch, overrides, name, group
):
    import wandb

    import alexnet.training.figure_callbacks
    import alexnet.training.run
    from alexnet.figures.__main__ import log_to_new_wandb_run

    sweep = tmp_path / "logs" / "lrn_pool" / "multirun" / "2026-01-01_10-00-00"
    job = sweep / "model.lrn=false,seed=0"
    job.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    seen = {}

    class Stop(Exception):
        pass

    def start_loggers(loggers, name, tags, config, group=None, resume_from=None):
        # the identity training gives W&B (logger.wandb's name and group, when set, in it)
        seen["train"] = (name, group, tags)
        seen["config"] = config
        raise Stop  # the identity is all this test needs of training

    monkeypatch.setattr(alexnet.training.run, "start_loggers", start_loggers)
    cfg = cfg_factory([*TINY, "task_name=lrn_pool", "tags=[tiny]", *overrides], output_dir=job)
    with pytest.raises(Stop):
        train(cfg)
    assert seen["train"] == (name, group, ["tiny", "sweep"])
    (job / "results.json").write_text(json.dumps({"status": "ok", "config": seen["config"]}))

    class Run:
        def finish(self):
            seen["finished"] = True

    def init(**kwargs):
        seen["figures"] = kwargs
        return Run()

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(
        alexnet.training.figure_callbacks, "log_figures", lambda run, figures, step=None: None
    )
    log_to_new_wandb_run({"mode": "offline", "group": None}, job, job / "last.ckpt", None, {})
    figures = seen["figures"]
    assert (figures["name"], figures["group"]) == (f"{name}/figures", group)
    assert figures["tags"] == ["tiny", "sweep", "figures"] and figures["job_type"] == "figures"
    assert seen["finished"]


def test_the_figures_block_matches_the_renderer_and_the_schema():
    # one block (conf/figures/default.yaml) read by training and by python -m alexnet.figures
    from alexnet.config.schema import Figures

    block = yaml.safe_load((REPO / "conf" / "figures" / "default.yaml").read_text())
    defaults = RenderOptions()
    for key, value in block.items():
        if hasattr(defaults, key):
            assert getattr(defaults, key) == value, key
    assert set(block) - {"enabled", "kernels_every_n_epochs"} == set(
        RenderOptions.__dataclass_fields__
    )
    assert set(block) == set(Figures.__dataclass_fields__)


def test_a_failing_figure_never_costs_the_finished_run(cfg_factory, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr("alexnet.training.figure_callbacks.render_figures", broken)
    out = tmp_path / "run"
    cfg = cfg_factory(
        [*TINY, "logger.wandb=null", "trainer.max_epochs=1", "test=false"], output_dir=out
    )
    with caplog.at_level("ERROR", logger="alexnet.training.figure_callbacks"):
        results = train(cfg)
    assert results["status"] == "ok" and (out / "results.json").is_file()
    assert "python -m alexnet.figures ckpt_path=" in caplog.text
    assert "matplotlib fell over" in caplog.text


class FakeRun:
    def __init__(self):
        self.logged: list[dict] = []

    def log(self, payload: dict) -> None:
        self.logged.append(payload)


def test_report_csvs_in_a_sweep_dir_become_tables(tmp_path):
    (tmp_path / "report.csv").write_text("lrn,test/top1_err\ntrue,0.21\nfalse,0.23\n")
    (tmp_path / "ablation_pool.csv").write_text("pool,test/top1_err\noverlap,0.2\n")
    (tmp_path / "other.csv").write_text("x\n1\n")
    run = FakeRun()
    found = log_csv_tables(run, tmp_path, REPORT_PATTERNS)
    assert [p.name for p in found] == ["ablation_pool.csv", "report.csv"]
    tables = {k: v for payload in run.logged for k, v in payload.items()}
    assert set(tables) == {"tables/report", "tables/ablation_pool"}
    assert tables["tables/report"].columns == ["lrn", "test/top1_err"]
    assert tables["tables/report"].data == [["true", 0.21], ["false", 0.23]]
