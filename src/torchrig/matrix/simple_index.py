"""Read one project's page of a Python "simple" package index: PEP 691 (JSON) when offered, PEP 503 (HTML) else.

Only the standard library: ``urllib`` with the CA bundle pip would use (the caller resolves it), content
negotiation as pip does it (``Accept`` lists the JSON form first; the response's ``Content-Type`` decides the
parser), and wheel file names parsed into their parts (PEP 427 / PEP 440 local versions such as ``+cu126``).
"""

from __future__ import annotations

import html.parser
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from torchrig.errors import RegistryError

__all__ = ["IndexFile", "Wheel", "fetch_metadata", "fetch_project", "parse_html", "parse_json", "parse_wheel"]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# pip's Accept header: JSON preferred, the HTML forms as fallbacks.
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
# name-version(-build)?-python-abi-platform.whl; the name and version hold no "-" (PEP 427 escapes them to "_").
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)"
                       r"\.whl$")


@dataclass(frozen=True, kw_only=True)
class IndexFile:
    filename: str
    url: str  # absolute
    has_metadata: bool  # PEP 658/714: the core metadata is served at url + ".metadata"
    yanked: bool = False  # PEP 592: left for exact pins only; not an offer


@dataclass(frozen=True, kw_only=True)
class Wheel:
    filename: str
    version: str  # the public version: "2.12.1"
    local: str  # the local version label: "cu126", "cpu", "rocm7.2"; "" for a plain (PyPI default) build
    python_tags: tuple[str, ...]  # ("cp311",)
    platforms: tuple[str, ...]  # ("manylinux_2_28_x86_64",)
    abi_tags: tuple[str, ...] = ()  # ("cp314t",): a free-threaded build

    @property
    def linux_x86_64(self) -> bool:
        return any(p.endswith("x86_64") and (p.startswith("linux") or p.startswith("manylinux"))
                   for p in self.platforms)


def parse_wheel(filename: str) -> Wheel | None:
    """The parts of a wheel's file name, or None for anything else (sdists, metadata files, odd names)."""
    m = _WHEEL_RE.match(filename)
    if m is None:
        return None
    public, _, local = m["version"].partition("+")
    return Wheel(filename=filename, version=public, local=local, python_tags=tuple(m["py"].split(".")),
                 platforms=tuple(m["plat"].split(".")), abi_tags=tuple(m["abi"].split(".")))


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _filename_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def parse_html(text: str, page_url: str) -> list[IndexFile]:
    """The files of a PEP 503 project page (an ``<a href>`` each; ``data-core-metadata`` per PEP 714)."""
    parser = _Anchors()
    parser.feed(text)
    out = []
    for attrs, label in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url = urllib.parse.urljoin(page_url, href)
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        has_meta = ("data-core-metadata" in attrs or "data-dist-info-metadata" in attrs) and meta != "false"
        out.append(IndexFile(filename=label or _filename_of(url), url=url.split("#", 1)[0], has_metadata=has_meta,
                             yanked="data-yanked" in attrs))
    return out


def parse_json(data: Any, page_url: str) -> list[IndexFile]:
    """The files of a PEP 691 project page."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("not a PEP 691 project page (no 'files' list)")
    out = []
    for f in data["files"]:
        meta = f.get("core-metadata", f.get("dist-info-metadata", False))
        out.append(IndexFile(filename=str(f["filename"]), url=urllib.parse.urljoin(page_url, str(f["url"])),
                             has_metadata=bool(meta), yanked=f.get("yanked", False) is not False))
    return out


def _context(ca_bundle: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def _get(url: str, *, accept: str, ca_bundle: Path | None, timeout: float) -> tuple[bytes, str, str]:
    """Body, content type and final URL (after redirects) of a GET; RegistryError when it cannot be had."""
    req = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "torchrig-compat-check"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_context(ca_bundle)) as resp:
            return resp.read(), resp.headers.get_content_type(), resp.geturl()
    except urllib.error.HTTPError as e:
        hint = " (is the index URL the root of a simple index, e.g. https://pypi.org/simple?)" if e.code == 404 else ""
        raise RegistryError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RegistryError(f"cannot reach {url}: {reason}. Check the network or proxy; the CA bundle comes from "
                            "$PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE, as for pip") from None


def fetch_project(index: str, project: str, *, ca_bundle: Path | None = None,
                  timeout: float = 60.0) -> list[IndexFile]:
    """Every file the index lists for ``project`` (JSON if the server offers it, HTML else)."""
    url = index.rstrip("/") + "/" + project + "/"
    body, ctype, final = _get(url, accept=ACCEPT, ca_bundle=ca_bundle, timeout=timeout)
    try:
        if ctype == JSON_TYPE:
            return parse_json(json.loads(body), final)
        return parse_html(body.decode("utf-8", errors="replace"), final)
    except (ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"{url}: not a simple-index project page ({e})") from None


def fetch_metadata(file: IndexFile, *, ca_bundle: Path | None = None, timeout: float = 60.0) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's core metadata (PEP 658), without downloading the wheel."""
    body, _, _ = _get(file.url + ".metadata", accept="*/*", ca_bundle=ca_bundle, timeout=timeout)
    msg = HeaderParser().parsestr(body.decode("utf-8", errors="replace"))
    return [str(v) for v in msg.get_all("Requires-Dist") or ()]
