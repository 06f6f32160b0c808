"""Rebuilds: editing task code rebuilds only the last layers, in seconds (the big cpu image, from the layer cache);
two ``--no-cache`` builds of the same inputs give the same packages, labels and layers (the small image, installed
from a lock by uv)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.integration.images_support import ROOT, FakeCA, HttpsIndex, cpu_options
from torchrig.images import BuildOptions, BuiltImage, build_image
from torchrig.images.lock import read_lock
from torchrig.images.uvlock import write_lock
from torchrig.matrix import Environment, ImageRef, Matrix

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# What "seconds" means on this 2-core CI machine for a 5 GB image: cache checks for ~50 steps, two small COPY
# layers, the label steps, and measuring site-packages in a container. Measured 2-5 s (docs/images.md).
REBUILD_BUDGET_S = 30


def _checkout_copy(dst: Path) -> Path:
    """The parts of the checkout a build reads, copied so the test can edit task code."""
    dst.mkdir(parents=True, exist_ok=True)
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


def _layer_steps(client: docker.DockerClient, image_id: str, n: int) -> list[str]:
    """The instruction that made each of the image's last ``n`` layers (base layers: "base"), oldest first."""
    # a step that changes nothing (the runtime stage's compiler step without a compiler) makes no layer: size 0
    made = [" ".join(h["CreatedBy"].split("#(nop)")[-1].split()) for h in reversed(client.api.history(image_id))
            if h.get("Size")]
    made = [m[:80] if m.startswith("COPY") else "RUN " + m.split(" -c ", 1)[-1][:80] for m in made]
    return (["base"] * n + made)[-n:]


def _freeze(client: docker.DockerClient, image_id: str) -> str:
    out = client.containers.run(image_id, ["pip", "freeze", "--all"], remove=True, network_mode="none")
    return out.decode() if isinstance(out, bytes) else str(out)


def test_two_no_cache_builds_of_the_same_inputs_are_identical(
        docker_client: docker.DockerClient, small_env: Environment, fake_ca: FakeCA, https_index: HttpsIndex,
        tmp_path: Path) -> None:
    """The small image, locked with uv on the host and installed from the lock by uv in the build (uv from PyPI,
    through the CA bundle), built twice with --no-cache: same pip freeze, same labels; layers compared. From a copy
    of the checkout, so that nobody editing the code between the two builds changes their inputs."""
    root = _checkout_copy(tmp_path / "root")
    lock_file = write_lock(small_env, BuildOptions(ca_bundle=fake_ca.bundle, root=root), output=tmp_path / "small.txt")
    lock = read_lock(lock_file)
    assert lock is not None
    ref = ImageRef(immutable="torchrig-test/small-rebuild:a", alias="torchrig-test/small-rebuild:b")
    options = BuildOptions(ca_bundle=fake_ca.bundle, root=root, lock_file=lock_file, require_lock=True,
                           no_cache=True, ref=ref, source_date_epoch=1700000000)
    built: list[BuiltImage] = []
    logs: list[list[str]] = []
    try:
        for _ in range(2):
            log: list[str] = []
            built.append(build_image(small_env, "runtime", options, client=docker_client, log=log.append))
            logs.append(log)
        first, second = built
        a, b = _layers(docker_client, first.image_id), _layers(docker_client, second.image_id)
        steps = _layer_steps(docker_client, first.image_id, len(a))
        differ = [steps[i] for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        print(f"\nlayers identical in two --no-cache builds: {len(a) - len(differ)} of {len(a)}; image ids "
              f"{first.image_id[7:19]} / {second.image_id[7:19]}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            print(f"  {'same   ' if x == y else 'DIFFERS'} {x[7:19]} {y[7:19]}  {steps[i]}")
        # The legacy builder stamps the directory a COPY writes into with the build's clock: those layers (a few
        # kB: requirement files, code) differ. Every RUN layer -- Python and the user, the venv, torch, the extras --
        # must not.
        assert differ and all(s.startswith("COPY") for s in differ), differ
        assert "installing the lock with uv 0." in "\n".join(logs[0]), "the lock was installed by uv"
        assert first.labels["io.torchrig.lock"] == lock.sha256
        assert first.labels["io.torchrig.lock.file"] == "locks/small.txt"
        assert first.labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
        # every label but the SBOM's digest: the SBOM names the image's layers, and the COPY layers differ
        assert {k: (v, second.labels.get(k)) for k, v in first.labels.items()
                if second.labels.get(k) != v and k != "io.torchrig.sbom.sha256"} == {}
        freeze = _freeze(docker_client, first.image_id)
        assert "torchrig-fake-extra==1.0" in freeze and "torch==2.0.1" in freeze
        assert freeze == _freeze(docker_client, second.image_id)
    finally:
        for name in (ref.immutable, ref.alias):
            if docker_client.images.list(name=name):
                docker_client.images.remove(name)
        for image in built:
            _remove_if_untagged(docker_client, image.image_id)
