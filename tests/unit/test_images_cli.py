"""The image commands as a user meets them: flags, and no traceback when no engine answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchrig.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **env}
    return subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), *args],
                          capture_output=True, text=True, env=environ, timeout=60)


@pytest.mark.parametrize("command", [["build", "cpu"], ["push", "cpu"], ["pull", "cpu"], ["pin-bases", "cpu"],
                                     ["images", "cpu"], ["base-local"]])
def test_no_engine_is_a_clear_message_naming_docker_host(command: list[str]) -> None:
    r = _cli(*command, DOCKER_HOST="unix:///nonexistent/docker.sock", TORCHRIG_CA_BUNDLE="none")
    assert r.returncode == 3, r.stderr
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock" in r.stderr
    assert "Start the Docker daemon" in r.stderr
    assert "Traceback" not in r.stderr


def test_build_offers_every_site_override() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    flags = {o for a in sub["build"]._actions for o in a.option_strings}
    assert {"--base-image", "--index-url", "--extra-index-url", "--wheelhouse", "--ca-bundle", "--keep-ca-bundle",
            "--size-budget-mb", "--target", "--no-lock", "--reuse"} <= flags
    help_text = sub["build"].format_help()
    for var in ("TORCHRIG_BASE_IMAGE", "TORCHRIG_INDEX_URL", "TORCHRIG_EXTRA_INDEX_URL", "TORCHRIG_WHEELHOUSE",
                "TORCHRIG_CA_BUNDLE", "TORCHRIG_SIZE_BUDGET_MB"):
        assert var in help_text


def test_an_unknown_environment_is_a_usage_error() -> None:
    r = _cli("build", "cpuu")
    assert r.returncode == 2
    assert "Perhaps you meant 'cpu'?" in r.stderr


def test_a_missing_ca_bundle_is_named_before_any_engine_is_needed(tmp_path: Path) -> None:
    r = _cli("build", "cpu", "--ca-bundle", str(tmp_path / "nope.pem"), DOCKER_HOST="unix:///nonexistent")
    assert r.returncode == 2, r.stderr
    assert "nope.pem" in r.stderr and "--ca-bundle" in r.stderr
