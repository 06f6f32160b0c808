"""``torchrig build-bench ENV`` (``nox -s build-bench -- ENV``): torchrig's build against a hand-written one.

What a user compares torchrig with is the Dockerfile they would write themselves: the same base, ``pip install uv``
from the index, and one ``RUN`` that installs the same lock with ``uv pip install --require-hashes -r``. This
builds ENV with torchrig (:func:`~torchrig.images.build.build_image`, the real thing: plan, build, measure, SBOM,
tag) and then that Dockerfile, back to back, both without the layer cache, and reports both times, their ratio
and where torchrig's time went: each Dockerfile step as the build stream timed it, then the work after the build.
Both images are removed afterwards (a cpu image is ~5 GB), also when a build fails.

The sources (base image, index, extra indexes, CA bundle, lock) are the ones ``torchrig build`` resolves through
the settings layer, so the two builds download the same files from the same place.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torchrig.engine.stream import BuildStream
from torchrig.errors import BuildError, UsageError
from torchrig.images.build import Timings, build_image
from torchrig.images.options import MB, BuildOptions, Log
from torchrig.images.plan import Plan, plan_build
from torchrig.matrix import Environment, ImageRef
from torchrig.results.reading import read_bytes

if TYPE_CHECKING:
    import docker

__all__ = [
    "REFERENCE_DOCKERFILE",
    "BenchReport",
    "Phase",
    "bench_build",
    "details_by_step",
    "phases_from",
    "reference_context",
]

BENCH_REPO = "torchrig-build-bench"

# What a user writes by hand for the same result: venv, uv from the index, the lock in one layer.
REFERENCE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG INDEX_ARGS
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY requirements.txt ca.pem /tmp/
RUN if [ -s /tmp/ca.pem ]; then export PIP_CERT=/tmp/ca.pem SSL_CERT_FILE=/tmp/ca.pem; fi \\
 && python3 -m venv /opt/venv \\
 && pip install --no-cache-dir --index-url https://pypi.org/simple uv \\
 && uv pip install --no-cache --index-strategy unsafe-best-match $INDEX_ARGS \\
        --require-hashes -r /tmp/requirements.txt \\
 && rm /tmp/requirements.txt /tmp/ca.pem
"""


@dataclass(frozen=True, kw_only=True)
class Phase:
    name: str
    seconds: float
    detail: bool = False  # a part of the step above it (build-env.sh's `torchrig-time:` lines), not counted again


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    env_id: str
    torchrig_seconds: float  # build_image from start to tagged: plan, build, measure, SBOM
    reference_seconds: float  # the hand-written Dockerfile's build
    phases: tuple[Phase, ...]  # where torchrig's time went
    torchrig_bytes: int = 0
    reference_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.torchrig_seconds / self.reference_seconds if self.reference_seconds > 0 else float("inf")

    def lines(self) -> list[str]:
        out = [f"build-bench {self.env_id}: torchrig {self.torchrig_seconds:.1f} s, hand-written uv Dockerfile "
               f"{self.reference_seconds:.1f} s, ratio {self.ratio:.2f}x",
               f"  image sizes: torchrig {self.torchrig_bytes / MB:,.0f} MB, hand-written "
               f"{self.reference_bytes / MB:,.0f} MB",
               "  torchrig's build, phase by phase:"]
        total = sum(p.seconds for p in self.phases if not p.detail)
        for p in self.phases:
            share = 100 * p.seconds / total if total > 0 else 0.0
            out.append(f"  {p.seconds:8.1f} s {share:5.1f} %  " + (f"  - {p.name}" if p.detail else p.name))
        out.append(f"  {total:8.1f} s 100.0 %  total")
        return out


_WS = re.compile(r"\s+")


_TIME_RE = re.compile(r"torchrig-time: (.+?) (\d+(?:\.\d+)?) s\s*$")
_STEP_RE = re.compile(r"\] step (\d+)/\d+: ")


def details_by_step(log_lines: Iterable[str]) -> dict[int, list[tuple[str, float]]]:
    """Step number -> the ``torchrig-time: LABEL SECONDS s`` lines build-env.sh printed inside that step."""
    out: dict[int, list[tuple[str, float]]] = {}
    step = 0
    for line in log_lines:
        m = _STEP_RE.search(line)
        if m:
            step = int(m.group(1))
            continue
        t = _TIME_RE.search(line)
        if t:
            out.setdefault(step, []).append((t.group(1), float(t.group(2))))
    return out


def _one_line(name: str, width: int) -> str:
    text = _WS.sub(" ", name).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


_METADATA = re.compile(r"^step \d+/\d+: (ARG|ENV|USER|SHELL|WORKDIR|CMD|ENTRYPOINT|LABEL|FROM|EXPOSE|VOLUME)\b",
                       re.IGNORECASE)


def phases_from(timings: Iterable[tuple[str, float]], details: dict[int, list[tuple[str, float]]] | None = None, *,
                width: int = 100) -> tuple[Phase, ...]:
    """The phases of a build's :data:`~torchrig.images.build.Timings` (each step followed by its ``details``):
    names on one line and cut to ``width``, negative times (a clock that stepped back) as 0; the steps that only
    change metadata (ARG, ENV, USER, LABEL, ...) summed into one phase after the last step."""
    out: list[Phase] = []
    meta, meta_seconds, at = 0, 0.0, 0
    for name, raw in timings:
        seconds = max(0.0, raw)
        if _METADATA.match(name):
            meta, meta_seconds = meta + 1, meta_seconds + seconds
            continue
        out.append(Phase(name=_one_line(name, width), seconds=seconds))
        m = re.match(r"step (\d+)/", name)
        if m:
            at = len(out)
        for label, part in (details or {}).get(int(m.group(1)) if m else -1, []):
            out.append(Phase(name=_one_line(label, width), seconds=max(0.0, part), detail=True))
            at = len(out) if m else at
    if meta:
        out.insert(at, Phase(name=f"{meta} metadata steps (ARG, ENV, USER, LABEL, ...)", seconds=meta_seconds))
    return tuple(out)


def reference_context(requirements: str, ca_pem: bytes) -> io.BytesIO:
    """The hand-written build's context: its Dockerfile, the lock's requirement lines, the CA bundle (or none)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", REFERENCE_DOCKERFILE.encode()), ("requirements.txt", requirements.encode()),
                           ("ca.pem", ca_pem)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def index_args(plan: Plan) -> str:
    return " ".join([f"--index-url {plan.index_url}", *(f"--extra-index-url {u}" for u in plan.extra_index_urls)])


def _check(plan: Plan, options: BuildOptions) -> str:
    if options.wheelhouse is not None:
        raise UsageError("build-bench compares builds from a package index; it does not take --wheelhouse")
    if plan.lock.lock is None:
        raise UsageError(f"build-bench installs {plan.env.id}'s lock in both builds, and this build has none "
                         f"({plan.lock.message}): write it with `torchrig lock {plan.env.id}` (or pass --lock FILE)")
    return plan.lock.lock.section_text("torch") + plan.lock.lock.section_text("extras")


def _reference(client: docker.DockerClient, plan: Plan, requirements: str, options: BuildOptions, *, tag: str,
               say: Log) -> float:
    import docker.errors

    ca = read_bytes(options.ca_bundle, kind="ca-bundle") if options.ca_bundle is not None else b""
    stream = BuildStream(label=f"{plan.env.id}/hand-written", log=say)
    start = time.monotonic()
    try:
        items = client.api.build(fileobj=reference_context(requirements, ca), custom_context=True, tag=tag,
                                 buildargs={"BASE_IMAGE": plan.base, "INDEX_ARGS": index_args(plan)},
                                 network_mode="host", rm=True, forcerm=True, pull=False, nocache=True, decode=True)
        stream.consume(items)
    except docker.errors.APIError as e:
        raise BuildError(f"the engine refused the hand-written build: {e.explanation or e}") from None
    return time.monotonic() - start


def _size(client: docker.DockerClient, name: str) -> int:
    return int(client.images.get(name).attrs.get("Size") or 0)


def _remove(client: docker.DockerClient, names: Sequence[str], say: Log) -> None:
    import docker.errors

    for name in names:
        try:
            client.images.remove(name, force=True)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as e:
            say(f"build-bench: could not remove {name}: {e.explanation or e}; remove it with `docker rmi {name}`")


def bench_build(env: Environment, options: BuildOptions, *, client: docker.DockerClient, log: Log | None = None,
                ) -> BenchReport:
    """Build ``env`` with torchrig, then the hand-written Dockerfile, no cache; report; remove both images."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    token = f"{env.id}-{os.getpid()}-{secrets.token_hex(3)}"
    ref = ImageRef(immutable=f"{BENCH_REPO}:{token}-torchrig", alias=f"{BENCH_REPO}:{token}-torchrig-alias")
    options = replace(options, ref=ref, no_cache=True, cache_dir=None)
    plan = plan_build(env, "runtime", options, client)
    requirements = _check(plan, options)
    reference_tag = f"{BENCH_REPO}:{token}-hand-written"
    timings: Timings = []
    seen: list[str] = []

    def say_and_keep(line: str) -> None:
        seen.append(line)
        say(line)

    created: list[str] = [ref.immutable, ref.alias, reference_tag]
    try:
        say(f"build-bench {env.id}: 1/2 torchrig build (no cache)")
        start = time.monotonic()
        built = build_image(env, "runtime", options, client=client, log=say_and_keep, timings=timings)
        torchrig_seconds = time.monotonic() - start
        created.append(built.image_id)
        say(f"build-bench {env.id}: 2/2 the hand-written uv Dockerfile (no cache), same base, index, CA and lock")
        reference_seconds = _reference(client, plan, requirements, options, tag=reference_tag, say=say)
        report = BenchReport(env_id=env.id, torchrig_seconds=torchrig_seconds, reference_seconds=reference_seconds,
                             phases=phases_from(timings, details_by_step(seen)), torchrig_bytes=built.size_bytes,
                             reference_bytes=_size(client, reference_tag))
    finally:
        _remove(client, created, say)
    return report
