"""The local base: which mirror debootstrap uses, and the command it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.errors import UsageError
from torchrig.images.base import DEFAULT_MIRROR, debootstrap_command, ensure_base, host_mirror

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_comes_from_apts_deb822_sources(tmp_path: Path) -> None:
    security_first = tmp_path / "a.sources"
    security_first.write_text(DEB822.split("\n\n")[1])
    main = tmp_path / "b.sources"
    main.write_text(DEB822)
    assert host_mirror([security_first, main]) == "http://mirror.example/debian"


def test_the_mirror_comes_from_a_one_line_sources_list(tmp_path: Path) -> None:
    lst = tmp_path / "sources.list"
    lst.write_text("# comment\ndeb [arch=amd64] https://mirror.example/debian/ bookworm main\n")
    assert host_mirror([lst]) == "https://mirror.example/debian"


def test_without_apt_sources_the_default_mirror(tmp_path: Path) -> None:
    assert host_mirror([tmp_path / "missing.list"]) == DEFAULT_MIRROR
    disabled = tmp_path / "x.sources"
    disabled.write_text(DEB822.replace("Types: deb\nURIs: http://mirror", "Enabled: no\nTypes: deb\nURIs: http://mirror"))
    assert host_mirror([disabled]) == DEFAULT_MIRROR


def test_debootstrap_makes_a_minimal_base_with_python_venv_and_cas(tmp_path: Path) -> None:
    cmd = debootstrap_command("bookworm", tmp_path / "root", "http://deb.debian.org/debian")
    assert cmd[:2] == ["debootstrap", "--variant=minbase"]
    assert cmd[2] == "--include=python3,python3-venv,python3-pip,ca-certificates"
    assert cmd[3:] == ["bookworm", str(tmp_path / "root"), "http://deb.debian.org/debian"]


def test_an_unknown_suite_is_refused_before_anything_runs() -> None:
    with pytest.raises(UsageError, match="bookworm, bullseye, trixie"):
        ensure_base("sid", client=object(), cache_dir=Path("/nonexistent"))  # type: ignore[arg-type]
