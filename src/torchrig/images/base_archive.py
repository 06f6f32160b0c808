"""A rootfs tarball loaded as an image of a given architecture: ``docker load`` of an archive made here.

``docker import`` records the engine's own architecture: Docker 20.10 (the classic image store) ignores the API's
``platform`` for an import (measured here: ``docker import --platform linux/arm64`` gave an ``amd64`` image). An
image archive in ``docker save``'s layout (``manifest.json``, one image config, one layer) says the architecture in
its config, and ``docker load`` keeps it. The layer is the gzip tarball itself (the engine decompresses it); the
config's ``diff_ids`` names the uncompressed stream's sha256, which the engine checks.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrig.errors import BuildError

if TYPE_CHECKING:
    import docker

__all__ = ["image_config", "load_rootfs"]

_CREATED = "1980-01-01T00:00:00Z"  # fixed: the same tarball gives the same image id


def _uncompressed_sha256(tarball: Path) -> str:
    h = hashlib.sha256()
    with gzip.open(tarball, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def image_config(*, arch: str, diff_id: str, env: Sequence[str], cmd: Sequence[str],
                 labels: Mapping[str, str]) -> dict[str, Any]:
    """The OCI/Docker image config of a one-layer image for ``linux/<arch>``."""
    config: dict[str, Any] = {
        "architecture": arch, "os": "linux", "created": _CREATED,
        "config": {"Env": list(env), "Cmd": list(cmd), "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": _CREATED, "created_by": "torchrig base-local (debootstrap rootfs)"}],
    }
    if arch == "arm64":
        config["variant"] = "v8"
    return config


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def load_rootfs(client: docker.DockerClient, tarball: Path, *, ref: str, arch: str, env: Sequence[str],
                cmd: Sequence[str], labels: Mapping[str, str]) -> None:
    """``docker load`` ``tarball`` (a gzip rootfs) as ``ref``, an image for ``linux/<arch>``."""
    import docker.errors

    config = json.dumps(image_config(arch=arch, diff_id=_uncompressed_sha256(tarball), env=env, cmd=cmd,
                                     labels=labels), sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar.gz"]}]).encode()
    with tempfile.TemporaryFile(dir=tarball.parent) as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            _add(tar, config_name, config)
            _add(tar, "manifest.json", manifest)
            tar.add(tarball, arcname="layer.tar.gz")
        archive.seek(0)
        try:
            list(client.images.load(archive))
        except docker.errors.APIError as e:
            raise BuildError(f"docker load of {tarball} as {ref} failed: {e.explanation or e}") from None
