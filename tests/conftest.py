"""Markers that say what a test needs, and the rule that CI may not skip them.

``docker`` tests need a reachable Docker engine, ``torch`` tests need torch, ``gpu`` tests need a GPU. Where the
thing is missing the test is skipped with the reason -- except when ``TORCHRIG_REQUIRE`` names it (``.ci/run``
sets ``TORCHRIG_REQUIRE=docker,torch,slurm,checkov``): then a missing requirement is a failure, so CI cannot go green by
skipping the tests that matter.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest
from hypothesis import HealthCheck, settings

# Property-based tests (hypothesis): a fixed, derandomized "ci" profile with a bounded number of examples per test,
# so `.ci/run` spends a minute or two on them in all and a failure reproduces exactly; "dev" explores far more
# (`HYPOTHESIS_PROFILE=dev nox -s tests -- tests/unit`). Tests that need another budget say so with @settings.
settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@functools.cache
def _docker_problem() -> str | None:
    import gc
    import warnings

    # With no engine, docker.from_env fails while asking for the API version and drops its half-made client, whose
    # socket is then closed by the garbage collector with a ResourceWarning (an error under filterwarnings) in
    # whichever test happens to run next. Collect it here, where that warning is expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=10)
            client.ping()
            client.close()
        except Exception as e:  # noqa: BLE001 - any failure means "no engine here"
            return f"no Docker engine answers (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {e}"
        finally:
            gc.collect()
    return None


@functools.cache
def _torch_problem() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed in this Python (run the suite through `nox -s tests`)"
    return None


@functools.cache
def _gpu_problem() -> str | None:
    if _torch_problem():
        return _torch_problem()
    import torch

    return None if torch.cuda.is_available() else "no CUDA/ROCm GPU visible to torch"


@functools.cache
def _slurm_problem() -> str | None:
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return "Slurm is not installed (apt-get install slurm-wlm munge; tests/integration/slurm_local.sh starts it)"
    proc = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not {"idle", "mix", "alloc"} & set(proc.stdout.split()):
        return f"no Slurm node is up (start one with tests/integration/slurm_local.sh): {proc.stderr.strip()}"
    return None


_CHECKS = {"docker": _docker_problem, "torch": _torch_problem, "gpu": _gpu_problem, "slurm": _slurm_problem}


def _required() -> set[str]:
    return {x.strip() for x in os.environ.get("TORCHRIG_REQUIRE", "").split(",") if x.strip()}


def pytest_runtest_setup(item: pytest.Item) -> None:
    required = _required()
    for name, check in _CHECKS.items():
        if item.get_closest_marker(name) is None:
            continue
        problem = check()
        if problem is None:
            continue
        if name in required:
            pytest.fail(f"TORCHRIG_REQUIRE names {name!r} but {problem}", pytrace=False)
        pytest.skip(problem)
