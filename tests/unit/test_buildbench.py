"""build-bench's arithmetic and parsing: step times from a (fake) build stream, build-env.sh's timing lines, the
ratio and the phase table. No daemon: the streams are recorded shapes, the timings generated."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.engine.stream import BuildStream
from torchrig.images.build import stream_timings
from torchrig.images.buildbench import (
    REFERENCE_DOCKERFILE,
    BenchReport,
    Phase,
    details_by_step,
    phases_from,
    reference_context,
)

INSTRUCTIONS = ["ARG BASE_IMAGE=x", "FROM ${BASE_IMAGE} AS base", "COPY a /b", "RUN . build-env.sh && python3 -m venv",
                "USER 1000:1000", "RUN . build-env.sh && torchrig_install a b \\\n  && torchrig_build_done",
                "LABEL x=y"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stream(durations: list[float], instructions: list[str], inner: Callable[[int], list[str]] | None = None,
            ) -> tuple[BuildStream, list[str]]:
    """Feed a build stream whose step i lasts durations[i] (a fake clock), with build-env.sh's lines inside."""
    clock = FakeClock()
    log: list[str] = []
    stream = BuildStream(label="cpu/runtime", log=log.append, clock=clock)
    total = len(durations)
    for i, (d, ins) in enumerate(zip(durations, instructions, strict=True), 1):
        stream.feed({"stream": f"Step {i}/{total} : {ins}\n"})
        for line in (inner(i) if inner else []):
            stream.feed({"stream": line + "\n"})
        clock.now += d
    stream.feed({"stream": "Successfully built 0123456789ab\n"})
    stream.finish()
    return stream, log


# in milliseconds, as the engine's stream can tell them apart (a 1e-38 s step is 0 s on any clock)
durations = st.lists(st.integers(0, 600_000).map(lambda ms: ms / 1000), min_size=1, max_size=7)


@given(durations, st.floats(min_value=0.0, max_value=30.0))
def test_every_step_that_took_time_is_a_phase_and_the_phases_add_up(ds: list[float], upload: float) -> None:
    stream, _ = _stream(ds, INSTRUCTIONS[:len(ds)])
    total = sum(s.seconds for s in stream.steps) + upload
    phases = phases_from(stream_timings(stream.steps, total))
    steps = [p for p in phases if p.name.startswith("step ")]
    meta = [p for p in phases if "metadata steps" in p.name]
    kinds = [ins.split()[0] for ins in INSTRUCTIONS[:len(ds)]]
    assert len(steps) == sum(k in ("COPY", "RUN") for k in kinds)
    assert [int(p.name.split()[0]) for p in meta] == ([sum(k not in ("COPY", "RUN") for k in kinds)]
                                                     if any(k not in ("COPY", "RUN") for k in kinds) else [])
    assert sum(p.seconds for p in phases) == pytest.approx(total)
    assert all(p.seconds >= 0 and "\n" not in p.name and len(p.name) <= 100 for p in phases)
    assert phases[-1].name.startswith("build: context upload") and phases[-1].seconds == pytest.approx(upload)


@given(st.lists(st.tuples(st.integers(1, 7), st.sampled_from(["install (uv)", "compile bytecode", "fix file times",
                                                              "check (uv pip check)"]),
                          st.integers(0, 10**6)), max_size=12))
def test_timing_lines_land_under_the_step_that_printed_them(lines: list[tuple[int, str, int]]) -> None:
    """build-env.sh's `torchrig-time: LABEL S.mmm s` lines, shown by the stream as indented log lines."""
    def inner(step: int) -> list[str]:
        return [f"torchrig-time: {label} {ms // 1000}.{ms % 1000:03d} s" for s, label, ms in lines if s == step]

    stream, log = _stream([1.0] * 7, INSTRUCTIONS, inner)
    details = details_by_step(log)
    for step in range(1, 8):
        assert details.get(step, []) == [(label, ms / 1000) for s, label, ms in lines if s == step]
    phases = phases_from(stream_timings(stream.steps, 7.0), details)
    # a detail follows its step and is not counted twice in the total
    report = BenchReport(env_id="cpu", torchrig_seconds=7.0, reference_seconds=7.0, phases=phases)
    assert report.lines()[-1].split()[0] == "7.0"
    for i, p in enumerate(phases):
        if p.detail:
            assert phases[i - 1].detail or phases[i - 1].name.startswith("step ")


@given(st.floats(min_value=0.1, max_value=1e4), st.floats(min_value=0.1, max_value=1e4))
def test_the_ratio_is_torchrig_over_hand_written_and_printed(t: float, r: float) -> None:
    report = BenchReport(env_id="cpu", torchrig_seconds=t, reference_seconds=r, phases=(Phase(name="x", seconds=t),))
    assert report.ratio == pytest.approx(t / r)
    head = report.lines()[0]
    assert f"ratio {t / r:.2f}x" in head and f"torchrig {t:.1f} s" in head and f"{r:.1f} s" in head


def test_a_zero_reference_gives_no_division_error() -> None:
    assert BenchReport(env_id="cpu", torchrig_seconds=1.0, reference_seconds=0.0, phases=()).ratio == float("inf")


def test_the_named_example_a_cpu_build_breakdown() -> None:
    """The shape of a real cpu run: steps, a step's details, then the post-build work."""
    timings = [("pre: plan (lock, context, labels)", 0.4), ("step 1/3: ARG X", 0.0),
               ("step 2/3: RUN . build-env.sh && python3 -m venv /opt/venv && torchrig_install a b", 80.0),
               ("step 3/3: LABEL a=b", 0.5), ("build: context upload, before the first step", 0.1),
               ("post: measure (image sizes, site-packages container)", 3.0),
               ("post: SBOM (inspect container, label step)", 4.0)]
    details = details_by_step(["[cpu/runtime 1s] step 2/3: RUN ...", "    torchrig-time: install (uv) 60.250 s",
                               "    torchrig-time: compile bytecode 12.000 s"])
    report = BenchReport(env_id="cpu", torchrig_seconds=88.0, reference_seconds=80.0,
                         phases=phases_from(timings, details), torchrig_bytes=5 * 2**30, reference_bytes=4 * 2**30)
    text = "\n".join(report.lines())
    assert "ratio 1.10x" in text
    assert "  - install (uv)" in text and "  - compile bytecode" in text
    assert "ARG X" not in text and "2 metadata steps" in text
    assert text.splitlines()[-1].split()[0] == "88.0"


def test_the_hand_written_context_is_one_install_layer_with_the_lock_and_the_ca() -> None:
    buf = reference_context("torch==2.0.1 --hash=sha256:" + "a" * 64 + "\n", b"-----BEGIN CERTIFICATE-----\n")
    with tarfile.open(fileobj=buf) as tar:
        names = tar.getnames()
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert sorted(names) == ["Dockerfile", "ca.pem", "requirements.txt"]
    assert dockerfile == REFERENCE_DOCKERFILE
    runs = [ln for ln in dockerfile.splitlines() if ln.startswith("RUN")]
    assert len(runs) == 1 and "uv pip install" in dockerfile and "--require-hashes -r" in dockerfile
    assert "pip install --no-cache-dir --index-url https://pypi.org/simple uv" in dockerfile
    assert isinstance(buf, io.BytesIO)
