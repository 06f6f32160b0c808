"""The image user's UID/GID and the /dev/shm size are each written once (torchrig.container, issue 23): Python
imports the constant, and the files that must repeat it (images/Dockerfile's ARG defaults) are held to it here."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from torchrig import doctor
from torchrig.cli import build_parser
from torchrig.container import IMAGE_GID, IMAGE_UID, SHM_SIZE
from torchrig.images import BuildOptions

ROOT = Path(__file__).resolve().parents[2]
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@pytest.mark.parametrize(("arg", "value"), [("TORCHRIG_UID", IMAGE_UID), ("TORCHRIG_GID", IMAGE_GID)])
def test_dockerfile_arg_defaults_are_the_constant(arg: str, value: int) -> None:
    text = (ROOT / "images" / "Dockerfile").read_text(encoding="utf-8")
    defaults = re.findall(rf"^ARG {arg}(?:=(\S*))?\s*$", text, flags=re.MULTILINE)
    assert defaults, f"images/Dockerfile declares no ARG {arg}"
    assert defaults == [str(value)] * len(defaults), f"ARG {arg} defaults {defaults} in images/Dockerfile, not {value}"


def test_build_options_default_to_the_image_user() -> None:
    by_name = {f.name: f.default for f in fields(BuildOptions)}
    assert (by_name["uid"], by_name["gid"]) == (IMAGE_UID, IMAGE_GID)


def test_cli_uid_gid_defaults_are_the_constant() -> None:
    build = build_parser().parse_args(["build", "cpu"])
    submit = build_parser().parse_args(["submit", "cpu"])
    fleet = submit.options_parser.parse_args([])
    assert (build.uid, build.gid) == (fleet.uid, fleet.gid) == (IMAGE_UID, IMAGE_GID)


def test_doctor_checks_the_shm_size_containers_get() -> None:
    m = re.fullmatch(r"(\d+)([bkmgt]?)", SHM_SIZE)
    assert m, SHM_SIZE
    assert int(m.group(1)) * _UNITS[m.group(2)] == doctor.SHM_BYTES
