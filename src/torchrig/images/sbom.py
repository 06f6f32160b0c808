"""A CycloneDX 1.5 SBOM for every image built: what is installed in it, read from inside it.

The document is plain JSON written here (the CycloneDX libraries are a test dependency only: the schema check in
tests/unit/test_sbom.py), so a build needs nothing beyond torchrig's own dependencies. It lists

* every Python distribution in the image (``importlib.metadata``: name, version, purl ``pkg:pypi/name@version``),
  with its sha256 where the build installed it from a lock (``pip --require-hashes`` checked that very file) --
  the document says which lock in ``metadata.properties``; without a lock no hash is claimed;
* the interpreter, the base image (its digest when the base was pinned: ``name@sha256:...`` or an
  ``org.opencontainers.image.base.digest`` label) and torch's flavour (local version ``+cu117``/``+cpu``,
  ``torch.version.cuda``/``hip``) as properties of the torch component;
* the image's labels and its layers (``RootFS`` diff ids) as properties of ``metadata.component``.

It is a function of the image alone (its contents, labels and layers; the torchrig version is the one in its
``io.torchrig.version`` label, the time its ``created`` label): the same image always gives the same bytes, so
``torchrig verify`` can regenerate it and compare digests even where no copy was kept.

A label cannot be set by the build that made the image -- the SBOM describes its result -- so :func:`attach_sbom`
runs after the build: inspect the image, write the SBOM, then one metadata-only follow-up build ``FROM <id>`` +
``LABEL io.torchrig.sbom.sha256=<digest>`` (no layer: the layers the SBOM lists are the tagged image's); that
image is the one tagged. The document is kept as ``<cache>/sboms/<image id>.cdx.json``, beside the size records.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from torchrig import __version__
from torchrig.engine.stream import BuildStream
from torchrig.errors import BuildError
from torchrig.images.installed import Installed, inspect_installed, local_label, locked_entries
from torchrig.images.options import SOURCE_URL
from torchrig.matrix import canonical_name
from torchrig.results.io import atomic_write_text
from torchrig.results.reading import InputFileError, read_bytes

if TYPE_CHECKING:
    import docker

__all__ = [
    "BASE_DIGEST_LABEL",
    "SBOM_LABEL",
    "SPEC_VERSION",
    "BaseImage",
    "SbomResult",
    "attach_sbom",
    "base_image",
    "dumps",
    "purl",
    "sbom_document",
    "sbom_for",
    "sbom_layers",
    "sbom_packages",
    "sboms_dir",
    "stored_sbom",
]

SBOM_LABEL = "io.torchrig.sbom.sha256"
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
SPEC_VERSION = "1.5"
LAYER_PROPERTY = "torchrig:image:layer"
_IMAGE_REF = "image"


BASE_NAME_LABEL = "org.opencontainers.image.base.name"


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    name: str  # as the build named it: torchrig-base:bookworm, python:3.11-slim@sha256:...
    digest: str | None = None  # "sha256:<hex>" when the base was pinned


def base_image(labels: Mapping[str, str]) -> BaseImage:
    """The base from the image's labels; pinned when its name carries ``@sha256:`` or a digest label names it."""
    name = labels.get(BASE_NAME_LABEL) or "unknown"
    digest = name.split("@", 1)[1] if "@sha256:" in name else labels.get(BASE_DIGEST_LABEL) or None
    return BaseImage(name=name, digest=digest)


def purl(name: str, version: str) -> str:
    """``pkg:pypi/<name>@<version>``: the name lower-case with ``_`` as ``-``, the version percent-encoded."""
    return f"pkg:pypi/{name.lower().replace('_', '-')}@{quote(version, safe='')}"


def _props(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs]


def _flavour(version: str | None, cuda: str | None, hip: str | None) -> str:
    label = local_label(version or "")
    if label:
        return label
    if cuda:
        return "cu" + "".join(cuda.split(".")[:2])
    if hip:
        return "rocm" + ".".join(hip.split(".")[:2])
    return "cpu"


def _torch_properties(installed: Installed, name: str, version: str) -> list[tuple[str, str]]:
    key = canonical_name(name)
    if key not in ("torch", "torchvision", "torchaudio"):
        return []
    local = local_label(version)
    pairs = [(f"torchrig:{key}:local-version", local or "none (the index's default build)")]
    if key == "torch" and installed.torch is not None:
        cuda, hip = installed.torch.cuda, installed.torch.hip
        pairs += [("torchrig:torch:cuda", cuda or "none"), ("torchrig:torch:hip", hip or "none"),
                  ("torchrig:torch:flavour", _flavour(version, cuda, hip))]
    return pairs


def sbom_document(installed: Installed, labels: Mapping[str, str], layers: Sequence[str]) -> dict[str, Any]:
    """The CycloneDX document for an image with these ``labels`` and ``layers`` (``RootFS.Layers``).

    Deterministic: the same image gives the same bytes (:func:`dumps`); the SBOM's own label is left out.
    """
    base = base_image(labels)
    locked = locked_entries(installed.requirement_texts)
    lock = labels.get("io.torchrig.lock", "none")
    components: list[dict[str, Any]] = []
    hashed = 0
    for p in sorted(installed.packages, key=lambda p: p.key):
        ref = purl(p.name, p.version)
        c: dict[str, Any] = {"type": "library", "bom-ref": ref, "name": p.name, "version": p.version, "purl": ref}
        entry = locked.get(p.key)
        if entry is not None and entry[1] == p.version:
            c["hashes"] = [{"alg": "SHA-256", "content": h} for h in entry[2]]
            hashed += 1
        props = _torch_properties(installed, p.name, p.version)
        if props:
            c["properties"] = _props(props)
        components.append(c)
    python = {"type": "application", "bom-ref": "python", "name": installed.implementation or "python",
              "version": installed.python, "properties": _props([("torchrig:python:executable",
                                                                   installed.executable)])}
    base_c: dict[str, Any] = {"type": "container", "bom-ref": "base-image", "name": base.name}
    base_props = [("torchrig:base:pinned", "true" if base.digest else "false (referred to by tag)")]
    if base.digest:
        base_c["version"] = base.digest
        algo, _, hexdigest = base.digest.partition(":")
        if algo == "sha256":
            base_c["hashes"] = [{"alg": "SHA-256", "content": hexdigest}]
    base_c["properties"] = _props(base_props)
    how = (f"sha256 of each file as pinned by the lock (sha256 {lock}) and checked by pip --require-hashes at "
           f"install: {hashed} of {len(components)} packages" if lock != "none" else
           "none: the image was built without a lock, so no file hashes are known")
    meta: dict[str, Any] = {
        "tools": {"components": [{"type": "application", "name": "torchrig",
                                  "version": labels.get("io.torchrig.version", __version__),
                                  "externalReferences": [{"type": "vcs", "url": SOURCE_URL}]}]},
        "component": {
            "type": "container", "bom-ref": _IMAGE_REF,
            "name": labels.get("org.opencontainers.image.title") or labels.get("io.torchrig.env") or "image",
            "version": labels.get("org.opencontainers.image.version", "unknown"),
            "properties": _props([*sorted((k, v) for k, v in labels.items() if k != SBOM_LABEL),
                                  *((LAYER_PROPERTY, d) for d in layers)]),
        },
        "properties": _props([("torchrig:hashes", how), ("torchrig:lock:sha256", lock)]),
    }
    if labels.get("org.opencontainers.image.created"):
        meta["timestamp"] = labels["org.opencontainers.image.created"]
    doc: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION, "version": 1, "metadata": meta,
        "components": [base_c, python, *components],
        "dependencies": [{"ref": _IMAGE_REF,
                          "dependsOn": ["base-image", "python", *(c["bom-ref"] for c in components)]}],
    }
    # a serial number derived from the content: the same image always gives the same document
    doc["serialNumber"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(dumps(doc)).hexdigest())}"
    return doc


def dumps(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def sbom_packages(doc: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Canonical name -> (name, version) of the document's ``pkg:pypi`` components."""
    return {canonical_name(c["name"]): (str(c["name"]), str(c.get("version", "")))
            for c in doc.get("components", []) if str(c.get("purl", "")).startswith("pkg:pypi/")}


def sbom_layers(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The layer diff ids the document describes, bottom first."""
    props = ((doc.get("metadata") or {}).get("component") or {}).get("properties") or []
    return tuple(str(p["value"]) for p in props if p.get("name") == LAYER_PROPERTY)


def sboms_dir(cache_dir: Path) -> Path:
    """Where SBOMs are kept: ``<cache_dir>/sboms`` beside the size records (``<cache_dir>/images``)."""
    return cache_dir / "sboms"


@dataclass(frozen=True, kw_only=True)
class SbomResult:
    image_id: str  # the image carrying the SBOM and its label: the one to tag
    sha256: str
    path: Path | None  # the copy kept on the host, if any
    packages: int
    hashed: int

    def describe(self) -> str:
        where = f"kept as {self.path}" if self.path else "no copy kept (no cache directory)"
        return (f"SBOM: CycloneDX {SPEC_VERSION}, {self.packages} packages ({self.hashed} with sha256), label "
                f"{SBOM_LABEL}={self.sha256[:12]}..., {where}")


def sbom_for(installed: Installed, labels: Mapping[str, str], layers: Sequence[str]) -> tuple[dict[str, Any], str]:
    """The document and the sha256 of its bytes."""
    doc = sbom_document(installed, labels, layers)
    return doc, hashlib.sha256(dumps(doc)).hexdigest()


def _context(image_id: str, sha: str) -> io.BytesIO:
    dockerfile = f'FROM {image_id}\nLABEL "{SBOM_LABEL}"="{sha}"\n'.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(dockerfile), 0o644
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    return buf


def attach_sbom(client: docker.DockerClient, image_id: str, *, env_id: str, cache_dir: Path | None,
                keep: bool = False) -> SbomResult:
    """Inspect ``image_id``, write its SBOM and return the follow-up image that carries its label (untagged)."""
    import docker.errors

    image = client.images.get(image_id)
    installed = inspect_installed(client, image_id, env_id=env_id, keep=keep)
    doc, sha = sbom_for(installed, dict(image.labels or {}), tuple(image.attrs.get("RootFS", {}).get("Layers") or ()))
    stream = BuildStream(label=f"{env_id}/sbom", log=lambda _: None)
    try:
        items = client.api.build(fileobj=_context(image_id, sha), custom_context=True, rm=True, forcerm=True,
                                 pull=False, decode=True)
        new_id = stream.consume(items)
    except docker.errors.APIError as e:
        raise BuildError(f"the engine refused to label {image_id[:19]} with its SBOM: {e.explanation or e}") from None
    if not new_id.startswith("sha256:"):
        new_id = str(client.images.get(new_id).id)
    path = None
    if cache_dir is not None:
        d = sboms_dir(cache_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = atomic_write_text(d / f"{new_id.removeprefix('sha256:')}.cdx.json", dumps(doc).decode())
    hashed = sum(1 for c in doc["components"] if c.get("hashes") and c["type"] == "library")
    return SbomResult(image_id=new_id, sha256=sha, path=path, packages=len(sbom_packages(doc)), hashed=hashed)


def stored_sbom(cache_dir: Path, image_id: str, sha256: str) -> Path | None:
    """The kept copy of an image's SBOM: by the image's id, else (a derived image inherits the label) by digest."""
    d = sboms_dir(cache_dir)
    by_id = d / f"{image_id.removeprefix('sha256:')}.cdx.json"
    candidates = [by_id, *sorted(d.glob("*.cdx.json"))] if d.is_dir() else []
    for path in candidates:
        try:
            if hashlib.sha256(read_bytes(path, kind="sbom")).hexdigest() == sha256:
                return path
        except InputFileError:
            continue
    return None
