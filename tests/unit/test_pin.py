"""Pinned bases (locks/bases.yaml) and the created time: what a build's FROM and labels become, without a daemon."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from torchrig.errors import ConfigurationError, RegistryError
from torchrig.images import BuildOptions
from torchrig.images.pin import pin, pin_bases, read_pins, write_pins
from torchrig.images.plan import FALLBACK_EPOCH, created_time, plan_build
from torchrig.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class _Images:
    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests
        self.asked: list[str] = []

    def get(self, name: str) -> Any:
        raise docker.errors.ImageNotFound(name)

    def get_registry_data(self, ref: str) -> Any:
        self.asked.append(ref)
        if ref not in self.digests:
            raise docker.errors.APIError("dial tcp 127.0.0.1:1: connect: connection refused")
        return type("RegistryData", (), {"id": self.digests[ref]})()


class FakeClient:
    def __init__(self, digests: dict[str, str] | None = None) -> None:
        self.images = _Images(digests or {})


def test_a_recorded_digest_pins_the_tag_and_a_digest_reference_stays() -> None:
    pins = {"python:3.11-slim-bookworm": D1}
    p = pin("python:3.11-slim-bookworm", pins)
    assert (p.ref, p.name, p.digest) == (f"python:3.11-slim-bookworm@{D1}", "python:3.11-slim-bookworm", D1)
    p = pin(f"python:3.10-slim@{D2}", pins)
    assert (p.ref, p.name, p.digest) == (f"python:3.10-slim@{D2}", "python:3.10-slim", D2)
    p = pin("torchrig-base:bookworm", pins)
    assert (p.ref, p.digest) == ("torchrig-base:bookworm", None) and "not pinned" in p.describe()


def test_pin_bases_records_every_target_and_keeps_other_pins(tmp_path: Path) -> None:
    matrix = load_matrix(ROOT / "matrix.yaml")
    cpu = matrix.get("cpu")
    path = tmp_path / "locks" / "bases.yaml"
    write_pins(path, {"other:1": D2})
    client = FakeClient({b: D1 for b in cpu.targets.values()})
    lines: list[str] = []
    pins = pin_bases([cpu], client=client, path=path, log=lines.append)  # type: ignore[arg-type]
    assert sorted(client.images.asked) == sorted(cpu.targets.values())
    assert read_pins(path) == pins == {"other:1": D2, **{b: D1 for b in cpu.targets.values()}}
    assert all("(new)" in line for line in lines)
    pin_bases([cpu], client=client, path=path, log=lines.append)  # type: ignore[arg-type]
    assert lines[-1].endswith("(unchanged)")
    assert path.read_text().startswith("# Base image digests: written by `torchrig pin-bases")


def test_a_registry_that_does_not_answer_is_a_registry_error_with_what_to_do(tmp_path: Path) -> None:
    cpu = load_matrix(ROOT / "matrix.yaml").get("cpu")
    with pytest.raises(RegistryError, match=r"cannot resolve python:3\.11-.*is it running"):
        pin_bases([cpu], client=FakeClient(), path=tmp_path / "b.yaml", log=print)  # type: ignore[arg-type]
    assert not (tmp_path / "b.yaml").exists(), "nothing half-written"


@pytest.mark.parametrize("text", ["bases: [a, b]\n", "bases: {'python:3.11': 'latest'}\n", "bases: {: \n"])
def test_a_malformed_pins_file_is_a_configuration_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bases.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=r"bases\.yaml"):
        read_pins(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for d in ("images", "src/torchrig", "tasks", "bench"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_build_from_a_pinned_base_uses_the_digest_and_labels_it(root: Path) -> None:
    env = load_matrix(ROOT / "matrix.yaml").get("cpu")
    base = env.targets["runtime"]
    write_pins(root / "locks" / "bases.yaml", {base: D1})
    plan = plan_build(env, "runtime", BuildOptions(root=root), FakeClient())  # type: ignore[arg-type]
    assert plan.buildargs["BASE_IMAGE"] == f"{base}@{D1}"
    assert plan.labels["org.opencontainers.image.base.name"] == base
    assert plan.labels["org.opencontainers.image.base.digest"] == D1
    unpinned = plan_build(env, "runtime", BuildOptions(root=root, base_image="torchrig-base:bookworm"),
                          FakeClient())  # type: ignore[arg-type]
    assert unpinned.buildargs["BASE_IMAGE"] == "torchrig-base:bookworm"
    assert "org.opencontainers.image.base.digest" not in unpinned.labels


def test_the_created_label_comes_from_the_commit_not_the_clock(root: Path, tmp_path: Path) -> None:
    assert created_time(root, 1700000000) == "2023-11-14T22:13:20Z"
    not_git = tmp_path / "plain"
    not_git.mkdir()
    assert created_time(not_git, None) == "1980-01-01T00:00:00Z" and FALLBACK_EPOCH == 315532800
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_COMMITTER_DATE": "2024-02-03T04:05:06Z", "GIT_AUTHOR_DATE": "2024-02-03T04:05:06Z", "HOME": str(repo)}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "x"], check=True, env=env)
    assert created_time(repo, None) == "2024-02-03T04:05:06Z"
    env_ = load_matrix(ROOT / "matrix.yaml").get("cpu")
    plan = plan_build(env_, "runtime", BuildOptions(root=root, source_date_epoch=1700000000),
                      FakeClient())  # type: ignore[arg-type]
    assert plan.labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
