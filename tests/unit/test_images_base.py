"""The local base: which mirror debootstrap uses, and the command it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.errors import HostCheckError, UsageError
from torchrig.images.base import (
    DEFAULT_MIRROR,
    base_ref,
    debootstrap_command,
    ensure_base,
    host_mirror,
    require_emulation,
    tarball_name,
)

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
    assert cmd[:3] == ["debootstrap", "--arch=amd64", "--variant=minbase"]
    assert cmd[3] == "--include=python3,python3-venv,python3-pip,ca-certificates"
    assert cmd[4:] == ["bookworm", str(tmp_path / "root"), "http://deb.debian.org/debian"]
    assert debootstrap_command("bookworm", tmp_path, "http://m", arch="arm64")[1] == "--arch=arm64"


def test_an_unknown_suite_is_refused_before_anything_runs() -> None:
    with pytest.raises(UsageError, match="bookworm, bullseye, trixie"):
        ensure_base("sid", client=object(), cache_dir=Path("/nonexistent"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="amd64, arm64"):
        ensure_base("bookworm", arch="riscv64", client=object(), cache_dir=Path("/x"))  # type: ignore[arg-type]


def test_the_amd64_base_keeps_its_names_and_arm64_gets_its_own() -> None:
    # the amd64 names predate arm64: caches and --base-image settings made then still match
    assert base_ref("bookworm") == "torchrig-base:bookworm"
    assert base_ref("bookworm", "arm64") == "torchrig-base:bookworm-arm64"
    amd, arm = tarball_name("bookworm", "amd64", "http://m"), tarball_name("bookworm", "arm64", "http://m")
    assert amd.startswith("debian-bookworm-") and "arm64" not in amd
    assert arm.startswith("debian-bookworm-arm64-") and arm != amd


def _binfmt(tmp_path: Path, text: str | None, *, interpreter_exists: bool = True) -> Path:
    interp = tmp_path / "qemu-aarch64-static"
    if interpreter_exists:
        interp.write_text("")
    if text is not None:
        (tmp_path / "qemu-aarch64").write_text(text.format(interp=interp))
    return tmp_path


def test_emulation_is_accepted_when_the_binfmt_handler_is_enabled_or_the_host_is_arm64(tmp_path: Path) -> None:
    d = _binfmt(tmp_path, "enabled\ninterpreter {interp}\nflags: PF\n")
    require_emulation("arm64", machine="x86_64", binfmt_dir=d)
    require_emulation("arm64", machine="aarch64", binfmt_dir=tmp_path / "none")  # native: no qemu needed
    require_emulation("amd64", machine="x86_64", binfmt_dir=tmp_path / "none")


@pytest.mark.parametrize(("text", "exists", "why"), [
    (None, True, "is not registered"),
    ("disabled\ninterpreter {interp}\n", True, "is disabled"),
    ("enabled\ninterpreter {interp}\n", False, "which does not exist"),
])
def test_missing_emulation_is_exit_7_with_the_apt_command(tmp_path: Path, text: str | None, exists: bool,
                                                          why: str) -> None:
    d = _binfmt(tmp_path, text, interpreter_exists=exists)
    with pytest.raises(HostCheckError, match=why) as e:
        require_emulation("arm64", machine="x86_64", binfmt_dir=d)
    assert e.value.return_code == 7
    assert "apt-get install qemu-user-static binfmt-support" in str(e.value)
    assert "update-binfmts --enable qemu-aarch64" in str(e.value)


def test_a_foreign_rootfs_is_loaded_with_a_config_naming_its_architecture(tmp_path: Path) -> None:
    import gzip
    import hashlib

    from torchrig.images.base_archive import _uncompressed_sha256, image_config

    raw = b"a tar stream" * 1000
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(raw))
    diff_id = _uncompressed_sha256(gz)
    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()  # what the engine checks the layer against
    config = image_config(arch="arm64", diff_id=diff_id, env=["LANG=C.UTF-8"], cmd=["/bin/bash"],
                          labels={"io.torchrig.base.arch": "arm64"})
    assert (config["architecture"], config["variant"], config["os"]) == ("arm64", "v8", "linux")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert config["config"]["Labels"] == {"io.torchrig.base.arch": "arm64"}
    assert "variant" not in image_config(arch="amd64", diff_id=diff_id, env=[], cmd=[], labels={})
