"""Entry points share through alexnet.config.entry and never import one another."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alexnet"
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
