"""GPU architecture data and rules: what a wheel carries, what a GPU is, and the CUDA/ROCm compatibility rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix.archs import (
    WheelArchs,
    cuda_runs,
    load_arch_data,
    parse_arch,
    parse_arch_list,
    parse_driver,
    rocm_runs,
)
from torchrig.matrix.compat import load_compat, parse_version

DATA = load_arch_data()
# Compute capabilities NVIDIA has shipped (majors 3-12) and a few beyond, to see that the rule does not assume a list.
CCS = st.tuples(st.integers(3, 14), st.integers(0, 9))


def _sm(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def _wheel(cubins: set[tuple[int, int]], ptx: set[tuple[int, int]]) -> WheelArchs:
    return WheelArchs(cubins=tuple(_sm(c) for c in sorted(cubins)),
                      ptx=tuple(f"compute_{a}{b}" for a, b in sorted(ptx)), source="test", verified=True)


@pytest.mark.parametrize(("cubin", "gpu", "runs"), [
    ("sm_80", "sm_86", True), ("sm_80", "sm_89", True), ("sm_80", "sm_80", True),
    ("sm_80", "sm_90", False), ("sm_80", "sm_75", False), ("sm_86", "sm_80", False),
    ("sm_90", "sm_100", False), ("sm_100", "sm_103", True), ("sm_120", "sm_121", True), ("sm_100", "sm_120", False),
])
def test_a_cubin_runs_on_the_same_major_at_an_equal_or_higher_minor(cubin: str, gpu: str, runs: bool) -> None:
    wheel = WheelArchs(cubins=(cubin,), ptx=(), source="t", verified=True)
    assert cuda_runs(wheel, gpu).ok is runs


def test_ptx_of_the_highest_arch_jits_forward_only_with_a_full_driver() -> None:
    wheel = parse_arch_list("7.5;8.0;8.6;9.0;10.0;12.0+PTX")
    assert wheel.ptx == ("compute_120",)
    assert cuda_runs(wheel, "sm_130").via == "compute_120 PTX (JIT)"
    assert cuda_runs(wheel, "sm_130", jit=False).ok is False
    assert cuda_runs(wheel, "sm_110").ok is False  # PTX for 12.0 does not run on an older 11.0 GPU
    assert cuda_runs(wheel, "sm_70").ok is False


@given(cubins=st.sets(CCS, max_size=8), ptx=st.sets(CCS, max_size=2), gpu=CCS)
def test_the_cuda_rule_over_generated_wheels_and_gpus(cubins: set[tuple[int, int]], ptx: set[tuple[int, int]],
                                                      gpu: tuple[int, int]) -> None:
    wheel = _wheel(cubins, ptx)
    by_cubin = any(c[0] == gpu[0] and c[1] <= gpu[1] for c in cubins)
    by_ptx = any(p <= gpu for p in ptx)
    assert cuda_runs(wheel, _sm(gpu)).ok is (by_cubin or by_ptx)
    assert cuda_runs(wheel, _sm(gpu), jit=False).ok is by_cubin
    # Monotone: more code in the wheel never loses a GPU; the exact cubin always runs.
    assert cuda_runs(_wheel(cubins | {gpu}, ptx), _sm(gpu)).ok is True


@given(archs=st.sets(st.sampled_from(["gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx950", "gfx1030",
                                      "gfx1100", "gfx1101", "gfx1201"]), max_size=6),
       gpu=st.sampled_from(["gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1101"]))
def test_a_rocm_code_object_runs_only_on_its_own_target(archs: set[str], gpu: str) -> None:
    wheel = WheelArchs(cubins=tuple(sorted(archs)), ptx=(), source="t", verified=True)
    assert rocm_runs(wheel, gpu).ok is (gpu in archs)


@pytest.mark.parametrize(("text", "arch"), [("sm_90", "sm_90"), ("SM90", "sm_90"), ("9.0", "sm_90"), ("90", "sm_90"),
                                            ("12.0", "sm_120"), ("compute_86", "sm_86"), ("gfx942", "gfx942"),
                                            ("GFX90A", "gfx90a")])
def test_arch_spellings_normalise(text: str, arch: str) -> None:
    assert parse_arch(text) == arch


@given(st.text(max_size=20))
def test_arbitrary_arch_and_driver_text_is_accepted_normalised_or_refused_with_a_message(text: str) -> None:
    for parse in (parse_arch, parse_driver):
        try:
            out = parse(text)
        except ValueError as e:
            assert repr(text) in str(e)
        else:
            assert out == out.strip() and out


@pytest.mark.parametrize(("name", "arch"), [
    ("Tesla V100-SXM2-16GB", "sm_70"), ("Tesla P100-PCIE-16GB", "sm_60"), ("Tesla T4", "sm_75"),
    ("NVIDIA A100-SXM4-80GB", "sm_80"), ("NVIDIA A10G", "sm_86"), ("NVIDIA A40", "sm_86"),
    ("NVIDIA GeForce RTX 3090", "sm_86"), ("NVIDIA L4", "sm_89"), ("NVIDIA L40S", "sm_89"),
    ("NVIDIA GeForce RTX 4090", "sm_89"), ("NVIDIA H100 80GB HBM3", "sm_90"), ("NVIDIA H200", "sm_90"),
    ("NVIDIA GH200 480GB", "sm_90"), ("NVIDIA B200", "sm_100"), ("NVIDIA GB200", "sm_100"),
    ("NVIDIA GeForce RTX 5090", "sm_120"), ("AMD Instinct MI100", "gfx908"), ("AMD Instinct MI210", "gfx90a"),
    ("AMD Instinct MI250X", "gfx90a"), ("AMD Instinct MI300X", "gfx942"), ("AMD Instinct MI325X", "gfx942"),
    ("AMD Instinct MI355X", "gfx950"), ("AMD Radeon RX 7900 XTX", "gfx1100"),
])
def test_gpu_names_map_to_their_architecture(name: str, arch: str) -> None:
    assert DATA.gpu(name).arch == arch


def test_an_unknown_gpu_name_offers_close_matches() -> None:
    with pytest.raises(ValueError, match="close matches: NVIDIA H100"):
        DATA.gpu("NVIDIA H10O")


def test_every_wheel_entry_is_a_flavour_its_release_ships() -> None:
    compat = load_compat()
    for (minor, flavour), wheel in DATA.wheels.items():
        release = compat.releases[minor]
        assert flavour in release.flavours, f"{minor} {flavour}: not a flavour of torch {minor}"
        assert wheel.cubins and wheel.source, (minor, flavour)
        assert wheel.vendor == ("amd" if flavour.startswith("rocm") else "nvidia")


def test_driver_floors_are_at_or_below_every_full_minimum_of_their_major() -> None:
    for cuda, full in load_compat().driver_min.items():
        floor = DATA.cuda_floor(cuda)
        assert floor is not None and parse_version(floor) <= parse_version(full), cuda


def test_what_the_sources_say_about_named_releases() -> None:
    # pytorch/builder release/2.0: cu118 "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0", ROCm "gfx900;gfx906;gfx908;gfx90a;gfx1030"
    assert DATA.wheel("2.0.1", "cu118") == parse_arch_list("3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0", source="B")
    assert "gfx942" not in DATA.wheel("2.0.1", "rocm5.4.2").cubins  # type: ignore[union-attr]
    assert "gfx942" in DATA.wheel("2.3.0", "rocm6.0").cubins  # type: ignore[union-attr]  # ROCm >= 6.0 adds it
    assert "sm_70" not in DATA.wheel("2.14.1", "cu130").cubins  # type: ignore[union-attr]
    assert "sm_70" in DATA.wheel("2.14.1", "cu126").cubins  # type: ignore[union-attr]
    assert DATA.wheel("2.5.1", "rocm6.2") is None  # not read: doctor says so instead of guessing
    for release, variant in (("2.9.1", "rocm6.4"), ("2.14.1", "rocm7.2")):  # the ROCm rows: lists not read at a tag
        rocm = DATA.wheel(release, variant)
        assert rocm is not None and not rocm.verified and {"gfx942", "gfx90a", "gfx1100"} <= set(rocm.cubins)
    assert "gfx900" not in DATA.wheel("2.14.1", "rocm7.14").cubins  # type: ignore[union-attr]  # TheRock: none


@pytest.mark.torch
def test_the_installed_torch_carries_what_compat_yaml_says() -> None:
    """A cross-check against a real wheel: the cubins this torch was built with (its arch flags, readable without
    a GPU) are those compat.yaml lists for its release and variant, where it lists them."""
    import torch

    cuda = getattr(torch.version, "cuda", None)
    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    if not cuda or flags is None:
        pytest.skip(f"torch {torch.__version__} is not a CUDA build")
    wheel = DATA.wheel(torch.__version__, "cu" + cuda.replace(".", ""))
    if wheel is None:
        pytest.skip(f"compat.yaml has no arch list for torch {torch.__version__}")
    built = {parse_arch(a) for a in str(flags()).split() if a.startswith("sm_")}
    assert built == set(wheel.cubins)
