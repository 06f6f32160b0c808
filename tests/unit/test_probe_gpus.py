"""Reading GPUs and their architectures from nvidia-smi and rocminfo output, garbage included."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix.archs import parse_arch
from torchrig.results.probe import parse_nvidia_smi_gpus, parse_rocminfo_gpus

SMI = "NVIDIA H100 80GB HBM3, 9.0, 550.54.15\nTesla V100-SXM2-16GB, 7.0, 535.104.05\n"
ROCMINFO = """*******
Agent 1
*******
  Name:                    AMD EPYC 9654 96-Core Processor
  Marketing Name:          AMD EPYC 9654 96-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx942
  Uuid:                    GPU-3b2d0a1c
  Marketing Name:          AMD Instinct MI300X
  Device Type:             GPU
*******
Agent 3
*******
  Name:                    gfx90a
  Marketing Name:
  Device Type:             GPU
"""


def test_nvidia_smi_query_lines() -> None:
    assert parse_nvidia_smi_gpus(SMI) == [("NVIDIA H100 80GB HBM3", "sm_90", "550.54.15"),
                                          ("Tesla V100-SXM2-16GB", "sm_70", "535.104.05")]
    assert parse_nvidia_smi_gpus("NVIDIA B200, 10.0\n") == [("NVIDIA B200", "sm_100", None)]
    # what nvidia-smi prints when it cannot talk to the driver, or an old one without compute_cap
    assert parse_nvidia_smi_gpus("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
                                 "Field \"compute_cap\" is not a valid field to query.\n") == []


def test_rocminfo_gpu_agents() -> None:
    assert parse_rocminfo_gpus(ROCMINFO) == [("AMD Instinct MI300X", "gfx942"), (None, "gfx90a")]
    # a CPU agent after a GPU without a marketing name does not lend it the CPU's
    cpu_after = "  Name:  gfx1100\n  Name:  AMD Ryzen 9\n  Marketing Name:  AMD Ryzen 9\n"
    assert parse_rocminfo_gpus(cpu_after) == [(None, "gfx1100")]


@given(st.text(max_size=400))
def test_garbage_through_the_parsers_gives_well_formed_gpus_or_none(text: str) -> None:
    for name, arch, driver in parse_nvidia_smi_gpus(text):
        assert name and "," not in name and parse_arch(arch) == arch
        assert driver is None or driver.replace(".", "").isdigit()
    for name2, arch2 in parse_rocminfo_gpus(text):
        assert parse_arch(arch2) == arch2 and (name2 is None or name2.strip() == name2)


@given(before=st.text(max_size=200), after=st.text(max_size=200))
def test_a_real_line_is_found_among_garbage(before: str, after: str) -> None:
    text = f"{before}\n{SMI}{after}"
    assert ("NVIDIA H100 80GB HBM3", "sm_90", "550.54.15") in parse_nvidia_smi_gpus(text)
    assert ("AMD Instinct MI300X", "gfx942") in parse_rocminfo_gpus(f"{before}\n{ROCMINFO}\n{after}")
