"""The real images/Dockerfile on the real engine, with fake torch wheels from an HTTPS index on 127.0.0.1.

The index's certificate comes from a CA generated for this session, so a build succeeds only if the CA bundle
reached pip inside the build -- and the same CA must then be nowhere in the image: not in a layer (`docker save`),
not in its config, not in its history. Seconds per build, no internet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.images_support import ROOT, FakeCA, HttpsIndex, extra_env, image_bytes_contain, write_matrix
from torchrig.errors import BuildError
from torchrig.images import BuildOptions, BuiltImage, build_image
from torchrig.matrix import Environment, ImageRef, Matrix

pytestmark = pytest.mark.docker


def _run(client: docker.DockerClient, image: str, script: str, **kw: object) -> str:
    out = client.containers.run(image, ["bash", "-c", script], remove=True, network_disabled=True, **kw)
    return bytes(out).decode()


def _private_ref(name: str) -> ImageRef:
    return ImageRef(immutable=f"torchrig-test:{name}", alias=f"torchrig-test:{name}-alias")


def _remove_ref(client: docker.DockerClient, ref: ImageRef) -> None:
    for name in (ref.immutable, ref.alias):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(name)


def test_the_ca_reaches_pip_and_leaves_no_trace(docker_client: docker.DockerClient, small_env: Environment,
                                                fake_ca: FakeCA) -> None:
    # no_cache: the pip steps must really run in this session, with this session's CA. Under its own tags: the
    # default ones name the session's small_built image, which later tests hold by id.
    ref = _private_ref("ca-reaches-pip")
    try:
        built = build_image(small_env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, no_cache=True,
                                                               ref=ref), client=docker_client, log=print)
        assert any("requirements-torch.txt" in s for s in built.steps_run), "the pip step ran (through the CA)"
        assert _run(docker_client, built.image_id, "python -c 'import torch, torchrig_fake_extra as x; "
                                                   "print(torch.__version__, x.VALUE)'").split() == ["2.0.1", "42"]
        assert image_bytes_contain(docker_client, built.image_id, fake_ca.needles()) == []
    finally:
        _remove_ref(docker_client, ref)


def test_without_the_ca_the_same_build_fails_clearly(docker_client: docker.DockerClient, small_env: Environment,
                                                     fake_ca: FakeCA) -> None:
    """The control for the test above: the host's bundle alone does not trust the test index."""
    from tests.integration.images_support import host_ca_bundle

    with pytest.raises(BuildError) as e:
        build_image(small_env, "runtime", BuildOptions(ca_bundle=host_ca_bundle(), root=ROOT, no_cache=True,
                                                       ref=_private_ref("without-ca")),
                    client=docker_client, log=lambda _: None)
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "SSLError" in str(e.value)


def test_keep_ca_bundle_puts_it_in_the_trust_store(docker_client: docker.DockerClient, small_env: Environment,
                                                   fake_ca: FakeCA, tmp_path: Path) -> None:
    """--keep-ca-bundle: and the search that finds nothing above does find it here (it can fail). Built with the
    layer cache on, twice, with two different kept bundles: the second image must trust the second bundle's extra
    CA, so a layer cached with the first (or an earlier run's) bundle is not reused -- the kept CA's digest is a
    build arg of that step (TORCHRIG_KEPT_CA_SHA256)."""
    from tests.integration.images_support import openssl


    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=second-{fake_ca.marker}",
            "-keyout", str(tmp_path / "second.key"), "-out", str(tmp_path / "second.pem"))
    second = tmp_path / "second-bundle.pem"
    second.write_bytes(fake_ca.bundle.read_bytes().rstrip(b"\n") + b"\n" + (tmp_path / "second.pem").read_bytes())
    refs = [ImageRef(immutable=f"torchrig-test:keep-ca-{n}", alias=f"torchrig-test:keep-ca-{n}-alias") for n in (1, 2)]
    try:
        built = [build_image(small_env, "runtime", BuildOptions(ca_bundle=bundle, keep_ca_bundle=True, root=ROOT,
                                                                ref=ref), client=docker_client, log=lambda _: None)
                 for bundle, ref in zip((fake_ca.bundle, second), refs, strict=True)]
        first_store, second_store = (
            _run(docker_client, b.image_id, "cat /etc/ssl/certs/ca-certificates.crt; cat /etc/pip.conf")
            for b in built)
        for store in (first_store, second_store):
            assert fake_ca.cert.read_text().strip() in store
            assert "cert = /etc/ssl/certs/ca-certificates.crt" in store
        second_cert = (tmp_path / "second.pem").read_text().strip()
        assert second_cert not in first_store
        assert second_cert in second_store, "the keep-CA layer was reused from the build with the other bundle"
        assert image_bytes_contain(docker_client, built[0].image_id, fake_ca.needles())
    finally:
        for ref in refs:
            for name in (ref.immutable, ref.alias):
                with contextlib.suppress(docker.errors.ImageNotFound):
                    docker_client.images.remove(name)


def test_the_image_runs_as_the_user_with_its_labels_and_no_caches(docker_client: docker.DockerClient,
                                                                  small_built: BuiltImage) -> None:
    out = _run(docker_client, small_built.image_id,
               "id -un; id -u; pwd; touch /workspace/x /opt/venv/x && echo writable; "
               "ls -d ~/.cache/pip /root/.cache/pip /tmp/torchrig-build-ca.pem 2>/dev/null | wc -l; "
               "ls /var/lib/apt/lists | wc -l; echo $TORCHRIG_ENV_ID $TORCHRIG_TORCH_VERSION $TORCHRIG_ACCELERATOR")
    assert out.split("\n")[:5] == ["torchrig", "1000", "/workspace", "writable", "0"]
    assert out.split("\n")[6] == "small 2.0.1 cpu"
    labels = small_built.labels
    assert labels["io.torchrig.env"] == "small"
    assert labels["org.opencontainers.image.version"] == "2.0.1-cpu-py3.11"
    for key in ("title", "version", "revision", "created", "source"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert small_built.ratio <= 1.10, small_built.summary()


@pytest.mark.slow
def test_devel_adds_compilers_and_keeps_the_user(docker_client: docker.DockerClient, small_env: Environment,
                                                 fake_ca: FakeCA) -> None:
    """devel = the runtime's layers + compilers (apt, through the CA when the mirror is HTTPS), same user."""
    options = BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT)
    ref = ImageRef(immutable="torchrig-test:devel-probe-runtime", alias="torchrig-test:devel-probe-runtime-alias")
    runtime = build_image(small_env, "runtime", replace(options, ref=ref), client=docker_client, log=lambda _: None)
    try:
        built = build_image(small_env, "devel", options, client=docker_client, log=lambda _: None)
        out = _run(docker_client, built.image_id, "id -un; gcc --version | head -1; ninja --version; "
                                                  "test -f /usr/include/python3.11/Python.h && echo headers")
        lines = out.splitlines()
        assert lines[0] == "torchrig", "devel runs as the same non-root user"
        assert lines[1].startswith("gcc") and lines[3] == "headers"
        assert built.ref.immutable.endswith("-devel") and built.labels["io.torchrig.target"] == "devel"
        shared = docker_client.images.get(runtime.image_id).attrs["RootFS"]["Layers"][:-3]
        assert docker_client.images.get(built.image_id).attrs["RootFS"]["Layers"][:len(shared)] == shared, \
            "devel builds on the same torch/extras layers as runtime"
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name, noprune=True)


def test_offline_from_a_wheelhouse(docker_client: docker.DockerClient, small_env: Environment,
                                   https_index: HttpsIndex) -> None:
    """--wheelhouse: pip --no-index from wheels served to the build; no CA needed, nothing copied in."""
    ref = ImageRef(immutable="torchrig-test:wheelhouse", alias="torchrig-test:wheelhouse-alias")
    built = build_image(small_env, "runtime", BuildOptions(wheelhouse=https_index.wheels, root=ROOT, ref=ref),
                        client=docker_client, log=lambda _: None)
    try:
        assert _run(docker_client, built.image_id, "python -c 'import torch; print(torch.__version__)'").strip() \
            == "2.0.1"
        names = [p.name.encode() for p in https_index.wheels.glob("*.whl")]
        assert names, "the wheelhouse has wheels to look for"
        assert image_bytes_contain(docker_client, built.image_id, names,
                                   above=small_env.targets["runtime"]) == []
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **(env or {})}
    environ.pop("TORCHRIG_REQUIRE_LOCK", None)  # CI's; the test environments built here have no locks
    return subprocess.run([sys.executable, "-m", "torchrig", *args], capture_output=True, text=True, env=environ,
                          timeout=600)


def test_lock_then_build_with_require_hashes(docker_client: docker.DockerClient, small_matrix: Matrix,
                                             https_index: HttpsIndex, fake_ca: FakeCA, tmp_path: Path) -> None:
    lock = tmp_path / "small.txt"
    r = _cli("--matrix", str(small_matrix.path), "lock", "small", "--ca-bundle", str(fake_ca.bundle),
             "--output", str(lock))
    assert r.returncode == 0, r.stderr
    text = lock.read_text()
    for whl in https_index.wheels.glob("*.whl"):
        # every wheel the index has, except the torch 2.1.0 pair (another environment's)
        wanted = not whl.name.startswith(("torch-2.1.0-", "torchvision-0.16.0-"))
        assert (f"--hash=sha256:{hashlib.sha256(whl.read_bytes()).hexdigest()}" in text) == wanted, whl.name
    assert "# [torch]" in text and "torchrig-fake-extra==1.0" in text.split("# [extras]")[1]

    env = small_matrix.get("small")

    ref = ImageRef(immutable="torchrig-test:locked", alias="torchrig-test:locked-alias")
    built = build_image(env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, lock_file=lock, ref=ref),
                        client=docker_client, log=lambda _: None)
    try:
        assert built.labels["io.torchrig.lock"] == hashlib.sha256(lock.read_bytes()).hexdigest()
        # a lock whose hash does not match the index's file must stop the build: --require-hashes is on
        bad = tmp_path / "bad.txt"
        first_hash = text.split("--hash=sha256:")[1][:64]
        bad.write_text(text.replace(first_hash, "0" * 64))
        with pytest.raises(BuildError, match=r"(?i)hash"):
            build_image(env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, lock_file=bad, ref=ref),
                        client=docker_client, log=lambda _: None)
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name)


BROKEN = """FROM {base}
RUN echo "about to fail" && exit 3
"""


def test_a_failing_dockerfile_exits_non_zero_with_the_log_and_moves_no_tag(
        docker_client: docker.DockerClient, local_base: str, https_index: HttpsIndex, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.broken").write_text(BROKEN.format(base=local_base))
    extra = f"""  - id: broken
    accelerator: cpu
    torch: "2.0.1"
    python: "3.11"
    index: {https_index.url}
    dockerfile: {tmp_path / "Dockerfile.broken"}
    targets: {{runtime: "{local_base}"}}
"""
    m = write_matrix(tmp_path / "matrix.yaml", index=https_index.url, base=local_base, extra_envs=extra)
    ref = m.get("broken").tags("runtime")
    docker_client.images.get(local_base).tag(*ref.alias.rsplit(":", 1))  # an older image under the alias
    before = {name: _image_id(docker_client, name) for name in (ref.immutable, ref.alias)}
    try:
        r = _cli("--matrix", str(m.path), "build", "broken", "--ca-bundle", "none")
        assert r.returncode == 4, r.stderr
        assert "building broken/runtime failed at step 2/" in r.stderr
        assert "  | about to fail" in r.stderr
        assert "returned a non-zero code: 3" in r.stderr
        assert "Traceback" not in r.stderr
        after = {name: _image_id(docker_client, name) for name in (ref.immutable, ref.alias)}
        assert after == before, "neither name moved"
    finally:
        docker_client.images.remove(ref.alias)


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


def test_a_base_with_the_wrong_python_fails_clearly(docker_client: docker.DockerClient, local_base: str,
                                                    https_index: HttpsIndex, tmp_path: Path) -> None:
    """A base matrix.yaml's validator does not know (so only the build can tell) with another Python."""
    unknown = "torchrig-test-base:unknown-python"
    docker_client.images.get(local_base).tag(*unknown.rsplit(":", 1))
    extra = extra_env("py310", torch="2.0.1", python="3.10", index=https_index.url, base=unknown)
    try:
        m = write_matrix(tmp_path / "matrix.yaml", index=https_index.url, base=local_base, extra_envs=extra)
        with pytest.raises(BuildError) as e:
            build_image(m.get("py310"), "runtime", BuildOptions(root=ROOT), client=docker_client, log=lambda _: None)
        assert "python3 is 3.11" in str(e.value) and "needs Python 3.10" in str(e.value)
    finally:
        docker_client.images.remove(unknown)


def test_over_budget_fails_and_tags_nothing(docker_client: docker.DockerClient, small_env: Environment,
                                            fake_ca: FakeCA) -> None:

    ref = ImageRef(immutable="torchrig-test:over-budget", alias="torchrig-test:over-budget-alias")
    with pytest.raises(BuildError, match="over its size budget of 1 MB"):
        build_image(small_env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, ref=ref,
                                                       size_budget_mb=1), client=docker_client, log=lambda _: None)
    for name in (ref.immutable, ref.alias):
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(name)


def test_ensure_image_reuses_an_image_built_from_the_same_inputs(docker_client: docker.DockerClient,
                                                                 small_env: Environment, small_built: BuiltImage,
                                                                 fake_ca: FakeCA) -> None:
    from torchrig.images import ensure_image, find_image

    lines: list[str] = []
    again = ensure_image(small_env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT),
                         client=docker_client, log=lines.append)
    assert again.reused and again.image_id == small_built.image_id
    assert any("reusing" in ln for ln in lines) and not any("] step " in ln for ln in lines), "nothing was built"
    assert find_image(small_env, "runtime", BuildOptions(root=ROOT), client=docker_client) is not None, \
        "the CA bundle is not an input"
    other = BuildOptions(root=ROOT, uid=1234)
    assert find_image(small_env, "runtime", other, client=docker_client) is None, "another UID is another image"


def test_runtime_images_compile_cpp_against_python_where_torch_compile_works(
        docker_client: docker.DockerClient, small_built: BuiltImage, local_base: str, *, https_index: HttpsIndex,
        fake_ca: FakeCA, tmp_path: Path) -> None:
    """inductor compiles C++ that includes Python.h (and Triton its launcher): what the image must be able to do.

    The control: the small image (torch 2.0 on Python 3.11, where torch.compile cannot work) has no compiler.
    """

    assert "no compiler" in _run(docker_client, small_built.image_id, "command -v gcc g++ || echo no compiler")
    extra = extra_env("compiles", torch="2.1.0", python="3.11", index=https_index.url, base=local_base)
    m = write_matrix(tmp_path / "matrix.yaml", index=https_index.url, base=local_base, extra_envs=extra)
    ref = ImageRef(immutable="torchrig-test:compiles", alias="torchrig-test:compiles-alias")
    built = build_image(m.get("compiles"), "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, ref=ref),
                        client=docker_client, log=print)
    try:
        script = r"""set -e
inc="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
printf '#include <Python.h>\n#include <vector>\n' > /tmp/t.cpp
printf 'int main() { std::vector<int> v{1, 2}; return PY_MAJOR_VERSION - 3 + v.size() - 2; }\n' >> /tmp/t.cpp
g++ -O2 -I"$inc" /tmp/t.cpp -o /tmp/t 2>&1
g++ -O2 -shared -fPIC -I"$inc" /tmp/t.cpp -o /tmp/t.so 2>&1
/tmp/t && echo compiled
id -u
ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' | wc -l
"""
        out = _run(docker_client, built.image_id, script).split()
        assert out == ["compiled", "1000", "0"], out
        grown = (built.size_bytes - small_built.size_bytes) / 1e6
        print(f"\nthe C/C++ compiler + Python headers add {grown:,.0f} MB to a runtime image")
        assert grown < 400
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name)
