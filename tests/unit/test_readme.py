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


def test_readme_says_what_build_env_builds() -> None:
    """`build-<env>` builds the runtime image (the one tasks/bench run in); the README used to promise both."""
    import argparse

    from torchrig.cli import build_parser

    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `build-<env>`"))
    assert "runtime image" in row and "--target devel" in row and "runtime and devel" not in row
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices["build"].parse_args(["cpu"]).target == "runtime"


def test_nox_is_not_a_runtime_dependency() -> None:
    """The package never imports nox; users of the CLI should not get it."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.split(">")[0].split("=")[0].strip() == "nox" for d in project["dependencies"])
    assert any(d.startswith("nox") for d in project["optional-dependencies"]["test"]), "the tests run nox"
    assert not [p for p in (ROOT / "src" / "torchrig").rglob("*.py") if "import nox" in p.read_text()]
