"""The README, the matrix and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

from torchrig.matrix import load_matrix
from torchrig.matrix.docs import README_BEGIN, README_END, env_table_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the quick start has a bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_env_table_is_generated_from_the_matrix() -> None:
    table = README.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert table == env_table_markdown(load_matrix(ROOT / "matrix.yaml")).strip(), \
        "README table is stale: regenerate it with `torchrig readme-table`"


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    test_command = commands[1]
    assert test_command == "nox -s tests"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*(python3 -m )?nox -s tests\b", ci, re.M), ".ci/run runs the README's test command"


def test_every_environment_is_in_the_readme() -> None:
    for env_id in load_matrix(ROOT / "matrix.yaml").ids:
        assert f"| `{env_id}` |" in README
