"""Fixtures for the task tests: a task runner with its own results directory, and one small synthetic CIFAR-10
(in the real file format) shared by the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.tasks_support import CIFAR_TEST, CIFAR_TRAIN, Run, run_module


@pytest.fixture
def run_task(tmp_path_factory: pytest.TempPathFactory):
    """``run_task("regression", "--quick")``: runs the task with its own results directory."""

    def _run(name: str, *args: str, env: dict[str, str] | None = None) -> Run:
        results = tmp_path_factory.mktemp(f"results-{name}")
        return run_module(f"tasks.{name}", *args, "--results", str(results), results=results, env=env)

    return _run


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic CIFAR-10 (real file format) big enough for quick mode, made once per session."""
    from tasks.make_data import write_synthetic_cifar

    root = tmp_path_factory.mktemp("cifar")
    write_synthetic_cifar(root, seed=0, train_size=CIFAR_TRAIN, test_size=CIFAR_TEST)
    return root
