"""What a build is made of, decided without a daemon: options, requirement files, build args, labels, inputs."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from torchrig.errors import UsageError
from torchrig.images import BuildOptions, extras_as_constraints, image_labels
from torchrig.images.plan import plan_build
from torchrig.matrix import Environment, load_matrix
from torchrig.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPI = "https://pypi.org/simple"


class _Images:
    def get(self, name: str) -> Any:
        raise docker.errors.ImageNotFound(name)


class FakeClient:
    """Enough of docker.DockerClient for planning: no image exists locally."""

    images = _Images()


@pytest.fixture(scope="module")
def env() -> Environment:
    return load_matrix(ROOT / "matrix.yaml").get("cpu")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the checkout's parts a build reads, so tests can change code and locks freely."""
    for d in ("images", "src/torchrig", "tasks", "bench"):
        if (ROOT / d).is_dir():
            shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "locks").mkdir()
    return tmp_path


def _files(plan: Any) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(plan.context.data)) as tar:
        return {m.name.removeprefix("torchrig-build/"): tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.name.startswith("torchrig-build/") and m.name.endswith(".txt")}


def test_options_come_from_flags_then_torchrig_variables(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    (tmp_path / "wh").mkdir()
    environ = {"TORCHRIG_BASE_IMAGE": "torchrig-base:bookworm", "TORCHRIG_INDEX_URL": PYPI,
               "TORCHRIG_EXTRA_INDEX_URL": "https://a.example/simple https://b.example/simple",
               "TORCHRIG_WHEELHOUSE": str(tmp_path / "wh"), "TORCHRIG_CA_BUNDLE": str(ca),
               "TORCHRIG_KEEP_CA_BUNDLE": "1", "TORCHRIG_SIZE_BUDGET_MB": "6000"}
    o = BuildOptions.from_settings(Settings.from_environ(environ))
    assert (o.base_image, o.index_url, o.wheelhouse, o.ca_bundle, o.keep_ca_bundle, o.size_budget_mb) == (
        "torchrig-base:bookworm", PYPI, tmp_path / "wh", ca, True, 6000)
    assert o.extra_index_urls == ("https://a.example/simple", "https://b.example/simple")
    o = BuildOptions.from_settings(Settings.from_environ(environ, flags={
        "base-image": "python:3.11-slim-bookworm", "index-url": "https://m/simple", "extra-index-url": [],
        "size-budget-mb": 100, "keep-ca-bundle": False, "ca-bundle": "none"}))
    assert (o.base_image, o.index_url, o.extra_index_urls, o.size_budget_mb, o.keep_ca_bundle, o.ca_bundle) == (
        "python:3.11-slim-bookworm", "https://m/simple", (), 100, False, None)
    with pytest.raises(UsageError, match="TORCHRIG_SIZE_BUDGET_MB"):
        Settings.from_environ({"TORCHRIG_SIZE_BUDGET_MB": "lots"})


def test_options_carry_the_cache_and_keep_containers_settings(tmp_path: Path) -> None:
    o = BuildOptions.from_settings(Settings.from_environ({"TORCHRIG_CACHE": str(tmp_path),
                                                          "TORCHRIG_KEEP_CONTAINERS": "1"}))
    assert (o.cache_dir, o.keep_containers) == (tmp_path, True)
    plain = BuildOptions()
    assert (plain.cache_dir, plain.keep_containers, plain.ca_bundle) == (None, False, None), \
        "options built by hand take nothing from the environment"


def test_unlocked_builds_pin_torch_and_carry_the_extras_pins_into_the_torch_layer(env: Environment,
                                                                                 root: Path) -> None:
    files = _files(plan_build(env, "runtime", BuildOptions(root=root), FakeClient()))  # type: ignore[arg-type]
    assert files["requirements-torch.txt"] == "torch==2.0.1\ntorchvision==0.15.2\n"
    assert files["constraints.txt"] == "torch==2.0.1\ntorchvision==0.15.2\n"
    assert "numpy<2\n" in files["constraints-torch.txt"], "else torch's layer gets numpy 2 and the extras a 2nd copy"
    # then compat.yaml's runtime pins for torch 2.0.1 (setuptools<82: pkg_resources; numpy<2 is in the extras)
    assert files["requirements-extras.txt"].splitlines() == [*env.extras, "setuptools<82", "pytest>=7.3",
                                                             "pytest-benchmark>=4.0"]


def test_extras_become_constraints_without_their_extras_or_urls() -> None:
    assert extras_as_constraints(["transformers[torch]==4.40.2", "six", "numpy<2; python_version<'3.13'",
                                  "pkg @ https://x/pkg.whl"]) == \
        "transformers==4.40.2\nnumpy<2; python_version<'3.13'\n"


def _lock(env: Environment, root: Path, index: str, path: Path | None = None) -> Path:
    from torchrig.images.lock import LockedPackage, format_lock, lock_path

    # a lock holds every pin of its row (torch and torchvision at the row's versions), else it is stale
    pkgs = [LockedPackage(name="torch", version="2.0.1", hashes=("sha256:" + "a" * 64,), section="torch"),
            LockedPackage(name="torchvision", version="0.15.2", hashes=("sha256:" + "c" * 64,), section="torch"),
            LockedPackage(name="six", version="1.16.0", hashes=("sha256:" + "b" * 64,), section="extras")]
    pins = [r.split("==") for r in env.requirements() if "==" in r and not r.startswith(("torch==", "torchvision=="))]
    pkgs += [LockedPackage(name=n, version=v, hashes=("sha256:" + "d" * 64,), section="extras") for n, v in pins]
    path = path or lock_path(root, env, index_url=index, extra_index_urls=())  # locks/cpu@pypi.org-simple.txt
    path.write_text(format_lock(env=env, index_url=index, extra_index_urls=(), resolver="uv 0.13.9",
                                platform="x86_64-manylinux_2_17", packages=pkgs))
    return path


def test_a_matching_lock_feeds_the_requirement_files_and_the_label(env: Environment, root: Path) -> None:
    path = _lock(env, root, PYPI)
    plan = plan_build(env, "runtime", BuildOptions(root=root, index_url=PYPI), FakeClient())  # type: ignore[arg-type]
    files = _files(plan)
    assert files["requirements-torch.txt"].startswith("torch==2.0.1 \\\n    --hash=sha256:aaaa")
    assert "six==1.16.0 \\\n    --hash=sha256:bbbb" in files["requirements-extras.txt"]
    import hashlib

    assert plan.labels["io.torchrig.lock"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_lock_for_another_index_is_ignored(env: Environment, root: Path) -> None:
    _lock(env, root, PYPI, root / "locks" / "cpu.txt")  # resolved against PyPI, saved as the CPU index's lock
    plan = plan_build(env, "runtime", BuildOptions(root=root), FakeClient())  # type: ignore[arg-type]
    assert plan.labels["io.torchrig.lock"] == "none"
    assert plan.lock.message.startswith("warning: lock: NOT used")
    assert "--hash" not in _files(plan)["requirements-torch.txt"]


def test_build_args_carry_no_ca_and_no_server_address(env: Environment, root: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nSECRETISH\n-----END CERTIFICATE-----\n")
    plan = plan_build(env, "runtime", BuildOptions(root=root, ca_bundle=ca), FakeClient())  # type: ignore[arg-type]
    blob = repr(plan.buildargs) + repr(plan.labels)
    assert "SECRETISH" not in blob and str(ca) not in blob
    assert not {"FTP_PROXY", "HTTP_PROXY"} & set(plan.buildargs)
    assert plan.buildargs["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    assert plan.buildargs["PYTHON_VERSION"] == "3.11"


def test_the_inputs_label_changes_with_code_and_index_but_not_with_the_ca(env: Environment, root: Path,
                                                                          tmp_path: Path) -> None:
    ca1, ca2 = tmp_path / "1.pem", tmp_path / "2.pem"
    ca1.write_text("one")
    ca2.write_text("two")

    def inputs(**kw: Any) -> str:
        return plan_build(env, "runtime", BuildOptions(root=root, **kw), FakeClient()).inputs  # type: ignore[arg-type]

    first = inputs(ca_bundle=ca1)
    assert inputs(ca_bundle=ca2) == first, "the CA is not in the image, so it is not an input"
    assert inputs(ca_bundle=ca1, index_url=PYPI) != first
    assert inputs(ca_bundle=ca1, keep_ca_bundle=True) != first, "a kept CA is part of the image"
    (root / "tasks" / "new_task.py").write_text("print(1)\n")
    assert inputs(ca_bundle=ca1) != first


def test_labels_carry_oci_and_torchrig_provenance(env: Environment) -> None:
    ref = env.tags("runtime")
    labels = image_labels(env, "runtime", ref, base="torchrig-base:bookworm", index_url=PYPI, lock_sha256="f" * 64,
                          inputs="i" * 64, revision="abc123", created="2025-01-01T00:00:00Z")
    assert labels["org.opencontainers.image.version"] == "2.0.1-cpu-py3.11"
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.created"] == "2025-01-01T00:00:00Z"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.title"] == "torchrig cpu (runtime)"
    assert (labels["io.torchrig.env"], labels["io.torchrig.torch"], labels["io.torchrig.python"],
            labels["io.torchrig.cuda"], labels["io.torchrig.lock"]) == ("cpu", "2.0.1", "3.11", "none", "f" * 64)


def test_tags_come_from_the_matrix_or_the_override(env: Environment, root: Path) -> None:
    from torchrig.matrix import ImageRef

    plan = plan_build(env, "runtime", BuildOptions(root=root), FakeClient())  # type: ignore[arg-type]
    assert plan.ref == env.tags("runtime")
    mine = ImageRef(immutable="localhost/x:1", alias="localhost/x:latest")
    assert plan_build(env, "runtime", BuildOptions(root=root, ref=mine), FakeClient()).ref == mine  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "match"), [
    ({"index_url": "https://user:pw@pypi.example/simple"}, "credentials"),
    ({"index_url": "ftp://pypi.example/simple"}, "not an http"),
    ({"keep_ca_bundle": True}, "needs a CA bundle"),
])
def test_options_that_cannot_work_are_refused_before_building(env: Environment, root: Path, kw: dict[str, Any],
                                                              match: str) -> None:
    with pytest.raises(UsageError, match=match):
        plan_build(env, "runtime", BuildOptions(root=root, **kw), FakeClient())  # type: ignore[arg-type]


def test_a_missing_target_says_how_to_add_one(root: Path) -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    env = m.get("cpu")
    env = Environment(**{**env.__dict__, "targets": {"runtime": env.targets["runtime"]}})
    with pytest.raises(UsageError, match="no 'devel' target"):
        plan_build(env, "devel", BuildOptions(root=root), FakeClient())  # type: ignore[arg-type]


def test_targets_pick_the_dockerfile_stage_of_the_same_name(tmp_path: Path) -> None:
    from torchrig.images.plan import dockerfile_stage as _stage

    assert _stage(ROOT / "images" / "Dockerfile", "runtime") == "runtime"
    assert _stage(ROOT / "images" / "Dockerfile", "devel") == "devel"
    single = tmp_path / "Dockerfile"
    single.write_text("FROM debian:bookworm\nRUN true\n")
    assert _stage(single, "runtime") is None, "a Dockerfile without stages is built whole"
    single.write_text("FROM debian:bookworm AS base\nFROM base AS app\n")
    with pytest.raises(UsageError, match="no 'runtime' stage"):
        _stage(single, "runtime")


def test_labels_go_into_the_target_stage_as_one_instruction() -> None:
    from torchrig.images import with_labels

    text = (ROOT / "images" / "Dockerfile").read_text()
    out = with_labels(text, "runtime", {"b": 'say "hi" for $5', "a": "1"})
    runtime = out[out.index("FROM base AS runtime"):out.index("FROM base AS devel")]
    assert 'LABEL "a"="1" \\\n    "b"="say \\"hi\\" for \\$5"\n' in runtime
    assert out.count("LABEL ") == text.count("LABEL ") + 1
    assert with_labels("FROM x\nRUN y\n", None, {"k": "v"}).rstrip().endswith('LABEL "k"="v"')


def test_a_missing_dockerfile_is_a_build_error(env: Environment, root: Path, tmp_path: Path) -> None:
    from torchrig.errors import BuildError

    gone = Environment(**{**env.__dict__, "dockerfile": tmp_path / "nope" / "Dockerfile"})
    with pytest.raises(BuildError, match="does not exist"):
        plan_build(gone, "runtime", BuildOptions(root=root), FakeClient())  # type: ignore[arg-type]


def test_of_images_with_the_same_inputs_the_one_with_the_immutable_tag_wins() -> None:
    from torchrig.images.build import _pick

    tag = "ghcr.io/torchrig/torchrig:2.0.1-cpu-py3.11"
    older_tagged = ("sha256:a", [tag, "ghcr.io/torchrig/torchrig:cpu"], "2026-11-22T10:00:00Z")
    newer_dangling = ("sha256:b", [], "2026-11-22T11:00:00Z")
    newer_other_tag = ("sha256:c", ["torchrig-test/probe:x"], "2026-11-22T12:00:00Z")
    assert _pick(tag, [newer_dangling, older_tagged, newer_other_tag]) == "sha256:a"
    assert _pick(tag, [newer_dangling, newer_other_tag]) == "sha256:c", "a tagged image before a dangling one"
    assert _pick(tag, [("sha256:d", [], "2026-11-22T09:00:00Z"), newer_dangling]) == "sha256:b", "else the newest"


def test_every_image_carries_what_runs_the_benchmarks_unless_the_extras_pin_it() -> None:
    from dataclasses import replace

    m = load_matrix(ROOT / "matrix.yaml")
    env = m.get("cpu")
    assert env.image_extras[-2:] == ("pytest>=7.3", "pytest-benchmark>=4.0")
    own = replace(env, extras=("Pytest_Benchmark==4.0.0",))
    assert own.image_extras == ("Pytest_Benchmark==4.0.0", "setuptools<82", "numpy<2", "pytest>=7.3"), \
        "the environment's own pin wins; compat.yaml's runtime pins for torch 2.0.1 come before the image's tools"
    assert env.requirements()[-2:] == env.image_extras[-2:], "the lock resolves them too"


def test_runtime_images_get_a_c_compiler_where_torch_compile_can_work(root: Path) -> None:
    from dataclasses import replace

    env = load_matrix(ROOT / "matrix.yaml").get("cpu")  # torch 2.0.1 on Python 3.11: dynamo supports <= 3.10
    assert not env.torch_compile_supported()
    assert plan_build(env, "runtime", BuildOptions(root=root), FakeClient()).buildargs[  # type: ignore[arg-type]
        "TORCHRIG_C_COMPILER"] == "0"
    for torch, tv, py in (("2.0.1", "0.15.2", "3.10"), ("2.14.1", "0.29.1", "3.12")):
        e = replace(env, torch=torch, torchvision=tv, python=py)
        assert e.torch_compile_supported()
        assert plan_build(e, "runtime", BuildOptions(root=root, use_lock=False), FakeClient()).buildargs[  # type: ignore[arg-type]
            "TORCHRIG_C_COMPILER"] == "1"
