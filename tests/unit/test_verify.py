"""`torchrig verify`'s comparisons with fake package lists: the drift lines a user reads, what counts as drift and
what does not (the venv's pip, PyPI's default torch build on a CPU environment), and the lookups of the lock and
the SBOM, through a stand-in engine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from torchrig.errors import UsageError
from torchrig.images import verify as verify_mod
from torchrig.images.installed import REQUIREMENT_FILES, Installed, Package, TorchBuild
from torchrig.images.sbom import SBOM_LABEL, dumps, sbom_for, sboms_dir
from torchrig.images.verify import (
    Check,
    Drift,
    Expected,
    Verdict,
    check_labels,
    check_lock,
    check_sbom,
    check_versions,
    diff_packages,
    verify_image,
)
from torchrig.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)


def _installed(*pkgs: tuple[str, str], torch: str = "2.0.1", cuda: str | None = "11.7", python: str = "3.11.2",
               files: dict[str, str] | None = None) -> Installed:
    base = {"torch": torch, "torchvision": "0.15.2", "numpy": "1.26.4", "Jinja2": "3.1.6", "pip": "23.0.1",
            "setuptools": "65.5.0"}
    base.update(dict(pkgs))
    return Installed(python=python, implementation="cpython", executable="/opt/venv/bin/python",
                     packages=tuple(Package(name=n, version=v) for n, v in base.items() if v),
                     torch=TorchBuild(cuda=cuda), files=files or {})


LOCK = {"torch": ("torch", "2.0.1"), "torchvision": ("torchvision", "0.15.2"), "numpy": ("numpy", "1.26.4"),
        "jinja2": ("Jinja2", "3.1.6")}
CPU = Expected(source="matrix.yaml (cpu)", torch="2.0.1", torchvision="0.15.2", python="3.11", accelerator="cpu",
               cuda=None, rocm=None)


def _lines(check: Check) -> list[str]:
    return list(check.details)


def test_diff_names_extra_missing_and_changed_packages_by_canonical_name() -> None:
    want = {"numpy": ("numpy", "1.26.4"), "jinja2": ("Jinja2", "3.1.6"), "six": ("six", "1.16.0")}
    have = {"numpy": ("numpy", "2.0.0"), "jinja2": ("jinja2", "3.1.6"), "requests": ("requests", "2.32.3")}
    assert [str(d) for d in diff_packages(want, have)] == [
        "changed: numpy 1.26.4 -> 2.0.0", "extra: requests 2.32.3", "missing: six 1.16.0"]
    assert diff_packages(want, dict(want)) == []
    assert diff_packages({}, have, ignore_extra=frozenset(have)) == []
    assert Drift("extra", "x", "1", None) in diff_packages({}, {"x": ("x", "1")})


def test_the_lock_check_passes_a_fresh_image_and_ignores_only_the_venv_s_own_tools() -> None:
    ok = check_lock(_installed(), LOCK, label="f" * 64, source="locks/cpu.txt")
    assert ok.status == "ok" and "4 packages as pinned by locks/cpu.txt" in ok.summary
    drift = check_lock(_installed(("requests", "2.32.3"), ("numpy", "2.0.0"), ("Jinja2", "")), LOCK, label="f" * 64,
                       source="locks/cpu.txt")
    assert drift.status == "drift"
    assert _lines(drift) == ["missing: Jinja2 3.1.6", "changed: numpy 1.26.4 -> 2.0.0", "extra: requests 2.32.3"]
    pinned_pip = {**LOCK, "pip": ("pip", "24.0")}
    assert _lines(check_lock(_installed(), pinned_pip, label="f" * 64, source="x")) == ["changed: pip 24.0 -> 23.0.1"]


def test_the_lock_check_is_skipped_without_a_lock() -> None:
    assert check_lock(_installed(), None, label="none", source="").status == "skipped"
    gone = check_lock(_installed(), None, label="f" * 64, source="")
    assert gone.status == "skipped" and "--lock FILE" in gone.summary


def test_versions_of_a_fresh_cpu_image_pass_pypi_s_default_build_included() -> None:
    checks = {c.name: c for c in check_versions(_installed(), CPU)}
    assert all(c.status == "ok" for c in checks.values()), checks
    assert checks["torch"].summary == "2.0.1 (the index's default build, CUDA 11.7: runs on the CPU)"
    assert check_versions(_installed(torch="2.0.1+cpu", cuda=None), CPU)[1].status == "ok"


@pytest.mark.parametrize(("installed", "want", "line"), [
    (_installed(torch="2.0.1+cu117"), CPU, "torch 2.0.1+cu117 is the +cu117 build, matrix.yaml (cpu) is cpu"),
    (_installed(torch="2.1.0"), CPU, "changed: torch 2.0.1 -> 2.1.0"),
    (_installed(("torchvision", "0.16.0+cpu")), CPU, "changed: torchvision 0.15.2 -> 0.16.0+cpu"),
    (_installed(torch=""), CPU, "missing: torch 2.0.1"),
    (_installed(python="3.10.14"), CPU, "changed: python 3.11 -> 3.10.14"),
    (_installed(torch="2.0.1+cu117"), replace(CPU, accelerator="cuda", cuda="11.8"),
     "torch is built for CUDA 11.7, matrix.yaml (cpu) wants CUDA 11.8"),
    (_installed(torch="2.0.1+cpu", cuda=None), replace(CPU, accelerator="cuda", cuda="11.8"),
     "torch 2.0.1+cpu is the +cpu build, matrix.yaml (cpu) is cu118"),
    (_installed(cuda=None), replace(CPU, accelerator="rocm", rocm="5.4.2"),
     "torch has no ROCm (torch.version.hip is None), matrix.yaml (cpu) wants ROCm 5.4.2"),
])
def test_versions_drift_is_named(installed: Installed, want: Expected, line: str) -> None:
    details = [d for c in check_versions(installed, want) for d in c.details]
    assert line in details


def test_a_cuda_and_a_rocm_image_that_match_pass() -> None:
    cuda = replace(CPU, accelerator="cuda", cuda="11.8")
    assert all(c.status == "ok" for c in check_versions(_installed(torch="2.0.1+cu118", cuda="11.8"), cuda))
    rocm = replace(CPU, accelerator="rocm", rocm="5.4.2")
    installed = replace(_installed(torch="2.0.1+rocm5.4.2"), torch=TorchBuild(hip="5.4.22803-474e8620"))
    checks = check_versions(installed, rocm)
    assert all(c.status == "ok" for c in checks) and "ROCm 5.4.22803" in checks[1].summary


def test_expected_comes_from_the_labels_when_no_environment_is_given() -> None:
    labels = {"io.torchrig.torch": "2.0.1", "io.torchrig.torchvision": "0.15.2", "io.torchrig.python": "3.11",
              "io.torchrig.accelerator": "cuda", "io.torchrig.cuda": "11.8", "io.torchrig.rocm": "none"}
    want = Expected.from_labels(labels)
    assert want is not None and want.flavour == "cu118" and want.rocm is None
    assert Expected.from_labels({}) is None
    assert check_versions(_installed(), None)[0].status == "skipped"


def test_labels_of_another_environment_are_drift() -> None:
    env = load_matrix(ROOT / "matrix.yaml").get("cpu")
    labels = {"io.torchrig.env": "cpu", "io.torchrig.torch": env.torch, "io.torchrig.torchvision": env.torchvision,
              "io.torchrig.python": env.python, "io.torchrig.accelerator": "cpu", "io.torchrig.cuda": "none",
              "io.torchrig.rocm": "none"}
    assert check_labels(labels, env).status == "ok"
    off = check_labels({**labels, "io.torchrig.torch": "2.1.0"}, env)
    assert off.status == "drift" and _lines(off) == [f"label io.torchrig.torch is 2.1.0, matrix.yaml says {env.torch}"]


def _sbom(installed: Installed, labels: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    return sbom_for(installed, labels or {"io.torchrig.lock": "none"}, LAYERS)


def test_the_sbom_regenerated_from_an_unchanged_image_matches_its_label() -> None:
    _, sha = _sbom(_installed())
    ok = check_sbom(_installed(), LAYERS, label=sha, regenerated=sha, doc=None, sha256=None, source="")
    assert ok.status == "ok" and "regenerated from the image" in ok.summary
    _, other = _sbom(_installed(("requests", "2.32.3")))
    changed = check_sbom(_installed(), LAYERS, label=sha, regenerated=other, doc=None, sha256=None, source="")
    assert changed.status == "drift" and "--sbom FILE" in changed.summary
    assert check_sbom(_installed(), LAYERS, label=None, regenerated=sha, doc=None, sha256=None,
                      source="").status == "skipped"


def test_the_kept_sbom_names_what_a_derived_image_added() -> None:
    doc, sha = _sbom(_installed())
    derived = _installed(("requests", "2.32.3"))
    _, now = _sbom(derived)
    check = check_sbom(derived, (*LAYERS, "sha256:" + "c" * 64), label=sha, regenerated=now, doc=doc, sha256=sha,
                       source="x.cdx.json")
    assert check.status == "drift"
    assert _lines(check) == ["extra: requests 2.32.3",
                             "layers: 1 layer(s) on top of those the SBOM lists (a derived or modified image)"]
    same = check_sbom(_installed(), LAYERS, label=sha, regenerated=sha, doc=doc, sha256=sha, source="x.cdx.json")
    assert same.status == "ok" and "as x.cdx.json lists them" in same.summary
    foreign = check_sbom(_installed(), LAYERS, label="0" * 64, regenerated=sha, doc=doc, sha256=sha, source="x")
    assert foreign.status == "drift" and "not this image's SBOM" in foreign.summary
    rebased = check_sbom(_installed(), ("sha256:" + "d" * 64, *LAYERS), label=sha, regenerated=sha, doc=doc,
                         sha256=sha, source="x")
    assert _lines(rebased) == ["layers: the image's layers are not those the SBOM lists"]


def test_the_verdict_reads_as_a_list_and_fails_on_any_drift() -> None:
    checks = (Check(name="python", status="ok", summary="3.11.2"), Check(name="lock", status="skipped", summary="-"),
              Check(name="SBOM", status="drift", summary="1 difference(s)", details=("extra: requests 2.32.3",)))
    v = Verdict(image="torchrig-test:small", image_id="sha256:" + "1" * 64, checks=checks)
    assert not v.ok
    text = v.render()
    assert "  ✗ SBOM" in text and "      extra: requests 2.32.3" in text and text.endswith("failed (SBOM)")
    assert Verdict(image="x", image_id="y", checks=checks[:2]).ok


# ------------------------------------------------------------------ verify_image through a stand-in engine


class _Image:
    def __init__(self, labels: dict[str, str], layers: tuple[str, ...] = LAYERS) -> None:
        self.id = "sha256:" + "9" * 64
        self.labels = labels
        self.attrs = {"RootFS": {"Layers": list(layers)}}


class _Images:
    def __init__(self, images: dict[str, _Image]) -> None:
        self.images = images

    def get(self, name: str) -> _Image:
        import docker.errors

        if name not in self.images:
            raise docker.errors.ImageNotFound(f"no such image: {name}")
        return self.images[name]


class _Client:
    def __init__(self, images: dict[str, _Image]) -> None:
        self.images = _Images(images)


LOCK_TEXT = """# torchrig lock v1: environment cpu
# env: cpu
# requirements-sha256: 00
# index-url: https://pypi.org/simple

# [torch]
torch==2.0.1 \\
    --hash=sha256:{h}
torchvision==0.15.2 \\
    --hash=sha256:{h}
numpy==1.26.4 \\
    --hash=sha256:{h}

# [extras]
Jinja2==3.1.6 \\
    --hash=sha256:{h}
""".format(h="e" * 64)


def _verify(monkeypatch: pytest.MonkeyPatch, installed: Installed, labels: dict[str, str], tmp_path: Path,
            **kw: Any) -> Verdict:
    monkeypatch.setattr(verify_mod, "inspect_installed", lambda *a, **k: installed)
    client = _Client({"img": _Image(labels)})
    return verify_image(client, "img", env=None, root=tmp_path, **kw)  # type: ignore[arg-type]


def _labels(lock: str = "none") -> dict[str, str]:
    return {"io.torchrig.env": "cpu", "io.torchrig.torch": "2.0.1", "io.torchrig.torchvision": "0.15.2",
            "io.torchrig.python": "3.11", "io.torchrig.accelerator": "cpu", "io.torchrig.lock": lock}


def test_verify_image_finds_the_lock_by_the_label_s_digest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "other.txt").write_text(LOCK_TEXT)
    sha = hashlib.sha256(LOCK_TEXT.encode()).hexdigest()
    v = _verify(monkeypatch, _installed(), _labels(sha), tmp_path)
    lock = next(c for c in v.checks if c.name == "lock")
    assert v.ok and lock.status == "ok" and str(tmp_path / "locks" / "other.txt") in lock.summary
    tampered = _verify(monkeypatch, _installed(("requests", "2.32.3")), _labels(sha), tmp_path)
    assert not tampered.ok and "extra: requests 2.32.3" in tampered.render()


def test_without_the_lock_file_the_lock_s_sections_in_the_image_are_used(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    body = LOCK_TEXT.split("# [torch]")[1]
    files = {REQUIREMENT_FILES[0]: body.split("# [extras]")[0], REQUIREMENT_FILES[1]: body.split("# [extras]")[1]}
    v = _verify(monkeypatch, _installed(("numpy", "2.0.0"), files=files), _labels("d" * 64), tmp_path)
    lock = next(c for c in v.checks if c.name == "lock")
    assert lock.status == "drift" and "the lock's sections in /etc/torchrig" in lock.summary
    assert _lines(lock) == ["changed: numpy 1.26.4 -> 2.0.0"]


def test_a_lock_file_that_is_not_the_image_s_is_drift(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text(LOCK_TEXT)
    v = _verify(monkeypatch, _installed(), _labels("d" * 64), tmp_path, lock_file=tmp_path / "mine.txt")
    assert [c.name for c in v.checks if c.status == "drift"] == ["lock file"]
    with pytest.raises(UsageError, match="no such file"):
        _verify(monkeypatch, _installed(), _labels("d" * 64), tmp_path, lock_file=tmp_path / "nope.txt")


def test_verify_image_uses_the_kept_sbom_for_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    labels = _labels()
    doc, sha = sbom_for(_installed(), labels, LAYERS)
    sboms_dir(tmp_path).mkdir()
    (sboms_dir(tmp_path) / "kept.cdx.json").write_bytes(dumps(doc))
    labels[SBOM_LABEL] = sha
    assert _verify(monkeypatch, _installed(), labels, tmp_path, cache_dir=tmp_path).ok
    assert _verify(monkeypatch, _installed(), labels, tmp_path).ok, "regenerated, no copy needed"
    v = _verify(monkeypatch, _installed(("requests", "2.32.3")), labels, tmp_path, cache_dir=tmp_path)
    sbom = next(c for c in v.checks if c.name == "SBOM")
    assert sbom.status == "drift" and _lines(sbom) == ["extra: requests 2.32.3"]


def test_an_absent_image_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no image nope:1 on this Docker engine"):
        verify_image(_Client({}), "nope:1", env=None, root=tmp_path)  # type: ignore[arg-type]


def test_the_cli_without_a_daemon_says_so_and_exits_3(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock", "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), "verify", "cpu"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "cannot reach a Docker engine" in r.stderr and "Traceback" not in r.stderr
