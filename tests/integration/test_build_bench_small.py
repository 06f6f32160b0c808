"""`torchrig build-bench` end to end on the small image (fake torch from the local HTTPS index, a lock written
with uv on the host): both builds run, the report has a ratio and torchrig's phases, and both images are gone
afterwards. About a minute on this machine when it is quiet."""

from __future__ import annotations

import io
from pathlib import Path

import docker
import pytest

from tests.integration.images_support import ROOT, FakeCA
from torchrig.images import BuildOptions
from torchrig.images.buildbench import BENCH_REPO, bench_build
from torchrig.images.uvlock import write_lock
from torchrig.matrix import Environment

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _bench_images(client: docker.DockerClient) -> set[str]:
    return {tag for image in client.images.list(name=BENCH_REPO) for tag in image.tags}


def test_build_bench_on_the_small_image_reports_a_ratio_and_phases_and_removes_both_images(
        docker_client: docker.DockerClient, small_env: Environment, fake_ca: FakeCA, tmp_path: Path) -> None:
    lock_file = write_lock(small_env, BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT),
                           output=tmp_path / "small.txt", out=io.StringIO())
    before = _bench_images(docker_client)
    log: list[str] = []
    report = bench_build(small_env, BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, lock_file=lock_file),
                         client=docker_client, log=log.append)
    text = "\n".join(report.lines())
    print(text)
    assert report.torchrig_seconds > 0 and report.reference_seconds > 0
    assert f"ratio {report.ratio:.2f}x" in text.splitlines()[0]
    names = [p.name for p in report.phases]
    details = [p.name for p in report.phases if p.detail]
    assert any(n.startswith("step ") and "RUN" in n for n in names), names
    # build-env.sh's own timings, each under the RUN step it ran in
    assert any(n.startswith("venv") for n in details), details
    assert any(n.startswith("install (uv)") for n in details), details
    assert any(n.startswith("compile bytecode") for n in details), details
    assert sum(p.seconds for p in report.phases if not p.detail) <= report.torchrig_seconds * 1.01 + 0.1, \
        "details are parts of their step, not counted again"
    assert any(n.startswith("post: SBOM") for n in names) and any(n.startswith("post: measure") for n in names)
    assert any("[small/hand-written" in line for line in log), "the hand-written build's progress was shown"
    assert report.torchrig_bytes > 0 and report.reference_bytes > 0
    assert _bench_images(docker_client) == before, "both images removed"
