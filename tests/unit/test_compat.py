"""compat.yaml: the data matches its sources (../FACTS table, PyPI's file list) and validation uses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from torchrig.__main__ import main
from torchrig.errors import ConfigurationError
from torchrig.matrix import load_matrix
from torchrig.matrix.compat import load_compat, parse_version

COMPAT_YAML = Path(__file__).resolve().parents[2] / "src" / "torchrig" / "matrix" / "compat.yaml"

# torch minor: (Python range, advertised CUDA, PyPI default CUDA, ROCm), as the sources in compat.yaml's header say.
SOURCES = {
    "2.0": (("3.8", "3.11"), ("11.7", "11.8"), "11.7", ("5.3", "5.4.2")),
    "2.4": (("3.8", "3.12"), ("11.8", "12.1", "12.4"), "12.1", ("6.0", "6.1")),
    "2.6": (("3.9", "3.13"), ("11.8", "12.4", "12.6"), "12.4", ("6.1", "6.2.4")),
    "2.9": (("3.10", "3.14"), ("12.6", "12.8", "13.0"), "12.8", ("6.3", "6.4")),
    "2.11": (("3.10", "3.14"), ("12.6", "12.8", "13.0"), "13.0", ("7.1", "7.2")),
    "2.12": (("3.10", "3.14"), ("12.6", "13.0", "13.2"), "13.0", ("7.1", "7.2")),
    "2.13": (("3.10", "3.14"), ("12.6", "13.0", "13.2"), "13.0", ("7.1", "7.2")),
    "2.14": (("3.10", "3.14"), ("12.6", "13.0", "13.2"), "13.0", ("7.2", "7.14")),
    "2.15": (("3.11", "3.15"), ("13.2",), "13.2", ()),
}


@pytest.mark.parametrize("minor", SOURCES)
def test_releases_match_the_sources(minor: str) -> None:
    (lo, hi), cuda, pypi_cuda, rocm = SOURCES[minor]
    r = load_compat().releases[minor]
    assert (r.python_min, r.python_max, r.cuda, r.pypi_cuda, r.rocm) == (lo, hi, cuda, pypi_cuda, rocm)


def test_the_newest_releases_and_their_torchvision() -> None:
    c = load_compat()
    assert c.releases["2.12"].torchvision == {"2.12.0": "0.27.0", "2.12.1": "0.27.1"}
    assert c.releases["2.14"].cuda_unadvertised == ("13.4",)
    assert "cu134" in c.releases["2.14"].flavours and "cu134" not in c.releases["2.14"].cuda
    r215 = c.releases["2.15"]
    assert (r215.compile_max_python, r215.torchvision, r215.confirmed) == ("3.15", {"2.15.0": None}, False)
    assert c.driver_min["13.2"] == "595.45.04"
    assert c.known_range == "2.0 .. 2.15"


def test_every_advertised_cuda_has_a_minimum_driver_and_pypi_builds_are_advertised() -> None:
    for minor, r in load_compat().releases.items():
        assert set(r.cuda) <= set(load_compat().driver_min), minor
        assert r.pypi_cuda in r.cuda, f"{minor}: PyPI's default build is one of the index's builds"


def test_every_release_names_sources_defined_in_the_header() -> None:
    text = COMPAT_YAML.read_text()
    defined = set(re.findall(r"^#\s+\[(\w)\]", text, flags=re.M))
    for minor, raw in yaml.safe_load(text)["torch"].items():
        assert raw.get("sources"), f"{minor} lists no sources"
        assert set(raw["sources"]) <= defined, f"{minor}: undefined source letters"


def test_pythons_and_flavours_are_derived_from_the_data() -> None:
    r = load_compat().releases["2.15"]
    assert r.pythons == ("3.11", "3.12", "3.13", "3.14", "3.15")
    assert r.flavours == ("cpu", "cu132")
    assert load_compat().releases["2.5"].torch_only_python == ("3.13",)
    assert parse_version("2.15") > parse_version("2.9")


def _matrix(tmp_path: Path, env: str) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM scratch\n")
    path = tmp_path / "matrix.yaml"
    path.write_text("environments:\n" + env)
    return path


def test_a_torch_2_12_1_row_validates_and_gets_its_torchvision(tmp_path: Path) -> None:
    path = _matrix(tmp_path, """  - id: cuda132
    accelerator: cuda
    cuda: "13.2"
    torch: "2.12.1"
    python: "3.12"
    index: https://download.pytorch.org/whl/{flavour}
    targets: {runtime: "python:{python}-slim-bookworm"}
""")
    env = load_matrix(path).get("cuda132")
    assert (env.torchvision, env.flavour, env.min_driver()) == ("0.27.1", "cu132", "595.45.04")
    assert env.torch_compile_supported()


def test_cu128_on_2_12_is_refused_with_the_builds_that_exist(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _matrix(tmp_path, """  - id: cuda128
    accelerator: cuda
    cuda: "12.8"
    torch: "2.12.0"
    python: "3.12"
    index: https://download.pytorch.org/whl/{flavour}
    targets: {runtime: "python:{python}-slim-bookworm"}
""")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "torch 2.12.0 has no cu128 build" in err and "(2.12.0 offers cu126, cu130, cu132)" in err


def test_torch_2_15_needs_python_3_11_and_a_torchvision(tmp_path: Path) -> None:
    path = _matrix(tmp_path, """  - id: cpu
    accelerator: cpu
    torch: "2.15.0"
    python: "3.10"
    index: https://download.pytorch.org/whl/{flavour}
    targets: {runtime: "python:{python}-slim-bookworm"}
""")
    with pytest.raises(ConfigurationError) as exc:
        load_matrix(path)
    text = str(exc.value)
    assert "has wheels for Python 3.11-3.15, not 3.10" in text
    assert "torch 2.15.0 has no torchvision release yet" in text


def test_rocm_on_2_15_says_none_is_known(tmp_path: Path) -> None:
    path = _matrix(tmp_path, """  - id: rocm
    accelerator: rocm
    rocm: "7.2"
    torch: "2.15.0"
    python: "3.12"
    index: https://download.pytorch.org/whl/{flavour}
    targets: {runtime: "python:{python}-slim-bookworm"}
""")
    with pytest.raises(ConfigurationError, match=r"\(2\.15\.0 offers no ROCm build known to compat\.yaml\)"):
        load_matrix(path)
