"""The README's results table is what `make results` prints for the committed `results/`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from alexnet.report.results_table import BEGIN, END, ROWS, main, render, replace_in

REPO = Path(__file__).resolve().parents[2]


def test_readme_table_matches_the_committed_results(monkeypatch):
    monkeypatch.chdir(REPO)  # links are relative to the repo root, as in the README
    readme = (REPO / "README.md").read_text()
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == render(Path("results")).strip(), "run `make results`"


def _job(folder: Path, status="ok", device="CPU X, 2 threads", train_time_s=1800.0, **metrics):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps(
            {
                "status": status,
                "metrics": metrics,
                "train_time_s": train_time_s,
                "provenance": {"device": device, "commit": "abc", "dirty": False},
            }
        )
    )


def test_rows_from_a_grid_report_and_a_single_run(tmp_path):
    grid = tmp_path / "cifar_lrn_cpu"
    for seed in (0, 1):
        _job(grid / f"model.lrn=True,seed={seed}")
    with (grid / "report.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "section",
                "name",
                "metric",
                "n",
                "mean",
                "ci_low",
                "ci_high",
                "paper",
                "verdict",
                "detail",
            ]
        )
        w.writerow(
            [
                "claim",
                "model.lrn=True - model.lrn=False",
                "test/top1_err",
                "3",
                "-1.25",
                "-2.5",
                "0.5",
                "-2",
                "inconclusive at this n",
                "cifar_lrn: CIFAR-10",
            ]
        )
    _job(tmp_path / "cifar10_alexnet", train_time_s=7500, **{"test/top1_err": 0.187})
    _job(tmp_path / "relu_vs_tanh_cpu" / "model.activation=relu,seed=0")  # the other not run
    (tmp_path / "relu_vs_tanh_cpu" / "report.csv").write_text(
        "section,name,metric,n,mean,ci_low,ci_high,paper,verdict,detail\n"
        "job,model.activation=tanh,,,,,,,not started,\n"
    )

    table = render(tmp_path)
    lines = table.splitlines()
    assert len(lines) == 2 + len(ROWS)
    lrn = next(line for line in lines if line.startswith("| LRN lowers CIFAR-10"))
    assert (
        "| -1.2 pt [-2.5, +0.5], n=3 | inconclusive at this n | CPU X, 2 threads | 1 h 00 min |"
    ) in lrn
    run = next(line for line in lines if line.startswith("| AlexNet-CIFAR"))
    assert "18.7% (81.3% accuracy), n=1" in run and "2 h 05 min" in run
    relu = next(line for line in lines if line.startswith("| ReLU reaches"))
    assert "no verdict yet (1 of 2 jobs finished)" in relu
    towers = next(line for line in lines if line.startswith("| Two towers"))
    assert "not run yet" in towers and "make ablate GRID=towers" in towers


def test_a_censored_speedup_reads_as_a_lower_bound(tmp_path):
    # tanh never got to 25% training error: the report's mean is the bound, with no CI and no n
    _job(tmp_path / "relu_vs_tanh_cpu" / "model.activation=relu,seed=0")
    (tmp_path / "relu_vs_tanh_cpu" / "report.csv").write_text(
        "section,name,metric,n,mean,ci_low,ci_high,paper,verdict,detail\n"
        "claim,relu_vs_tanh,tanh/relu epochs to 25% train err,,3.750000000000001,,,6,"
        "reproduced,tanh never reached 25% in 30 epochs\n"
    )
    relu = next(line for line in render(tmp_path).splitlines() if line.startswith("| ReLU"))
    assert "| > 3.75x (tanh never reached 25% in 30 epochs) | reproduced |" in relu


def test_readme_block_is_rewritten_in_place(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{BEGIN}\nold\n{END}\n\nrest\n")
    assert main([str(tmp_path / "results"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{BEGIN}\n| claim |")
    assert text.endswith(f"{END}\n\nrest\n")
    assert "old" not in text
    assert main([str(tmp_path / "results"), "--readme", str(readme)]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_a_readme_without_the_block_is_one_clear_error(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert main([str(tmp_path), "--readme", str(readme)]) == 2
    assert "no <!-- results:begin -->" in capsys.readouterr().err
    with pytest.raises(ValueError):
        replace_in(readme, "x")
