"""Editing task code rebuilds only the last layers, in seconds (the big cpu image, from the layer cache)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import docker
import pytest
from images_support import ROOT, cpu_options

from torchrig.images import BuiltImage, build_image
from torchrig.matrix import ImageRef, Matrix

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# What "seconds" means on this 2-core CI machine for a 5 GB image: cache checks for ~50 steps, two small COPY
# layers, the label steps, and measuring site-packages in a container. Measured 2-5 s (docs/images.md).
REBUILD_BUDGET_S = 30


def _checkout_copy(dst: Path) -> Path:
    """The parts of the checkout a build reads, copied so the test can edit task code."""
    for d in ("images", "locks", "src/torchrig", "tasks", "bench"):
        if (ROOT / d).is_dir():
            shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def _layers(client: docker.DockerClient, image_id: str) -> list[str]:
    return list(client.images.get(image_id).attrs["RootFS"]["Layers"])


def test_a_task_code_change_rebuilds_only_the_code_layers_in_seconds(
        docker_client: docker.DockerClient, cpu_image: BuiltImage, local_base: str, matrix: Matrix,
        tmp_path: Path) -> None:
    root = _checkout_copy(tmp_path)
    ref = ImageRef(immutable="torchrig-test/cpu-rebuild:probe", alias="torchrig-test/cpu-rebuild:probe-alias")
    env = matrix.get("cpu")
    before: BuiltImage | None = None
    after: BuiltImage | None = None
    try:
        # the copy is built once as it is (its code may differ from the fixture's if someone is editing), ...
        before = build_image(env, "runtime", cpu_options(local_base, root=root, ref=ref), client=docker_client,
                             log=print)
        old = _layers(docker_client, before.image_id)
        # ... then one task file changes
        (root / "tasks" / "_rebuild_probe.py").write_text(f"PROBE = {uuid.uuid4().hex!r}\n")
        t0 = time.monotonic()
        after = build_image(env, "runtime", cpu_options(local_base, root=root, ref=ref), client=docker_client,
                            log=print)
        wall = time.monotonic() - t0
        print(f"\ncode-only rebuild of the cpu image: {wall:.1f} s in all ({after.build_seconds:.1f} s building, "
              f"the rest measuring and tagging); steps that ran: {[' '.join(s.split()[:2]) for s in after.steps_run]}")
        assert wall < REBUILD_BUDGET_S
        ran = {" ".join(s.split()[:2]) for s in after.steps_run if not s.startswith("LABEL")}
        assert ran == {"COPY tasks", "COPY bench"}, after.steps_run
        new = _layers(docker_client, after.image_id)
        assert len(old) == len(new)
        assert old[:-2] == new[:-2], "every layer below tasks/ and bench/ is shared"
        assert old[-2] != new[-2]
        assert after.size_bytes - before.size_bytes < 1_000_000
    finally:
        for name in (ref.immutable, ref.alias):
            if docker_client.images.list(name=name):
                docker_client.images.remove(name)
        # `before` now has no tag but the same inputs label as the fixture's image: remove it, so that no later
        # `ensure_image` has two candidates (it would pick the tagged one, but leave nothing behind anyway)
        for image in (before, after):
            if image is not None:
                _remove_if_untagged(docker_client, image.image_id)


def _remove_if_untagged(client: docker.DockerClient, image_id: str) -> None:
    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)  # and its untagged parents that nothing else uses (the COPY layers)
    except docker.errors.APIError:  # already gone, or a container uses it
        pass
