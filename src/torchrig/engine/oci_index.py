"""One tag, several platforms: an OCI image index put into the registry over its HTTP API.

docker-py cannot make a manifest list. So, as docker-stacks' merge job does, each platform's image is pushed under
its own tag first (``<tag>-amd64``, ``<tag>-arm64``, by the engine), then torchrig asks the registry for each one's
manifest (media type, digest, size: ``HEAD /v2/<name>/manifests/<tag>``) and PUTs one index that lists them with
their platform under the plain tag (and the alias): ``PUT /v2/<name>/manifests/<tag>`` with
``Content-Type: application/vnd.oci.image.index.v1+json`` (OCI distribution spec, "Pushing Manifests"; the image
index in the OCI image spec, ``platform`` with ``architecture`` and ``os``). An engine pulling the tag then picks
its own platform from the index.

Credentials: anonymous, or a registry's token challenge (``WWW-Authenticate: Bearer realm=...``) answered with the
``auths`` entry of ``~/.docker/config.json`` (``docker login`` without a credential helper). Loopback registries
are spoken to over http, as the engine does; every other over https.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrig.errors import RegistryError
from torchrig.results.reading import InputFileError, read_json

__all__ = [
    "INDEX_MEDIA_TYPE",
    "ChildManifest",
    "RegistryHTTP",
    "index_document",
    "oci_platform",
    "split_name",
]

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class ChildManifest:
    """One platform's image manifest, as the registry holds it."""

    platform: str  # OCI "linux/arm64"
    media_type: str
    digest: str  # sha256:<hex>
    size: int


def oci_platform(platform: str) -> dict[str, str]:
    """The index entry's ``platform`` object: ``linux/arm64`` -> os linux, architecture arm64, variant v8 (arm64's
    only variant, which the engine matches an arm64 host against)."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError(f"cannot describe platform {platform!r} in an image index: expected OS/ARCH[/VARIANT]")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    elif parts[1] == "arm64":
        out["variant"] = "v8"
    return out


def index_document(children: Sequence[ChildManifest], *, annotations: Mapping[str, str] | None = None) -> bytes:
    """The OCI image index listing ``children`` (one per platform, in the order given), as the bytes to PUT."""
    if not children:
        raise RegistryError("an image index needs at least one platform's manifest")
    seen: set[str] = set()
    for c in children:
        if c.platform in seen:
            raise RegistryError(f"two manifests for {c.platform} in one image index")
        seen.add(c.platform)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", c.digest) or c.size <= 0:
            raise RegistryError(f"the registry's manifest for {c.platform} has no usable digest/size "
                                f"({c.digest!r}, {c.size})")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": c.media_type, "digest": c.digest, "size": c.size,
                       "platform": oci_platform(c.platform)} for c in children],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def split_name(name: str) -> tuple[str, str, str]:
    """``host:port/repo/path:tag`` -> (host:port, repo/path, tag); the name must carry its registry."""
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        raise RegistryError(f"{name} names no registry: set TORCHRIG_REGISTRY to the registry to push to")
    repo, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag or not repo:
        raise RegistryError(f"{name} has no tag")
    return first, repo, tag


def _loopback(host: str) -> bool:
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bare in ("localhost", "127.0.0.1", "[::1]") or bare.startswith("127.")


def _docker_auth(host: str) -> str | None:
    """The base64 ``user:password`` that ``docker login HOST`` stored, when it stored one in the file."""
    path = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = read_json(path, kind="docker-config").get("auths", {})
    except (InputFileError, ValueError, AttributeError):
        return None
    for key in (host, f"https://{host}", f"https://{host}/v1/"):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            return str(entry["auth"])
    return None


class RegistryHTTP:
    """The few registry API calls an index needs, with the token challenge answered once per repository."""

    def __init__(self, host: str, repo: str) -> None:
        import requests

        self.host, self.repo = host, repo
        self.base = f"{'http' if _loopback(host) else 'https'}://{host}/v2/{repo}"
        self.session = requests.Session()

    def _request(self, method: str, url: str, **kw: Any) -> Any:
        import requests

        try:
            r = self.session.request(method, url, timeout=_TIMEOUT_S, **kw)
            if r.status_code == 401 and "bearer" in r.headers.get("WWW-Authenticate", "").lower():
                self._token(r.headers["WWW-Authenticate"])
                r = self.session.request(method, url, timeout=_TIMEOUT_S, **kw)
        except requests.RequestException as e:
            raise RegistryError(f"cannot reach registry {self.host} ({type(e).__name__}): is it running? Set "
                                "TORCHRIG_REGISTRY to one that is") from None
        return r

    def _token(self, challenge: str) -> None:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in fields:
            raise RegistryError(f"registry {self.host} asks for a token without saying where: {challenge}")
        auth = _docker_auth(self.host)
        headers = {"Authorization": f"Basic {auth}"} if auth else {}
        params = {"service": fields.get("service", self.host), "scope": f"repository:{self.repo}:pull,push"}
        r = self.session.get(fields["realm"], params=params, headers=headers, timeout=_TIMEOUT_S)
        try:
            body = r.json() if r.ok else {}
        except ValueError:
            body = {}
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token:
            raise RegistryError(f"registry {self.host} refused a push token (HTTP {r.status_code}): `docker login "
                                f"{self.host}` (a credential helper's login is not read; put the auth in "
                                "~/.docker/config.json)")
        self.session.headers["Authorization"] = f"Bearer {token}"

    def manifest(self, tag: str, platform: str) -> ChildManifest:
        r = self._request("HEAD", f"{self.base}/manifests/{tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status_code == 404:
            raise RegistryError(f"{self.host}/{self.repo}:{tag} is not in the registry: push the {platform} image "
                                f"first (`torchrig build ENV --platform {platform}` then `torchrig push ENV`)")
        if not r.ok:
            raise RegistryError(f"registry {self.host}: HEAD {self.repo}:{tag} answered HTTP {r.status_code}")
        media = r.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"{self.host}/{self.repo}:{tag} is a {media or 'manifest of no type'}, not one "
                                "platform's image manifest")
        return ChildManifest(platform=platform, media_type=media, digest=r.headers.get("Docker-Content-Digest", ""),
                             size=int(r.headers.get("Content-Length") or 0))

    def put_index(self, tag: str, body: bytes) -> str:
        r = self._request("PUT", f"{self.base}/manifests/{tag}", data=body,
                          headers={"Content-Type": INDEX_MEDIA_TYPE})
        if r.status_code not in (200, 201):
            raise RegistryError(f"registry {self.host} refused the image index for {self.repo}:{tag} (HTTP "
                                f"{r.status_code}): {r.text[:300]}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        said = r.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise RegistryError(f"registry {self.host} stored the index for {self.repo}:{tag} as {said}, not "
                                f"{digest}: it rewrote the document")
        return digest

    def get_json(self, tag: str, accept: str = INDEX_MEDIA_TYPE) -> Any:
        r = self._request("GET", f"{self.base}/manifests/{tag}", headers={"Accept": accept})
        if not r.ok:
            raise RegistryError(f"registry {self.host}: GET {self.repo}:{tag} answered HTTP {r.status_code}")
        return r.json()

    def __enter__(self) -> RegistryHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()
