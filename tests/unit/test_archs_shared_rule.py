"""The cubin/PTX rule is defined once (torchrig.results.archs): doctor's wheel check (torchrig.matrix.archs, on the
host) and the tasks' device check (tasks._torchsupport.arch_problem, in the image) agree on generated arch lists."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tasks._torchsupport import arch_problem
from torchrig.matrix.archs import WheelArchs, cuda_runs, rocm_runs
from torchrig.results.archs import kernel_for

CCS = st.sampled_from([(3, 7), (5, 0), (5, 2), (6, 0), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0),
                       (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)])
GFX = st.sampled_from(["gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx950", "gfx1030", "gfx1100", "gfx1201"])


def _sm(cc: tuple[int, int], kind: str = "sm") -> str:
    return f"{kind}_{cc[0]}{cc[1]}"


@given(cubins=st.lists(CCS, max_size=8, unique=True), ptx=st.lists(CCS, max_size=2, unique=True), gpu=CCS)
def test_doctor_and_the_tasks_agree_on_nvidia(cubins: list[tuple[int, int]], ptx: list[tuple[int, int]],
                                               gpu: tuple[int, int]) -> None:
    wheel = WheelArchs(cubins=tuple(map(_sm, cubins)), ptx=tuple(_sm(c, "compute") for c in ptx), source="",
                       verified=True)
    arch_list = [*wheel.cubins, *wheel.ptx]  # as torch.cuda.get_arch_list() writes them
    device = _sm(gpu)
    doctor_ok = cuda_runs(wheel, device).ok
    in_image_ok = arch_problem(device, arch_list) is None if arch_list else False
    assert doctor_ok == in_image_ok
    # and both are the rule itself: a cubin of the same major at a lower or equal minor, or PTX at or below
    expected = any(c[0] == gpu[0] and c[1] <= gpu[1] for c in cubins) or any(p <= gpu for p in ptx)
    assert doctor_ok == expected
    # a driver that cannot JIT leaves only the cubins
    assert cuda_runs(wheel, device, jit=False).ok == any(c[0] == gpu[0] and c[1] <= gpu[1] for c in cubins)


@given(archs=st.lists(GFX, max_size=6, unique=True), gpu=GFX)
def test_doctor_and_the_tasks_agree_on_amd(archs: list[str], gpu: str) -> None:
    wheel = WheelArchs(cubins=tuple(archs), ptx=(), source="", verified=True)
    in_image_ok = arch_problem(gpu, archs) is None if archs else False
    assert rocm_runs(wheel, gpu).ok == in_image_ok == (gpu in archs)


def test_named_cases() -> None:
    cu130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert kernel_for("sm_70", cu130) is None  # V100 on torch 2.14 cu130
    assert kernel_for("sm_89", cu130) == "sm_86"  # Ada runs Ampere's sm_86 cubins
    assert kernel_for("sm_103", cu130) == "sm_100"
    assert kernel_for("sm_90", ["sm_90a"]) == "sm_90a" and kernel_for("sm_100", ["sm_90a"]) is None
    assert kernel_for("sm_100", ["sm_90", "compute_90"]) == "compute_90"
    assert kernel_for("sm_100", ["sm_90", "compute_90"], jit=False) is None
    assert kernel_for("gfx942", ["gfx90a"]) is None and kernel_for("bogus", cu130) is None
