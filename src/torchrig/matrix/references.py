"""The rules Docker and pip apply to names, checked before anything is built.

Each function returns None for a valid value, else a message that shows the bad value and a valid example. The
grammar is Docker's reference grammar (distribution/reference ``reference.go``): a reference is
``[domain[:port]/]path[:tag][@digest]``, path components are lower-case ``[a-z0-9]+`` joined by ``.``, ``_``,
``__`` or ``-`` runs, a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``, and the whole name is at most 255 characters.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["image_reference_problem", "index_url_problem", "registry_problem", "repository_problem"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_REGISTRY = re.compile(rf"^{_DOMAIN}(?:/{_PATH})?$")
_REPOSITORY = re.compile(rf"^{_PATH}$")
_MAX_NAME = 255


def image_reference_problem(ref: str) -> str | None:
    """A base image reference: ``python:3.11-slim-bookworm``, ``nvidia/cuda:12.1.1-devel-ubuntu22.04``,
    ``localhost:5000/base@sha256:...``."""
    m = _REFERENCE.match(ref)
    if m is None:
        lower = " (repository names are lower-case)" if _REFERENCE.match(ref.lower()) else ""
        return (f"{ref!r} is not a valid image reference{lower}; e.g. python:3.11-slim-bookworm or "
                "nvidia/cuda:12.1.1-devel-ubuntu22.04")
    name = ref.split("@", maxsplit=1)[0]
    if m.group("tag"):
        name = name.rsplit(":", 1)[0]
    if len(name) > _MAX_NAME:
        return f"{ref[:60]!r}...: the repository name is longer than {_MAX_NAME} characters"
    return None


def registry_problem(registry: str) -> str | None:
    """A registry prefix of image names: ``ghcr.io/torchrig``, ``localhost:5000``, ``127.0.0.1:5000/team``."""
    if registry == "":
        return None  # local names without a registry
    if not _REGISTRY.match(registry.rstrip("/")):
        return (f"{registry!r} is not a registry Docker accepts (host[:port][/lower-case/path], no scheme); "
                "e.g. ghcr.io/torchrig or localhost:5000")
    return None


def repository_problem(image: str) -> str | None:
    """The image (repository) name under the registry: lower-case path components, e.g. ``torchrig``."""
    if not _REPOSITORY.match(image) or len(image) > _MAX_NAME:
        return (f"{image!r} is not an image name Docker accepts (lower-case letters, digits and . _ - separators, "
                "components joined by /); e.g. torchrig or ml/torchrig")
    return None


def index_url_problem(url: str) -> str | None:
    """A package index as pip takes it for ``--index-url``: an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        return (f"{url!r} is not a package index URL (pip needs http:// or https:// and a host); "
                "e.g. https://download.pytorch.org/whl/cpu or https://pypi.org/simple")
    return None
