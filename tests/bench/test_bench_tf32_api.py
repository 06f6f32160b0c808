"""The TF32 API per torch release (bench/tf32_api.py), driven through a fake torch that behaves like the real
one: a write through ``fp32_precision`` makes the legacy getters raise (pytorch#166387), a legacy write keeps both."""

from __future__ import annotations

import itertools
import sys
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import tf32_api
from bench.tf32_api import choose_api, parse_release, tf32_ranges


class _State:
    def __init__(self) -> None:
        self.legacy = {"matmul": False, "conv": True}
        self.new = {"matmul": "ieee", "conv": "tf32"}
        self.mixed = False  # a write through the new API happened: legacy getters raise


def _legacy_get(state: _State, key: str) -> bool:
    if state.mixed:
        raise RuntimeError("you have used mix of the legacy and new APIs to set the TF32 status")
    return state.legacy[key]


class _Old:
    """torch 2.0's backend modules: unknown attributes raise AssertionError."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Unknown attribute {name}")


def _fake_torch(version: str, *, new_api: bool) -> types.ModuleType:
    state = _State()

    class Matmul(_Old):
        allow_fp16_reduced_precision_reduction = True
        allow_bf16_reduced_precision_reduction = True

        @property
        def allow_tf32(self) -> bool:
            return _legacy_get(state, "matmul")

        @allow_tf32.setter
        def allow_tf32(self, v: bool) -> None:
            state.legacy["matmul"], state.new["matmul"] = v, "tf32" if v else "ieee"

    class Conv:
        @property
        def fp32_precision(self) -> str:
            return state.new["conv"]

        @fp32_precision.setter
        def fp32_precision(self, v: str) -> None:
            state.new["conv"], state.mixed = v, True

    class Cudnn(_Old):
        benchmark = False
        deterministic = False
        enabled = True

        @property
        def allow_tf32(self) -> bool:
            return _legacy_get(state, "conv")

        @allow_tf32.setter
        def allow_tf32(self, v: bool) -> None:
            state.legacy["conv"], state.new["conv"] = v, "tf32" if v else "ieee"

    if new_api:
        def get_new(self: Any) -> str:
            return state.new["matmul"]

        def set_new(self: Any, v: str) -> None:
            state.new["matmul"], state.mixed = v, True

        Matmul.fp32_precision = property(get_new, set_new)  # type: ignore[attr-defined]
        Cudnn.conv = Conv()  # type: ignore[attr-defined]

    torch = types.ModuleType("torch")
    torch.__version__ = version  # type: ignore[attr-defined]
    torch.backends = types.SimpleNamespace(  # type: ignore[attr-defined]
        cuda=types.SimpleNamespace(matmul=Matmul()), cudnn=Cudnn())

    def get_float32_matmul_precision() -> str:
        if state.mixed:
            raise RuntimeError("mix of the legacy and new APIs to set the matmul precision")
        return "high" if state.legacy["matmul"] else "highest"

    torch.get_float32_matmul_precision = get_float32_matmul_precision  # type: ignore[attr-defined]
    torch.are_deterministic_algorithms_enabled = lambda: False  # type: ignore[attr-defined]
    torch.get_num_threads = lambda: 2  # type: ignore[attr-defined]
    torch._state = state  # type: ignore[attr-defined]
    return torch


def _inductor_reads(torch: Any) -> tuple[bool, bool, str]:
    """What inductor (2.9 .. 2.14) reads while compiling: the legacy getters."""
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


_versions = st.builds(lambda mi, pa, local: f"2.{mi}.{pa}{local}", st.integers(0, 20), st.integers(0, 3),
                      st.sampled_from(["", "+cu128", "+rocm6.4", "a0+git1234", "+cpu"]))


@given(version=_versions, tf32=st.booleans())
def test_precision_flags_leave_inductor_able_to_read(version: str, tf32: bool) -> None:
    """Every release (with the new API from 2.9): TF32 is set as asked, inductor's legacy reads do not raise,
    and the previous values come back afterwards."""
    from bench.flags import precision_flags

    release = parse_release(version)
    assert release is not None
    torch = _fake_torch(version, new_api=release >= (2, 9))
    with pytest.MonkeyPatch.context() as m:
        m.setitem(sys.modules, "torch", torch)
        before = _inductor_reads(torch)
        with precision_flags(tf32=tf32, cudnn_benchmark=True) as flags:
            assert _inductor_reads(torch)[:2] == (tf32, tf32)
            assert flags["tf32_matmul"] is tf32 and flags["tf32_cudnn"] is tf32
            assert flags["tf32_api"] in ("allow_tf32", "fp32_precision") and flags["tf32_api_why"]
        assert _inductor_reads(torch) == before
    assert not torch._state.mixed  # type: ignore[attr-defined]


def test_each_range_names_its_api_and_source() -> None:
    ranges = tf32_ranges()
    assert ranges, "compat.yaml's tf32_api table is read"
    for r in ranges:
        for minor in range(r.first[1], r.below[1]):
            c = choose_api(f"{r.first[0]}.{minor}.0", has_legacy=True, has_new=minor >= 9)
            assert c.known_release and c.api == r.api and c.why == r.why
    # the ranges are contiguous and ordered, and cover every release the compat table lists but the newest
    for a, b in itertools.pairwise(ranges):
        assert a.below == b.first
    from torchrig.matrix.compat import load_compat

    listed = sorted(tuple(int(x) for x in m.split(".")) for m in load_compat().releases)
    assert ranges[0].first == listed[0] and ranges[-1].below >= listed[-2]


def test_without_compat_data_every_release_gets_the_legacy_flags_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf32_api, "tf32_ranges", lambda: ())
    for version in ("2.0.1", "2.9.1", "2.14.1"):
        c = choose_api(version, has_legacy=True, has_new=True)
        assert c.api == "allow_tf32" and not c.known_release and "could not be read" in c.why


@pytest.mark.parametrize("bad", [
    [{"first": "2.9", "below": "2.0", "api": "allow_tf32", "why": "x"}],
    [{"first": "2.0", "below": "2.9", "api": "tf32_please", "why": "x"}],
    [{"first": "2.0", "below": "2.10", "api": "allow_tf32", "why": "x"},
     {"first": "2.9", "below": "2.15", "api": "allow_tf32", "why": "y"}],
    [{"first": "2", "below": "2.9", "api": "allow_tf32", "why": "x"}],
])
def test_a_malformed_tf32_table_is_refused(bad: list[dict[str, str]]) -> None:
    from torchrig.matrix.compat import _tf32_ranges

    with pytest.raises(ValueError, match="tf32_api"):
        _tf32_ranges(bad)


def test_regressions() -> None:
    # 2.9-2.10 + torch.compile: the new API broke inductor's legacy getter (pytorch#166387)
    assert choose_api("2.9.1+cu128", has_legacy=True, has_new=True).api == "allow_tf32"
    assert choose_api("2.10.0", has_legacy=True, has_new=True).api == "allow_tf32"
    assert choose_api("2.0.1", has_legacy=True, has_new=False).api == "allow_tf32"
    # a release past the table: the legacy flags while they exist, else the new API; flagged as unverified
    later = choose_api("2.20.0", has_legacy=True, has_new=True)
    assert later.api == "allow_tf32" and not later.known_release
    assert choose_api("3.0.0", has_legacy=False, has_new=True).api == "fp32_precision"
    assert parse_release("garbage") is None
    assert choose_api("garbage", has_legacy=True, has_new=True).api == "allow_tf32"
