"""Load facts and the busy-machine verdict (bench/load.py): parsers over generated, truncated and huge inputs, and
the verdict over generated before/after samples."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bench import load
from bench.load import (
    LOAD_PER_CORE_MAX,
    OTHER_CPU_SHARE_MAX,
    judge,
    parse_amd_processes,
    parse_nvidia_apps,
    parse_nvidia_gpus,
    parse_proc_stat,
    sample,
)

H100_LINE = "0, NVIDIA H100 80GB HBM3, 1980, 1980, 690.12, 700.00, 61, 100, 0x0000000000000004"
APPS = "GPU-5c1e, 4242, python, 70000\nGPU-5c1e, 31337, /usr/bin/other, 1024\n"
PROC_STAT = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n"


def test_named_examples() -> None:
    (g,) = parse_nvidia_gpus(H100_LINE)
    assert g["clocks.sm"] == 1980 and g["power.draw"] == 690.12 and g["throttle_mask"] == 4
    assert g["throttle_busy"] == []  # the SW power cap under full load is normal
    (hot,) = parse_nvidia_gpus(H100_LINE.replace("0x0000000000000004", "0x0000000000000048"))
    assert hot["throttle_busy"] == ["hw_slowdown", "hw_thermal_slowdown"]
    (na,) = parse_nvidia_gpus("0, Tesla T4, [N/A], 1590, [Not Supported], 70.00, 40, 0, [N/A]")
    assert na["clocks.sm"] is None and na["throttle_mask"] is None and na["throttle_busy"] == []
    assert [a["pid"] for a in parse_nvidia_apps(APPS)] == [4242, 31337]
    st_ = parse_proc_stat(PROC_STAT)
    assert isinstance(st_, dict) and st_["total_s"] > st_["busy_s"] > 0
    assert parse_amd_processes("No running processes detected") == []
    doc = [{"gpu": 0, "process_list": [{"process_info": {"name": "python", "pid": 77}}]}, {"gpu": 1, "pid": "78"}]
    assert parse_amd_processes(json.dumps(doc)) == [77, 78]
    assert str(parse_amd_processes("{not json")).startswith("unavailable:")


_junk = st.lists(st.sampled_from([*"0123456789abcdefx,. -[]NA/\n\t", "0x", "\u00e9", "9" * 400, "1e999", "nan",
                                   "inf", "-1", "0xffffffffffffffffffff", "cpu "]), max_size=80).map("".join)


@given(st.one_of(_junk, st.text(max_size=300), st.just(H100_LINE[: 37]), st.just(H100_LINE + ", extra")))
def test_smi_and_proc_parsers_never_raise(text: str) -> None:
    """Malformed, truncated, huge-number or foreign output: rows that parse, the rest left out; never a
    traceback, never a non-finite number."""
    for row in parse_nvidia_gpus(text):
        for k in ("clocks.sm", "clocks.max.sm", "power.draw", "power.limit"):
            v = row[k]
            assert v is None or (isinstance(v, float) and math.isfinite(v))
    for app in parse_nvidia_apps(text):
        assert 0 <= app["pid"] < 10**10
    assert isinstance(parse_proc_stat(text), (dict, str))
    out = parse_amd_processes(text)
    assert isinstance(out, (list, str))


@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                    lambda kids: st.one_of(st.lists(kids, max_size=4),
                                           st.dictionaries(st.sampled_from(["pid", "gpu", "process_list"]), kids,
                                                           max_size=3)), max_leaves=30))
def test_amd_json_of_any_shape_gives_pids(doc: Any) -> None:
    out = parse_amd_processes(json.dumps(doc))
    assert isinstance(out, list) and all(isinstance(p, int) and 0 < p < 2**31 for p in out)


def _sample(t: float, load1: float, busy_s: float, own_s: float, *, cpus: int = 2,
            apps: list[int] | None = None, throttle: list[str] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"monotonic_s": t, "cpu_count": cpus, "loadavg": [load1, load1, load1],
                         "proc_stat": {"busy_s": busy_s, "total_s": 10 * busy_s + 1}, "own_cpu_s": own_s, "pid": 1}
    if apps is not None or throttle is not None:
        s["nvidia_smi"] = {"compute_apps": [{"pid": p} for p in apps or []],
                           "gpus": [{"throttle_busy": throttle or []}]}
    return s


@given(cpus=st.integers(1, 256), wall=st.floats(1.0, 1e4), own_share=st.floats(0, 1), other_share=st.floats(0, 1),
       load_excess=st.floats(0, 4))
def test_the_verdict_follows_the_thresholds(cpus: int, wall: float, own_share: float, other_share: float,
                                            load_excess: float) -> None:
    own = own_share * wall * cpus
    other = other_share * wall * cpus
    before = _sample(0.0, 1.0 + load_excess * cpus, 0.0, 0.0, cpus=cpus)
    after = _sample(wall, max(1.0, own / wall) + load_excess * cpus, own + other, own, cpus=cpus)
    v = judge(before, after)
    assert v.other_cpu_share is not None and abs(v.other_cpu_share - other_share) < 1e-6
    cpu_busy = other_share > OTHER_CPU_SHARE_MAX + 1e-9
    load_busy = load_excess > LOAD_PER_CORE_MAX + 1e-9
    if cpu_busy or load_busy:
        assert v.busy and v.warning.startswith("busy machine: ")
    elif other_share < OTHER_CPU_SHARE_MAX - 1e-9 and load_excess < LOAD_PER_CORE_MAX - 1e-9:
        assert not v.busy, v.reasons
    json.dumps(v.to_dict(), allow_nan=False)


def test_gpu_processes_and_throttling_make_a_machine_busy() -> None:
    quiet0, quiet1 = _sample(0, 0.1, 0, 0, apps=[]), _sample(10, 1.0, 10, 10, apps=[1])
    assert not judge(quiet0, quiet1).busy  # our own pid after the run
    # a container's PID namespace: our process shows under a host pid; one entry is ours
    assert not judge(quiet0, _sample(10, 1.0, 10, 10, apps=[90001])).busy
    other = judge(_sample(0, 0.1, 0, 0, apps=[31337]), quiet1)
    assert other.busy and "other GPU compute process" in other.reasons[0] and "31337" in other.reasons[0]
    hot = judge(quiet0, _sample(10, 1.0, 10, 10, apps=[1], throttle=["hw_thermal_slowdown"]))
    assert hot.busy and "hw_thermal_slowdown" in hot.reasons[0]


@given(st.dictionaries(st.sampled_from(["monotonic_s", "cpu_count", "loadavg", "proc_stat", "own_cpu_s", "pid",
                                        "nvidia_smi", "amd_smi"]),
                       st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=5),
                                 st.lists(st.floats(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                    st.floats(), max_size=2))),
       st.dictionaries(st.sampled_from(["monotonic_s", "cpu_count", "loadavg", "own_cpu_s"]),
                       st.one_of(st.none(), st.floats(), st.integers(-5, 5))))
def test_any_samples_give_a_verdict_never_an_exception(before: dict[str, Any], after: dict[str, Any]) -> None:
    v = judge(before, after)
    assert isinstance(v.busy, bool)


def test_a_real_sample_here() -> None:
    s = sample()
    assert s["cpu_count"] >= 1 and isinstance(s["own_cpu_s"], float)
    assert isinstance(s["proc_stat"], dict) or s["proc_stat"].startswith("unavailable")
    json.dumps(s, allow_nan=False)


def test_a_missing_or_hanging_smi_is_unavailable(monkeypatch: Any) -> None:
    import shutil
    import subprocess

    def hang(*a: Any, **kw: Any) -> Any:
        raise subprocess.TimeoutExpired(cmd="nvidia-smi", timeout=load.SMI_TIMEOUT_S)

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)  # bench.load's shutil and subprocess
    monkeypatch.setattr(subprocess, "run", hang)
    s = sample()
    assert s["nvidia_smi"]["gpus"].startswith("unavailable: TimeoutExpired")
    assert s["amd_smi"]["compute_pids"].startswith("unavailable")
