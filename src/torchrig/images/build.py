"""Build, tag and label an environment's image through the Docker SDK; reuse one built from the same inputs.

How a build goes: plan it (:func:`~torchrig.images.plan.plan_build`: lock, context, build args, labels, inputs)
-> serve the CA bundle and wheelhouse on 127.0.0.1 (:mod:`~torchrig.images.serve`) -> ``client.api.build``
streamed live (:class:`~torchrig.engine.stream.BuildStream`), untagged -> measure (image size, base size,
site-packages inside the image: :mod:`~torchrig.images.measure`) -> check the size budget -> the SBOM and its
label (:mod:`~torchrig.images.sbom`) -> only then tag immutable + alias. A failed build therefore never moves a tag.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from torchrig.engine.client import connect
from torchrig.engine.stream import BuildStream, Step
from torchrig.errors import BuildError
from torchrig.images.base import require_emulation
from torchrig.images.measure import measure_site_packages, read_record, write_record
from torchrig.images.options import LABEL_INPUTS, MB, BuildOptions, BuiltImage, Log
from torchrig.images.plan import Plan, plan_build
from torchrig.images.platforms import DEFAULT_PLATFORM, PLATFORM_ARCH, check_base_platform
from torchrig.images.reach import explain_build_failure
from torchrig.images.sbom import SBOM_LABEL, attach_sbom
from torchrig.images.serve import serving
from torchrig.matrix import Environment, ImageRef, Target

if TYPE_CHECKING:
    import docker

__all__ = ["Timings", "build_image", "ensure_image", "find_image", "stream_timings"]

# Where a build's time went, in order: ("step N/M: INSTRUCTION", seconds) for each Dockerfile step as the build
# stream reported it, then ("post: WHAT", seconds) for the work after it (measuring, the SBOM). Filled only for a
# caller that asks (torchrig.images.buildbench); a build without one pays nothing.
Timings = list[tuple[str, float]]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                client: docker.DockerClient | None = None, log: Log | None = None,
                timings: Timings | None = None) -> BuiltImage:
    """Build ``env``'s ``target`` image, tag it ``env.tags(target)`` (immutable + alias) and measure it.

    Raises BuildError (with the last log lines) when the build fails or the image exceeds its size budget; a
    failed build leaves no new tag behind. ``timings``, when given, receives where the time went (:data:`Timings`).
    """
    options = options or BuildOptions()
    client = client or connect()
    say = log or _stderr
    start = time.monotonic()
    plan = plan_build(env, target, options, client)
    if timings is not None:
        timings.append(("pre: plan (lock, context, labels)", time.monotonic() - start))
    return _build(plan, options, client, say, timings)


def ensure_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                 client: docker.DockerClient | None = None, log: Log | None = None) -> BuiltImage:
    """The image for ``env``/``target``: reused when one with the same build inputs exists, else built."""
    options = options or BuildOptions()
    client = client or connect()
    say = log or _stderr
    plan = plan_build(env, target, options, client)
    found = _find(plan, client)
    if found is None:
        return _build(plan, options, client, say)
    _tag(client, found, plan.ref)
    built = _describe(client, plan, options, found, build_seconds=0.0, reused=True, steps_run=(),
                      steps_total=0)
    say(f"[{env.id}/{target}] reusing {found[7:19]}: built from the same inputs ({plan.inputs[:12]})")
    say(f"[{env.id}/{target}] {built.summary()}")
    return built


def find_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
               client: docker.DockerClient | None = None) -> BuiltImage | None:
    """The existing image built from the same inputs as ``build_image`` would use, or None."""
    options = options or BuildOptions()
    client = client or connect()
    plan = plan_build(env, target, options, client)
    found = _find(plan, client)
    if found is None:
        return None
    return _describe(client, plan, options, found, build_seconds=0.0, reused=True, steps_run=(),
                      steps_total=0)


def stream_timings(steps: Sequence[Step], seconds: float) -> Timings:
    """Each step's time as the build stream saw it, and what the build took beyond them (sending the context)."""
    out: Timings = [(f"step {s.number}/{s.total}: {s.instruction}", s.seconds) for s in steps]
    out.append(("build: context upload, before the first step", max(0.0, seconds - sum(s.seconds for s in steps))))
    return out


def _find(plan: Plan, client: docker.DockerClient) -> str | None:
    images = client.images.list(filters={"label": f"{LABEL_INPUTS}={plan.inputs}"})
    if not images:
        return None
    return _pick(plan.ref.immutable, [(str(i.id), list(i.attrs.get("RepoTags") or []), str(i.attrs.get("Created", "")))
                                      for i in images])


def _pick(immutable: str, candidates: list[tuple[str, list[str], str]]) -> str:
    """Of several images built from the same inputs (a rebuild with --no-cache, a copy of the checkout), the one
    already carrying the immutable tag, then any tagged one, then the newest: the same answer every time, so a
    second command (run-tasks after build) uses the image the first one reported."""
    return max(candidates, key=lambda c: (immutable in c[1], bool(c[1]), c[2]))[0]


def _build(plan: Plan, options: BuildOptions, client: docker.DockerClient, say: Log,
           timings: Timings | None = None) -> BuiltImage:
    import docker.errors

    label = f"{plan.env.id}/{plan.target}"
    say(f"[{label}] building {plan.ref.immutable} from {plan.base} (Dockerfile {plan.env.dockerfile}, "
        f"context {len(plan.context.data) / 1e3:,.0f} kB, {len(plan.context.files)} files)")
    say(f"[{label}] packages from " + (f"the wheelhouse {options.wheelhouse} (offline)" if options.wheelhouse
                                       else plan.index_url + "".join(f" + {u}" for u in plan.extra_index_urls)))
    say(f"[{label}] " + plan.lock.message)
    if options.ca_bundle is not None:
        say(f"[{label}] CA bundle {options.ca_bundle}: served to each downloading step, "
            + ("installed in the image's trust store (--keep-ca-bundle)" if options.keep_ca_bundle
               else "not kept in the image"))
    if plan.platform != DEFAULT_PLATFORM:
        require_emulation(PLATFORM_ARCH[plan.platform])  # every RUN step runs the platform's binaries
        check_base_platform(client, plan.base, plan.platform)
        say(f"[{label}] platform {plan.platform}")
    stream = BuildStream(label=label, log=say)
    start = time.monotonic()
    with serving(ca_bundle=options.ca_bundle, wheelhouse=options.wheelhouse) as url:
        buildargs = dict(plan.buildargs)
        if url:
            buildargs["FTP_PROXY"] = url  # the predefined arg: no cache key, no history (see images/serve.py)
        try:
            items = client.api.build(
                fileobj=plan.context.fileobj(), custom_context=True, dockerfile="Dockerfile", target=plan.stage,
                buildargs=buildargs, network_mode="host", rm=True, forcerm=True,
                pull=False, nocache=options.no_cache, decode=True,
                platform=None if plan.platform == DEFAULT_PLATFORM else plan.platform,
            )
            image_id = stream.consume(items)
        except BuildError as e:  # name each source this machine cannot reach, and the setup that avoids them
            from_failed = bool(stream.steps) and stream.steps[-1].instruction.upper().startswith("FROM")
            raise BuildError(explain_build_failure(str(e), plan, from_failed=from_failed,
                                                   offline=options.wheelhouse is not None)) from None
        except docker.errors.APIError as e:
            raise BuildError(f"the engine refused to build {label}: {e.explanation or e}") from None
    seconds = time.monotonic() - start
    times: Timings = timings if timings is not None else []
    times += stream_timings(stream.steps, seconds)
    mark = time.monotonic()
    if not image_id.startswith("sha256:"):
        image_id = str(client.images.get(image_id).id)
    # what ran: not the cache's, not FROM, and not the global ARGs before the first FROM (they make no layer)
    first_from = next((i for i, s in enumerate(stream.steps) if s.instruction.upper().startswith("FROM")), 0)
    steps_run = tuple(s.instruction for s in stream.steps[first_from:]
                      if not s.cached and not s.instruction.upper().startswith("FROM"))
    built = _describe(client, plan, options, image_id, build_seconds=seconds, reused=False, steps_run=steps_run,
                      steps_total=stream.steps[-1].total if stream.steps else 0)
    times.append(("post: measure (image sizes, site-packages container)", time.monotonic() - mark))
    if plan.budget_mb is not None and built.size_bytes > plan.budget_mb * MB:
        _discard_untagged(client, image_id)
        source = "--size-budget-mb" if options.size_budget_mb else f"size_budget_mb.{plan.target} in matrix.yaml"
        raise BuildError(
            f"{label}: the image is {built.size_bytes / MB:,.0f} MB, over its size budget of {plan.budget_mb:,} MB "
            f"({source}); it was not tagged.\n{built.summary()}\n"
            "Shrink what the environment installs, or, for a build from other sources than matrix.yaml's (e.g. "
            "PyPI's CUDA wheels), raise the budget with --size-budget-mb / TORCHRIG_SIZE_BUDGET_MB.")
    # the SBOM describes the built image, so its label comes from a metadata-only step on top (images/sbom.py)
    mark = time.monotonic()
    sbom = attach_sbom(client, image_id, env_id=plan.env.id, cache_dir=options.cache_dir,
                       keep=options.keep_containers)
    times.append(("post: SBOM (inspect container, label step)", time.monotonic() - mark))
    built = replace(built, image_id=sbom.image_id, labels={**built.labels, SBOM_LABEL: sbom.sha256})
    _tag(client, built.image_id, plan.ref)
    cached = sum(s.cached for s in stream.steps)
    say(f"[{label}] built in {seconds:.1f} s ({len(steps_run)} steps ran, {cached} from cache); tagged "
        f"{plan.ref.immutable} and {plan.ref.alias}")
    say(f"[{label}] {built.summary()}")
    say(f"[{label}] {sbom.describe()}")
    if options.cache_dir is not None:
        write_record(built, options.cache_dir)
    return built


def _describe(client: docker.DockerClient, plan: Plan, options: BuildOptions, image_id: str, *,
              build_seconds: float, reused: bool, steps_run: tuple[str, ...], steps_total: int) -> BuiltImage:
    image = client.images.get(image_id)
    size = int(image.attrs.get("Size") or 0)
    base_size = int(client.images.get(plan.base).attrs.get("Size") or 0)
    recorded = None
    if reused and options.cache_dir is not None:
        recorded = read_record(options.cache_dir, plan.env.id, plan.target, str(image.id))
    site = int(recorded["site_packages_bytes"]) if recorded else measure_site_packages(
        client, str(image.id), env_id=plan.env.id, keep=options.keep_containers)
    labels = dict(image.labels or {})
    lock = labels.get("io.torchrig.lock")
    return BuiltImage(env_id=plan.env.id, target=plan.target, image_id=str(image.id), ref=plan.ref, labels=labels,
                      size_bytes=size, base_size_bytes=base_size, site_packages_bytes=site,
                      build_seconds=build_seconds, reused=reused, steps_run=steps_run, steps_total=steps_total,
                      budget_mb=plan.budget_mb, lock_sha256=None if lock in (None, "none") else lock)


def _tag(client: docker.DockerClient, image_id: str, ref: ImageRef) -> None:
    """Point both names at ``image_id``.

    The image they named before is left as it is (dangling, like after `docker build`): a caller may still hold
    it (a BuiltImage, a running container), and it costs one image config, its layers being shared.
    """
    for name in (ref.immutable, ref.alias):
        repo, tag = name.rsplit(":", 1)
        if not client.api.tag(image_id, repo, tag, force=True):
            raise BuildError(f"tagging {image_id[:19]} as {name} failed")


def _discard_untagged(client: docker.DockerClient, image_id: str) -> None:
    """Remove an image nothing names any more (its layers stay: they are the build cache)."""
    import docker.errors

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id, noprune=True)
    except docker.errors.APIError:
        pass  # in use by a container, or already gone: leave it
