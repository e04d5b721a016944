"""The README's results table, generated from the committed runs under `results/`.

    python -m alexnet.report.results_table [results/]           # print the table
    python -m alexnet.report.results_table [results/] --readme README.md   # rewrite it there

One row per paper claim the lab can test. A row's numbers come from the grid's `report.csv`
(written by `make report` from the jobs' `results.json`) or, for a single run, from its
`results.json`; the hardware and wall time from the jobs' provenance. A claim whose grid has not
been run (no folder under `results/`) keeps its row, saying "not run yet" and the command that
would run it. Nothing here is typed by hand: `tests/report/test_results_table.py` checks that the
README holds exactly what this module prints for the committed `results/`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alexnet.report.claims import SCALE
from alexnet.report.convergence import at_least
from alexnet.training.callbacks import format_duration
from alexnet.training.record import Status

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
HEADER = ("claim", "paper", "ours (mean, 95% CI, n)", "verdict", "hardware", "wall time", "report")


@dataclass(frozen=True)
class Row:
    claim: str  # what the paper says
    paper: str
    grids: tuple[str, ...]  # results/<grid> folders that test it, the first found is used
    key: str  # the claim's name in report.csv (alexnet.report.claims), or "run" for one run
    command: str  # what would run it
    metric: str = "test/top1_err"


ROWS: tuple[Row, ...] = (
    Row(
        "LRN lowers CIFAR-10 test error (four-layer net, sec. 3.3)",
        "13% -> 11% (-2.0 pt)",
        ("cifar_lrn", "cifar_lrn_cpu"),
        "cifar_lrn",
        "make ablate GRID=cifar_lrn_cpu SWEEP=results/cifar_lrn_cpu",
    ),
    Row(
        "ReLU reaches 25% train error sooner than tanh (Fig. 1)",
        "6x fewer epochs",
        ("relu_vs_tanh", "relu_vs_tanh_cpu"),
        "relu_vs_tanh",
        "make ablate GRID=relu_vs_tanh_cpu SWEEP=results/relu_vs_tanh_cpu",
        metric="tanh/relu epochs to 25% train err",
    ),
    Row(
        "AlexNet-CIFAR (`make train`) test top-1 error",
        "(no CIFAR figure)",
        ("cifar10_alexnet",),
        "run",
        'make train ARGS="hydra.run.dir=results/cifar10_alexnet"',
    ),
    Row(
        "LRN lowers error (AlexNet-CIFAR, sec. 3.3)",
        "-1.4 pt top-1 (ImageNet)",
        ("lrn_pool",),
        "lrn",
        "make ablate GRID=lrn_pool SWEEP=results/lrn_pool",
    ),
    Row(
        "Overlapping pooling lowers error (sec. 3.4)",
        "-0.4 pt top-1 (ImageNet)",
        ("lrn_pool",),
        "pool",
        "make ablate GRID=lrn_pool SWEEP=results/lrn_pool",
    ),
    Row(
        "Two towers beat one of half width (sec. 3.2)",
        "-1.7 pt top-1 (ImageNet)",
        ("towers",),
        "towers",
        "make ablate GRID=towers SWEEP=results/towers",
    ),
    Row(
        "AlexNet on ILSVRC-2012 val, one CNN (sec. 6)",
        "40.7% top-1 error",
        ("paper_imagenet",),
        "run",
        'make train ARGS="experiment=paper_imagenet hydra.run.dir=results/paper_imagenet"',
    ),
)


def _records(folder: Path) -> list[dict]:
    """The results.json of a run folder, or of every job of a grid folder."""
    paths = (
        [folder / "results.json"]
        if (folder / "results.json").is_file()
        else sorted(folder.glob("*/results.json"))
    )
    return [json.loads(p.read_text()) for p in paths]


def hardware(records: Sequence[dict]) -> str:
    devices = sorted({(r.get("provenance") or {}).get("device") or "unrecorded" for r in records})
    return "; ".join(devices)


def wall_time(records: Sequence[dict]) -> str:
    """Training time summed over the jobs (and over each job's resumed attempts)."""
    seconds = sum(float(r.get("train_time_s") or r.get("wall_time_s") or 0) for r in records)
    return format_duration(seconds)


def _claim_row(report_csv: Path, row: Row) -> dict[str, str] | None:
    with report_csv.open(newline="") as f:
        for r in csv.DictReader(f):
            name = r["name"] if r["name"] == "relu_vs_tanh" else r["detail"].split(":")[0]
            if r["section"] == "claim" and name == row.key and r["metric"] == row.metric:
                return r
    return None


def _ours_from_claim(r: dict[str, str], row: Row) -> str:
    if not r["mean"]:
        return f"n/a ({r['detail']})" if r["detail"] else "n/a"
    if row.key == "relu_vs_tanh":
        mean, low, high, unit = float(r["mean"]), r["ci_low"], r["ci_high"], "x"
        if not r["n"]:  # tanh never reached 25%: the mean is a lower bound (report.tables)
            return f"{at_least(mean)} ({r['detail']})"
        ci = f" [{float(low):.1f}, {float(high):.1f}]" if low and high else ""
        return f"{mean:.1f}{unit}{ci}, n={r['n']}"
    mean = float(r["mean"])  # report.csv holds effects in points already
    ci = (
        f" [{float(r['ci_low']):+.1f}, {float(r['ci_high']):+.1f}]"
        if r["ci_low"] and r["ci_high"]
        else ""
    )
    return f"{mean:+.1f} pt{ci}, n={r['n']}"


def _ours_from_run(records: Sequence[dict]) -> tuple[str, str]:
    [record] = records
    if record.get("status") != Status.OK:
        return f"unfinished ({record.get('status')})", "-"
    err = record["metrics"].get("test/top1_err")
    return (f"{err * SCALE:.1f}% ({(1 - err) * SCALE:.1f}% accuracy), n=1", "-")


def _no_verdict(folder: Path, records: Sequence[dict]) -> str:
    """What a grid without the claim's row says: no report, or how far its jobs got."""
    if not (folder / "report.csv").is_file():
        return "no report yet"
    with (folder / "report.csv").open(newline="") as f:
        unfinished = sum(r["section"] == "job" for r in csv.DictReader(f))
    done = sum(r.get("status") == Status.OK for r in records)
    return f"no verdict yet ({done} of {done + unfinished} jobs finished)"


def table_rows(results_dir: Path) -> list[list[str]]:
    rows = []
    for row in ROWS:
        folder = next((results_dir / g for g in row.grids if (results_dir / g).is_dir()), None)
        if folder is None:
            rows.append([row.claim, row.paper, "not run yet", "-", "-", "-", f"`{row.command}`"])
            continue
        records = _records(folder)
        link = f"[{folder.name}]({folder.as_posix()}/" + (
            "report.md)" if row.key != "run" else "results.json)"
        )
        if row.key == "run":
            ours, verdict = _ours_from_run(records)
        else:
            found = (
                _claim_row(folder / "report.csv", row)
                if (folder / "report.csv").is_file()
                else None
            )
            ours = _ours_from_claim(found, row) if found else _no_verdict(folder, records)
            verdict = found["verdict"] if found else "-"
        rows.append(
            [row.claim, row.paper, ours, verdict, hardware(records), wall_time(records), link]
        )
    return rows


def render(results_dir: Path) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table_rows(results_dir)
    ]
    return "\n".join(lines) + "\n"


def replace_in(readme: Path, table: str) -> bool:
    """Put `table` between the README's markers; returns whether the file changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block to hold the results table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table}{END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--readme", help="rewrite the table in this README")
    args = parser.parse_args(argv)
    table = render(Path(args.results_dir))
    if args.readme:
        try:
            changed = replace_in(Path(args.readme), table)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{args.readme}: results table {'updated' if changed else 'unchanged'}")
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
