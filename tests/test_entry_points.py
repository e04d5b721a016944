"""Entry points share through alexnet.config.entry, never import one another, and train imports
torch only once it has a config to run."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "alexnet"
ENTRIES = {
    "alexnet.train": SRC / "train.py",
    "alexnet.eval": SRC / "eval.py",
    "alexnet.bench.__main__": SRC / "bench" / "__main__.py",
    "alexnet.bench.towers": SRC / "bench" / "towers.py",
    "alexnet.prepare": SRC / "prepare.py",
    "alexnet.prepare_store": SRC / "prepare_store.py",
    "alexnet.check_data": SRC / "check_data.py",
    "alexnet.figures.__main__": SRC / "figures" / "__main__.py",
    "alexnet.report.__main__": SRC / "report" / "__main__.py",
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_entry_point_imports_another():
    library = [p for p in SRC.rglob("*.py") if p not in ENTRIES.values()]
    for path in [*ENTRIES.values(), *library]:
        others = imported_modules(path) & (set(ENTRIES) - {_module_of(path)})
        assert not others, f"{path.relative_to(SRC.parent)} imports the entry point(s) {others}"


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def imports_torch(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -X importtime -m alexnet.train ARGS`: its stderr lists every module imported."""
    paths = [str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")]
    helpers = os.pathsep.join(p for p in paths if p)  # an empty entry would add the cwd
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "alexnet.train", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": helpers, "WANDB_MODE": "offline"},
    )


def test_a_refused_config_and_a_multirun_launcher_never_import_torch(tmp_path):
    # train imports torch and Lightning (~4 s of CPU) only once it has a config to run
    torch_imported = re.compile(r"\|\s+torch$", re.M)
    typo = imports_torch("optim.lrr=0.1", tmp_path=tmp_path)
    assert typo.returncode != 0 and "optim.lrr" in typo.stderr
    assert not torch_imported.search(typo.stderr)
    # the launcher process of a grid: its jobs (fake_job here) run in processes of their own
    grid = imports_torch(
        "-m",
        "seed=0,1",
        "hydra.launcher.module=fake_job",
        f"hydra.sweep.dir={tmp_path}/sweep",
        tmp_path=tmp_path,
    )
    assert grid.returncode == 0, grid.stderr[-2000:]
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 2
    assert not torch_imported.search(grid.stderr)
    # the control: the pattern does see torch imported
    control = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import torch"], capture_output=True, text=True
    )
    assert torch_imported.search(control.stderr)
