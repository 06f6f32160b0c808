"""The SBOM: what it lists (packages, hashes from the lock only, base image and digest, torch's flavour), that it is
valid CycloneDX 1.5 by the schema cyclonedx-python-lib ships, and that the same image always gives the same bytes.
The in-image inspection script is run here with this Python (standard library only: no daemon needed)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchrig.images.installed import (
    REQUIREMENT_FILES,
    Installed,
    Package,
    TorchBuild,
    locked_entries,
    parse_inspection,
)
from torchrig.images.sbom import (
    BASE_DIGEST_LABEL,
    SBOM_LABEL,
    dumps,
    purl,
    sbom_document,
    sbom_for,
    sbom_layers,
    sbom_packages,
    sboms_dir,
    stored_sbom,
)

H = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("torch", "numpy", "jinja2", "old")}
LOCK_TORCH = (f"torch==2.0.1+cu117 \\\n    --hash=sha256:{H['torch']}\n"
              f"Jinja2==3.1.6 \\\n    --hash=sha256:{H['jinja2']}\n")
LOCK_EXTRAS = f"numpy==1.26.4 \\\n    --hash=sha256:{H['numpy']}\nrequests==2.31.0 \\\n    --hash=sha256:{H['old']}\n"
LAYERS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)


def _installed(*extra: Package, torch: str = "2.0.1+cu117", locked: bool = True) -> Installed:
    files = dict(zip(REQUIREMENT_FILES, (LOCK_TORCH, LOCK_EXTRAS), strict=True)) if locked else {
        REQUIREMENT_FILES[0]: "torch==2.0.1\ntorchvision==0.15.2\n"}
    return Installed(python="3.11.2", implementation="cpython", executable="/opt/venv/bin/python",
                     packages=(Package(name="torch", version=torch), Package(name="Jinja2", version="3.1.6"),
                               Package(name="numpy", version="1.26.4"), Package(name="requests", version="2.32.3"),
                               Package(name="pip", version="23.0.1"),
                               Package(name="typing_extensions", version="4.12.2"), *extra),
                     torch=TorchBuild(cuda="11.7"), files=files)


def _labels(**over: str) -> dict[str, str]:
    labels = {"io.torchrig.env": "cpu", "io.torchrig.lock": "c" * 64, "io.torchrig.version": "0.1.0",
              "org.opencontainers.image.title": "torchrig cpu (runtime)",
              "org.opencontainers.image.version": "2.0.1-cpu-py3.11",
              "org.opencontainers.image.created": "2026-12-01T20:57:48Z",
              "org.opencontainers.image.base.name": "torchrig-base:bookworm"}
    labels.update(over)
    return {k: v for k, v in labels.items() if v}


def _component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["components"] if c["name"] == name)


def _props(c: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in c.get("properties", [])}


def _validate(doc: dict[str, Any]) -> object:
    validation = pytest.importorskip("cyclonedx.validation.json", reason="cyclonedx-python-lib (the test extra)")
    from cyclonedx.schema import SchemaVersion

    return validation.JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(doc))


@pytest.mark.parametrize("labels", [
    _labels(),
    _labels(**{"io.torchrig.lock": "none"}),
    _labels(**{"org.opencontainers.image.base.name": "python:3.11-slim@sha256:" + "d" * 64}),
    _labels(**{BASE_DIGEST_LABEL: "sha256:" + "e" * 64, "org.opencontainers.image.created": ""}),
], ids=["locked", "unlocked", "pinned-base", "base-digest-label"])
def test_the_sbom_is_valid_cyclonedx_1_5(labels: dict[str, str]) -> None:
    doc = sbom_document(_installed(locked=labels["io.torchrig.lock"] != "none"), labels, LAYERS)
    assert _validate(doc) is None
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"


def test_the_schema_check_can_fail() -> None:
    doc = sbom_document(_installed(), _labels(), LAYERS)
    _component(doc, "numpy")["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    assert _validate(doc) is not None


def test_packages_have_purls_and_the_locks_hashes_only_where_the_lock_pins_what_is_installed() -> None:
    doc = sbom_document(_installed(), _labels(), LAYERS)
    torch = _component(doc, "torch")
    assert torch["purl"] == "pkg:pypi/torch@2.0.1%2Bcu117" and torch["bom-ref"] == torch["purl"]
    assert _component(doc, "Jinja2")["purl"] == "pkg:pypi/jinja2@3.1.6"
    assert _component(doc, "typing_extensions")["purl"] == "pkg:pypi/typing-extensions@4.12.2"
    assert torch["hashes"] == [{"alg": "SHA-256", "content": H["torch"]}]
    assert _component(doc, "numpy")["hashes"] == [{"alg": "SHA-256", "content": H["numpy"]}]
    assert "hashes" not in _component(doc, "pip"), "not in the lock: no hash claimed"
    assert "hashes" not in _component(doc, "requests"), "the lock pins 2.31.0, 2.32.3 is installed: its hash is not"
    said = _props(doc["metadata"])
    assert said["torchrig:lock:sha256"] == "c" * 64
    assert "3 of 6 packages" in said["torchrig:hashes"] and "--require-hashes" in said["torchrig:hashes"]


def test_without_a_lock_no_hash_is_claimed_and_the_document_says_so() -> None:
    doc = sbom_document(_installed(locked=False), _labels(**{"io.torchrig.lock": "none"}), LAYERS)
    assert not any("hashes" in c for c in doc["components"] if c["type"] == "library")
    assert _props(doc["metadata"])["torchrig:hashes"].startswith("none: the image was built without a lock")


def test_torch_flavour_and_the_interpreter() -> None:
    doc = sbom_document(_installed(), _labels(), LAYERS)
    assert _props(_component(doc, "torch")) == {"torchrig:torch:local-version": "cu117", "torchrig:torch:cuda": "11.7",
                                                "torchrig:torch:hip": "none", "torchrig:torch:flavour": "cu117"}
    default = sbom_document(_installed(torch="2.0.1"), _labels(), LAYERS)
    props = _props(_component(default, "torch"))
    assert props["torchrig:torch:local-version"].startswith("none") and props["torchrig:torch:flavour"] == "cu117"
    python = next(c for c in doc["components"] if c["bom-ref"] == "python")
    assert (python["name"], python["version"]) == ("cpython", "3.11.2")


@pytest.mark.parametrize(("base", "digest_label", "digest"), [
    ("torchrig-base:bookworm", None, None),
    ("python:3.11-slim@sha256:" + "d" * 64, None, "sha256:" + "d" * 64),
    ("python:3.11-slim", "sha256:" + "e" * 64, "sha256:" + "e" * 64),
])
def test_the_base_image_and_its_digest_when_pinned(base: str, digest_label: str | None, digest: str | None) -> None:
    labels = _labels(**{"org.opencontainers.image.base.name": base})
    if digest_label:
        labels[BASE_DIGEST_LABEL] = digest_label
    c = next(c for c in sbom_document(_installed(), labels, LAYERS)["components"] if c["bom-ref"] == "base-image")
    assert c["type"] == "container" and c["name"] == base
    assert c.get("version") == digest
    assert (c.get("hashes") or [{}])[0].get("content") == (digest.split(":")[1] if digest else None)
    assert _props(c)["torchrig:base:pinned"].startswith("true" if digest else "false")


def test_the_image_labels_and_layers_are_recorded_and_read_back() -> None:
    doc = sbom_document(_installed(), _labels(), LAYERS)
    image = doc["metadata"]["component"]
    assert image["type"] == "container" and image["name"] == "torchrig cpu (runtime)"
    assert image["version"] == "2.0.1-cpu-py3.11" and doc["metadata"]["timestamp"] == "2026-12-01T20:57:48Z"
    assert _props(image)["io.torchrig.lock"] == "c" * 64
    assert sbom_layers(doc) == LAYERS
    assert sbom_packages(doc)["jinja2"] == ("Jinja2", "3.1.6") and len(sbom_packages(doc)) == 6
    assert doc["metadata"]["tools"]["components"][0]["version"] == "0.1.0", "the torchrig that built the image"


def test_the_same_image_gives_the_same_bytes_and_another_image_others() -> None:
    doc, sha = sbom_for(_installed(), _labels(), LAYERS)
    assert dumps(sbom_document(_installed(), _labels(), LAYERS)) == dumps(doc)
    assert sha == hashlib.sha256(dumps(doc)).hexdigest()
    assert sbom_for(_installed(), {**_labels(), SBOM_LABEL: sha}, LAYERS)[1] == sha, "its own label is left out"
    assert sbom_for(_installed(Package(name="six", version="1.17.0")), _labels(), LAYERS)[1] != sha
    assert sbom_for(_installed(), _labels(), (*LAYERS, "sha256:" + "f" * 64))[1] != sha
    assert doc["serialNumber"] != sbom_for(_installed(torch="2.0.1"), _labels(), LAYERS)[0]["serialNumber"]


def test_purl_encodes_the_version() -> None:
    assert purl("Foo_Bar", "1.0+local.2") == "pkg:pypi/foo-bar@1.0%2Blocal.2"


def test_a_kept_sbom_is_found_by_image_id_or_by_digest(tmp_path: Path) -> None:
    d = sboms_dir(tmp_path)
    d.mkdir()
    data = dumps(sbom_document(_installed(), _labels(), LAYERS))
    sha = hashlib.sha256(data).hexdigest()
    (d / f"{'1' * 64}.cdx.json").write_bytes(data)
    assert stored_sbom(tmp_path, "sha256:" + "1" * 64, sha) == d / f"{'1' * 64}.cdx.json"
    assert stored_sbom(tmp_path, "sha256:" + "2" * 64, sha) == d / f"{'1' * 64}.cdx.json", "a derived image"
    assert stored_sbom(tmp_path, "sha256:" + "1" * 64, "0" * 64) is None
    assert stored_sbom(tmp_path / "none", "sha256:" + "1" * 64, sha) is None


def test_locked_entries_read_hash_pinned_lines_only() -> None:
    entries = locked_entries((LOCK_TORCH, LOCK_EXTRAS, "torchvision==0.15.2\n"))
    assert entries["jinja2"] == ("Jinja2", "3.1.6", (H["jinja2"],))
    assert "torchvision" not in entries and set(entries) == {"torch", "jinja2", "numpy", "requests"}


def test_the_inspection_script_runs_with_the_standard_library(tmp_path: Path) -> None:
    """The script the container runs, run here by this Python: its answer parses, and lists this venv."""
    from torchrig.images import installed

    script = installed._SCRIPT % {"files": (str(tmp_path / "requirements.txt"), str(tmp_path / "missing.txt"))}
    (tmp_path / "requirements.txt").write_text(LOCK_TORCH)
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    got = parse_inspection(out)
    assert got.python == ".".join(map(str, sys.version_info[:3]))
    assert got.version_of("pytest") is not None and got.version_of("PyYAML") is not None
    assert got.files == {str(tmp_path / "requirements.txt"): LOCK_TORCH}
    if got.version_of("torch") is not None:
        import torch

        assert got.torch is not None and got.torch.cuda == torch.version.cuda and got.torch.hip == torch.version.hip


def test_parse_inspection_rejects_what_is_not_an_answer() -> None:
    for text in ("", "hello\n", '{"python": "3.11"}\n'):
        with pytest.raises(ValueError):
            parse_inspection(text)


@pytest.mark.parametrize(("version_py", "cuda", "hip"), [
    ("__version__ = '2.0.1+cu117'\ncuda = '11.7'\nhip = None\n", "11.7", None),
    ("from typing import Optional\ncuda: Optional[str] = None\nhip: Optional[str] = '5.4.22803-474e8620'\n", None,
     "5.4.22803-474e8620"),
    (None, None, None),  # a torch without version.py (the integration tests' stand-in wheels)
])
def test_the_script_reads_torch_s_build_without_importing_it(tmp_path: Path, version_py: str | None,
                                                             cuda: str | None, hip: str | None) -> None:
    import os

    from torchrig.images import installed

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise SystemExit('imported')\n")
    if version_py is not None:
        (tmp_path / "torch" / "version.py").write_text(version_py)
    out = subprocess.run([sys.executable, "-c", installed._SCRIPT % {"files": ()}], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout
    assert parse_inspection(out).torch == TorchBuild(cuda=cuda, hip=hip)
