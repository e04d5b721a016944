"""The report from sweep dirs laid out as a real multirun leaves them (written directly)."""

from __future__ import annotations

import csv
import math
import time

import matplotlib.image as mpimg
import pytest

from alexnet.report import main, write_report
from alexnet.report.analysis import fmt_speedup
from alexnet.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from alexnet.report.convergence import first_reaching
from alexnet.report.sweep import expand_grid, read_sweep
from sweeps import config_of, write_curves, write_job, write_multirun

# test top-1 error (points) per (lrn, pool) cell and seed: variance 4 in every cell, so the LRN
# effect is -3 [-5.66, -0.34] (df 8) and the pooling effect -1 [-3.66, +1.66] (see test_stats)
TOP1 = {
    ("True", "overlap"): [20, 22, 24],
    ("False", "overlap"): [23, 25, 27],
    ("True", "nonoverlap"): [21, 23, 25],
    ("False", "nonoverlap"): [24, 26, 28],
}
LRN_POOL = {"model.lrn": "true,false", "model.pool": "overlap,nonoverlap", "seed": "0,1,2"}


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def lrn_pool_sweep(sweep, skip=(), fail=(), incomplete=(), curves=True):
    multirun = write_multirun(sweep, LRN_POOL, ["trainer.max_epochs=2"])
    for overrides in expand_grid(multirun):
        values = dict(o.split("=", 1) for o in overrides)
        cell, seed = (values["model.lrn"], values["model.pool"]), int(values["seed"])
        if (cell, seed) in skip:
            continue
        top1 = TOP1[cell][seed] / 100
        status = "failed" if (cell, seed) in fail else None if (cell, seed) in incomplete else "ok"
        job = write_job(
            sweep,
            overrides,
            status=status,
            metrics={"test/top1_err": top1, "test/top5_err": top1 - 0.1} if status == "ok" else {},
            error="RuntimeError: CUDA out of memory" if status == "failed" else None,
        )
        if curves and status == "ok":
            write_curves(job, [0.8, 0.5, top1 + 0.05], val_err=[0.85, 0.6, top1 + 0.02])
    return multirun


def test_a_job_the_launcher_resumed_is_still_its_cell(tmp_path):
    # The launcher resumes an interrupted job with `ckpt_path=<its last.ckpt>` added to its
    # overrides (and the command may carry ckpt_path=auto): where a run resumed from is not
    # part of which cell it is.
    multirun = write_multirun(tmp_path, {"seed": "0,1"}, ["model.lrn=true", "ckpt_path=auto"])
    first, second = expand_grid(multirun)
    write_job(tmp_path, first, name="seed=0")
    write_job(tmp_path, [*second, "ckpt_path='/runs/seed=1/checkpoints/last.ckpt'"], name="seed=1")
    sweep = read_sweep(tmp_path)
    assert [job.status for job in sweep.jobs] == ["ok", "ok"] and not sweep.stale


def test_expand_grid_as_hydra_does(tmp_path):
    multirun = write_multirun(
        tmp_path,
        {"model.lrn": "true,false", "seed": "0,1,2"},
        ["model.pool=overlap,nonoverlap", "trainer.max_epochs=2", "seed=5,6"],
    )
    grid = expand_grid(multirun)
    # the command line's seed=5,6 replaces the experiment's seeds, as Hydra's sweeper does
    assert len(grid) == 2 * 2 * 2
    assert grid[0] == ("model.lrn=True", "seed=5", "model.pool=overlap", "trainer.max_epochs=2")
    assert {g[1] for g in grid} == {"seed=5", "seed=6"}


def test_report_of_a_full_grid(tmp_path):
    lrn_pool_sweep(tmp_path)
    report = write_report(tmp_path, wandb=False)
    sweep = report.sweep
    assert sweep.factors == ["model.lrn", "model.pool"] and sweep.replicate == "seed"
    assert [c.label for c in sweep.cells()] == [
        "model.lrn=True,model.pool=overlap",
        "model.lrn=True,model.pool=nonoverlap",
        "model.lrn=False,model.pool=overlap",
        "model.lrn=False,model.pool=nonoverlap",
    ]

    rows = read_csv(tmp_path / "report.csv")
    cells = [r for r in rows if r["section"] == "cell" and r["metric"] == "test/top1_err"]
    assert len(cells) == 4
    first = cells[0]
    half = 4.302653 * 2 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 2
    assert (first["name"], first["n"], float(first["mean"])) == (
        "model.lrn=True,model.pool=overlap",
        "3",
        pytest.approx(22.0),
    )
    assert float(first["ci_low"]) == pytest.approx(22 - half, abs=1e-4)

    claims = {(r["detail"].split(":")[0], r["metric"]): r for r in rows if r["section"] == "claim"}
    lrn = claims[("lrn", "test/top1_err")]
    assert float(lrn["mean"]) == pytest.approx(-3.0)
    assert float(lrn["ci_low"]) == pytest.approx(-3 - 2.306004 * math.sqrt(4 / 3), abs=1e-4)
    assert float(lrn["paper"]) == -1.4 and lrn["verdict"] == REPRODUCED
    assert float(claims[("lrn", "test/top5_err")]["mean"]) == pytest.approx(-3.0)
    pool = claims[("pool", "test/top1_err")]
    assert float(pool["mean"]) == pytest.approx(-1.0) and pool["verdict"] == INCONCLUSIVE
    assert not [r for r in rows if r["section"] in ("effect", "job", "stale")]

    md = (tmp_path / "report.md").read_text()
    assert "- lrn: **reproduced**" in md and "- pool: **inconclusive at this n**" in md
    assert "| True | overlap | 3/3 | 22.00 ± 4.97 |" in md
    assert "Jobs: 12 ok." in md and "![effects and learning curves](report.png)" in md
    image = mpimg.imread(tmp_path / "report.png")
    assert image.shape[:2] == (600, 1800) and image.std() > 0.01


def test_failed_incomplete_missing_and_stale_jobs_are_listed(tmp_path, capsys):
    on_o = ("True", "overlap")
    lrn_pool_sweep(tmp_path, fail=[(on_o, 0)], incomplete=[(on_o, 1)], skip=[(on_o, 2)])
    write_job(
        tmp_path,
        ["model.lrn=True", "model.pool=overlap", "seed=0", "trainer.max_epochs=9"],
        name="left-by-another-command",
    )
    assert main([str(tmp_path), "--no-wandb"]) == 1
    assert "3 of 12 jobs did not finish" in capsys.readouterr().err
    rows = read_csv(tmp_path / "report.csv")
    jobs = {r["name"]: r for r in rows if r["section"] == "job"}
    assert {n: r["verdict"] for n, r in jobs.items()} == {
        "model.lrn=True,model.pool=overlap,seed=0": "failed",
        "model.lrn=True,model.pool=overlap,seed=1": "incomplete",
        "model.lrn=True,model.pool=overlap,seed=2": "not started",
    }
    assert jobs["model.lrn=True,model.pool=overlap,seed=0"]["detail"] == (
        "RuntimeError: CUDA out of memory"
    )
    assert [r["name"] for r in rows if r["section"] == "stale"] == ["left-by-another-command"]
    cell = next(r for r in rows if r["section"] == "cell" and r["metric"] == "test/top1_err")
    assert (cell["n"], cell["mean"], cell["detail"]) == ("0", "", "0/3 finished")
    # the empty cell leaves LRN's effect to the nonoverlap pair alone: 23 - 26
    lrn = next(
        r
        for r in rows
        if r["section"] == "claim"
        and r["metric"] == "test/top1_err"
        and r["detail"].startswith("lrn")
    )
    assert float(lrn["mean"]) == pytest.approx(-3.0)
    md = (tmp_path / "report.md").read_text()
    assert "## Jobs that did not finish" in md and "CUDA out of memory" in md
    assert "| True | overlap | 0/3 | — | — |" in md
    assert "left-by-another-command" in md


def test_single_seed_cells_are_inconclusive(tmp_path):
    multirun = write_multirun(tmp_path, {"model.lrn": "true,false"}, [])
    for overrides, err in zip(expand_grid(multirun), (0.2, 0.3), strict=True):
        write_job(tmp_path, overrides, metrics={"test/top1_err": err, "test/top5_err": err})
    report = write_report(tmp_path, wandb=False)
    row = report.claims[0]
    assert row.estimate.mean == pytest.approx(-10.0) and not row.estimate.has_ci
    assert row.verdict == INCONCLUSIVE


def test_towers_claim_pairs_the_split_configs(tmp_path):
    multirun = write_multirun(
        tmp_path,
        {"split": "two_towers,one_tower_half,one_tower", "seed": "0,1"},
        [],
        task_name="towers",
    )
    split = {
        "two_towers": (2, 1.0, [0.20, 0.21]),
        "one_tower_half": (1, 0.5, [0.23, 0.24]),
        "one_tower": (1, 1.0, [0.205, 0.215]),
    }
    for overrides in expand_grid(multirun):
        values = dict(o.split("=", 1) for o in overrides)
        towers, width, errs = split[values["split"]]
        config = config_of([], model={"towers": towers, "conv_width": width}, task_name="towers")
        err = errs[int(values["seed"])]
        write_job(
            tmp_path,
            overrides,
            config=config,
            metrics={"test/top1_err": err, "test/top5_err": err / 2},
        )
    report = write_report(tmp_path, wandb=False)
    towers = [r for r in report.claims if r.claim.name == "towers"]
    assert [r.metric for r in towers] == ["test/top1_err", "test/top5_err"]
    assert towers[0].estimate.mean == pytest.approx(-3.0)  # 20.5 - 23.5
    assert towers[0].contrast.label == "split: two_towers − one_tower_half"
    # the full-width single tower is compared with the first level as a plain effect
    others = [r.contrast.label for r in report.effects if r.claim is None]
    assert others == ["split: one_tower − two_towers"] * 2


def test_four_layer_lrn_uses_the_cifar_claim(tmp_path):
    multirun = write_multirun(
        tmp_path, {"model.lrn": "true,false", "seed": "0,1"}, [], task_name="cifar_lrn"
    )
    for overrides in expand_grid(multirun):
        values = dict(o.split("=", 1) for o in overrides)
        config = config_of(overrides, model={"name": "four_layer"}, task_name="cifar_lrn")
        err = (0.11 if values["model.lrn"] == "True" else 0.13) + 0.002 * int(values["seed"])
        write_job(
            tmp_path,
            overrides,
            config=config,
            metrics={"test/top1_err": err, "test/top5_err": 0.01},
        )
    report = write_report(tmp_path, wandb=False)
    assert [(r.claim.name, r.metric, r.paper) for r in report.claims] == [
        ("cifar_lrn", "test/top1_err", -2.0)
    ]
    assert report.claims[0].estimate.mean == pytest.approx(-2.0)


def lrn_sweep(sweep, model: str, top1: dict[str, list[float]], task_name: str):
    """model.lrn x 3 seeds of ``model``; top-1 error (points) per lrn value and seed, top-5 a
    third of it."""
    multirun = write_multirun(
        sweep, {"model.lrn": "false,true", "seed": "0,1,2"}, [], task_name=task_name
    )
    for overrides in expand_grid(multirun):
        values = dict(o.split("=", 1) for o in overrides)
        config = config_of(overrides, model={"name": model}, task_name=task_name)
        err = top1[values["model.lrn"]][int(values["seed"])] / 100
        write_job(
            sweep,
            overrides,
            config=config,
            metrics={"test/top1_err": err, "test/top5_err": err / 3},
        )


def test_vgg_lrn_grid_is_judged_by_vggs_no_effect_claim(tmp_path):
    # VGG's Table 3 on a small scale: A-LRN +0.1 points over A (top-1), seeds +-0.1
    lrn_sweep(
        tmp_path, "vgg_cifar", {"False": [29.5, 29.6, 29.7], "True": [29.6, 29.7, 29.8]}, "vgg_lrn"
    )
    report = write_report(tmp_path, wandb=False)
    assert [(r.claim.name, r.metric, r.paper) for r in report.claims] == [
        ("vgg_lrn", "test/top1_err", 0.1),
        ("vgg_lrn", "test/top5_err", 0.1),
    ]
    top1 = report.claims[0]
    assert top1.estimate.mean == pytest.approx(0.1)
    assert -0.5 < top1.estimate.low < 0.1 < top1.estimate.high < 0.5
    assert top1.verdict == REPRODUCED and "the paper's +0.1 is inside the CI" in top1.reason
    lines = report.claim_lines()
    assert len(lines) == 1 and lines[0].startswith("vgg_lrn: **reproduced**, no effect")
    assert "VGG Table 3" in lines[0] and "-1.4" not in lines[0]
    rows = read_csv(tmp_path / "report.csv")
    claims = [r for r in rows if r["section"] == "claim"]
    assert [(r["metric"], r["paper"], r["verdict"]) for r in claims] == [
        ("test/top1_err", "0.1", REPRODUCED),
        ("test/top5_err", "0.1", REPRODUCED),
    ]
    assert "- vgg_lrn: **reproduced**" in (tmp_path / "report.md").read_text()


def test_vgg_lrn_grid_with_alexnets_gain_is_not_vggs_result(tmp_path):
    # LRN lowering VGG's error by AlexNet's 1.4 points contradicts VGG's claim
    lrn_sweep(
        tmp_path,
        "vgg",
        {"False": [31.0, 31.1, 31.2], "True": [29.6, 29.7, 29.8]},
        "vgg_lrn_imagenet",
    )
    top1 = write_report(tmp_path, wandb=False).claims[0]
    assert top1.claim.name == "vgg_lrn" and top1.estimate.mean == pytest.approx(-1.4)
    assert top1.verdict == NOT_REPRODUCED and "lowers the error by more than 0.5" in top1.reason


def test_alexnet_lrn_grid_keeps_alexnets_claim(tmp_path):
    # the same +0.1 effect on AlexNet: its LRN claim (-1.4 / -1.2), judged as before
    lrn_sweep(
        tmp_path, "alexnet_cifar", {"False": [29.5, 29.6, 29.7], "True": [29.6, 29.7, 29.8]}, "lrn"
    )
    report = write_report(tmp_path, wandb=False)
    assert [(r.claim.name, r.metric, r.paper) for r in report.claims] == [
        ("lrn", "test/top1_err", -1.4),
        ("lrn", "test/top5_err", -1.2),
    ]
    top1 = report.claims[0]
    assert top1.verdict == NOT_REPRODUCED and "rules out the paper's -1.4" in top1.reason


# ---- ReLU vs tanh (Figure 1) ------------------------------------------------------------------


def test_first_epoch_at_or_under_25_percent():
    def curves(errs, images=True):
        out = {"train/top1_err": [(float(e), 10.0 * e, v) for e, v in enumerate(errs)]}
        if images:
            out["train/images_seen"] = [
                (float(e), 10.0 * e, 1000.0 * (e + 1)) for e in range(len(errs))
            ]
        return out

    assert first_reaching(curves([0.9, 0.5, 0.3, 0.25, 0.2])) == (4, 4000.0)  # 0.25 counts
    assert first_reaching(curves([0.9, 0.2501, 0.26])) is None
    assert first_reaching(curves([0.24, 0.1])) == (1, 1000.0)
    assert first_reaching(curves([0.9, 0.2], images=False)) == (2, None)
    assert first_reaching({}) is None
    # rows out of order (a resumed run appends) are sorted by epoch first
    shuffled = {"train/top1_err": [(2.0, 29.0, 0.2), (0.0, 9.0, 0.9), (1.0, 19.0, 0.24)]}
    assert first_reaching(shuffled) == (2, None)


def relu_tanh_sweep(sweep, epochs_to_25, max_epochs=40):
    """epochs_to_25[(act, lr)] = per-seed epoch count at which train error hits 25% (None:
    never within max_epochs)."""
    multirun = write_multirun(
        sweep,
        {"model.activation": "relu,tanh", "optim.lr": "0.01,0.02", "seed": "0,1,2"},
        [],
        task_name="relu_vs_tanh",
    )
    for overrides in expand_grid(multirun):
        values = dict(o.split("=", 1) for o in overrides)
        hit = epochs_to_25[(values["model.activation"], values["optim.lr"])][int(values["seed"])]
        n = hit if hit is not None else max_epochs
        errs = [0.9 - 0.6 * e / n for e in range(n - 1)] + [0.25 if hit else 0.3]
        config = config_of(
            overrides, model={"name": "four_layer", "lrn": False}, task_name="relu_vs_tanh"
        )
        job = write_job(
            sweep,
            overrides,
            config=config,
            epochs=n,
            metrics={"test/top1_err": 0.3, "test/top5_err": 0.05},
        )
        write_curves(job, errs)


def test_relu_vs_tanh_speedup_picks_each_activations_fastest_rate(tmp_path):
    relu_tanh_sweep(
        tmp_path,
        {
            ("relu", "0.01"): [5, 5, 6],
            ("relu", "0.02"): [7, 8, 7],
            ("tanh", "0.01"): [30, 32, 31],
            ("tanh", "0.02"): [None] * 3,
        },
    )
    report = write_report(tmp_path, wandb=False)
    s = report.speedup
    assert s.relu.cell.values["optim.lr"] == "0.01" and s.tanh.cell.values["optim.lr"] == "0.01"
    geo = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))  # noqa: E731
    assert s.ratio.mean == pytest.approx(geo([30, 32, 31]) / geo([5, 5, 6]))
    assert s.ratio.low > 1 and s.verdict == REPRODUCED
    rows = read_csv(tmp_path / "report.csv")
    speed = next(r for r in rows if r["name"] == "relu_vs_tanh")
    assert float(speed["mean"]) == pytest.approx(s.ratio.mean) and speed["paper"] == "6"
    epochs = {r["name"]: r for r in rows if r["metric"] == "epochs_to_25pct_train_err"}
    assert float(epochs["model.activation=relu,optim.lr=0.01"]["mean"]) == pytest.approx(16 / 3)
    assert "3 never reached 25%" in epochs["model.activation=tanh,optim.lr=0.02"]["detail"]
    # images seen at 25% (45,000 a synthetic epoch): ReLU's best cell 225k, 225k, 270k
    images = {r["name"]: r for r in rows if r["metric"] == "images_to_25pct_train_err"}
    relu = images["model.activation=relu,optim.lr=0.01"]
    assert float(relu["mean"]) == pytest.approx(240_000) and relu["n"] == "3"
    half = 4.302653 * 15_000  # t(0.975, 2) * s / sqrt(3), s = 45,000 / sqrt(3)
    assert float(relu["ci_high"]) == pytest.approx(240_000 + half, rel=1e-5)
    never = images["model.activation=tanh,optim.lr=0.02"]
    assert never["mean"] == "" and "3 never reached 25%" in never["detail"]
    md = (tmp_path / "report.md").read_text()
    assert "- relu_vs_tanh: **reproduced**" in md and "> 40 (3 never)" in md
    assert "| 5.3 ± 1.4 | 240,000 ± 64,540 |" in md  # epochs, then images seen
    assert "| > 40 (3 never) | — |" in md
    relu_images, tanh_images = 45_000 * geo([5, 5, 6]), 45_000 * geo([30, 32, 31])
    assert (
        f"ReLU model.activation=relu,optim.lr=0.01: {geo([5, 5, 6]):.1f} epochs, "
        f"{relu_images:,.0f} images; tanh model.activation=tanh,optim.lr=0.01: "
        f"{geo([30, 32, 31]):.1f} epochs, {tanh_images:,.0f} images"
    ) in md


def test_relu_vs_tanh_when_tanh_never_gets_there(tmp_path):
    relu_tanh_sweep(
        tmp_path,
        {
            ("relu", "0.01"): [4, 4, 5],
            ("relu", "0.02"): [None] * 3,
            ("tanh", "0.01"): [None] * 3,
            ("tanh", "0.02"): [None] * 3,
        },
        max_epochs=20,
    )
    s = write_report(tmp_path, wandb=False).speedup
    assert s.ratio is None and s.lower_bound == pytest.approx(20 / (4 * 4 * 5) ** (1 / 3))
    assert s.verdict == REPRODUCED and "tanh never reached 25% in 20 epochs" in s.reason


def test_a_censored_speedup_is_a_lower_bound_never_rounded_up(tmp_path):
    # tanh needs more than 30 epochs, ReLU 8: the speed-up is above 3.75, which is not above 3.8
    relu_tanh_sweep(
        tmp_path,
        {
            ("relu", "0.01"): [8, 8, 8],
            ("relu", "0.02"): [9, 9, 9],
            ("tanh", "0.01"): [None] * 3,
            ("tanh", "0.02"): [None] * 3,
        },
        max_epochs=30,
    )
    report = write_report(tmp_path, wandb=False)
    assert fmt_speedup(report.speedup).startswith("speed-up > 3.75x")


def test_no_sweep_is_one_clear_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep dir") and "hydra.sweep.dir" in err
    assert main([str(tmp_path)]) == 2  # exists, but holds no sweep


def test_report_is_logged_to_wandb_offline(tmp_path):
    multirun = write_multirun(tmp_path, {"model.lrn": "true,false"}, [])
    wandb = {"project": "alexnet-lab", "group": "my-sweep", "name": None, "mode": "offline"}
    for overrides, err in zip(expand_grid(multirun), (0.2, 0.3), strict=True):
        write_job(
            tmp_path,
            overrides,
            config=config_of(overrides, wandb=wandb),
            metrics={"test/top1_err": err, "test/top5_err": err},
        )
    write_report(tmp_path, wandb=True)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    keys = (b"report/table", b"report/figure", b"my-sweep", b"verdict/0")
    # wandb-core may still be writing the file when finish() returns (seen on a loaded CPU)
    deadline = time.monotonic() + 60
    while True:
        data = next(runs[0].glob("run-*.wandb")).read_bytes()
        if all(k in data for k in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key in keys:
        assert key in data
    # read_sweep ignores the W&B dir: it is no job
    assert len(read_sweep(tmp_path).jobs) == 2 and not read_sweep(tmp_path).stale


def test_report_of_an_unfinished_grid_is_logged_to_wandb_offline(tmp_path, caplog):
    # the job rows then carry statuses (an enum): W&B's table takes them as plain strings
    multirun = write_multirun(tmp_path, {"model.lrn": "true,false"}, [])
    wandb = {"project": "alexnet-lab", "group": "my-sweep", "name": None, "mode": "offline"}
    first, _ = expand_grid(multirun)  # the second job has not started
    metrics = {"test/top1_err": 0.2, "test/top5_err": 0.1}
    write_job(tmp_path, first, config=config_of(first, wandb=wandb), metrics=metrics)
    with caplog.at_level("WARNING", logger="alexnet.report.wandb_log"):
        write_report(tmp_path, wandb=True)
    assert "could not log the report to W&B" not in caplog.text
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_relu_vs_tanh_has_no_verdict_until_every_job_of_the_grid_finished(tmp_path):
    # each activation is represented by its fastest learning rate: with a tanh rate not run
    # yet, a "never reached 25%" at the other rate says nothing about tanh's best
    relu_tanh_sweep(
        tmp_path,
        {
            ("relu", "0.01"): [4, 4, 5],
            ("relu", "0.02"): [6, 6, 6],
            ("tanh", "0.01"): [None] * 3,
            ("tanh", "0.02"): [9, 9, 9],
        },
        max_epochs=20,
    )
    for job in tmp_path.glob("model.activation=tanh,optim.lr=0.02,*"):
        (job / "results.json").unlink()  # killed before it finished
    report = write_report(tmp_path, wandb=False)
    assert report.speedup is None
    assert "relu_vs_tanh: **" not in (tmp_path / "report.md").read_text()
