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
