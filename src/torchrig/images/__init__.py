"""Build, tag and label an environment's image through the Docker SDK; measure it against its payload.

Public API (what ``containers.py`` and the CLI call):

* :class:`BuildOptions` -- the site overrides (base image, index, wheelhouse, CA bundle, size budget). Use
  :meth:`BuildOptions.from_environ` to get what the CLI gets: each override also read from ``TORCHRIG_*``, and
  the CA bundle defaulting to the host's (``PIP_CERT`` / ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``).
* :func:`build_image` -- build ``env``/``target``, tag it, return a :class:`BuiltImage` (tags, labels, size,
  payload, which steps ran).
* :func:`ensure_image` -- the same, but reuse an image whose ``io.torchrig.inputs`` label says it was built from
  the same inputs (context, build args, base image id); :func:`find_image` only looks.

How a build goes: decide the lock (lock.decide) -> assemble the context (build_context) -> serve the CA bundle and
wheelhouse on 127.0.0.1 (build_server) -> ``client.api.build`` streamed live (docker_stream), untagged -> measure
(image size, base size, site-packages inside the image) -> check the size budget -> only then tag immutable +
alias. A failed build therefore never moves a tag.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from torchrig import __version__
from torchrig.engine.client import connect
from torchrig.engine.stream import BuildStream
from torchrig.errors import BuildError, UsageError
from torchrig.images.base import cache_dir, missing_base_hint
from torchrig.images.context import BuildContext, assemble, code_sources, read_dockerignore
from torchrig.images.lock import LockDecision, decide, read_lock
from torchrig.images.serve import FileServer, ServePlan, resolve_ca_bundle
from torchrig.images.serve import plan as serve_plan
from torchrig.matrix import Environment, ImageRef, Target, default_matrix_path

if TYPE_CHECKING:
    import docker

__all__ = [
    "LABEL_INPUTS",
    "SOURCE_URL",
    "BuildOptions",
    "BuiltImage",
    "Log",
    "build_image",
    "default_root",
    "ensure_image",
    "extras_as_constraints",
    "find_image",
    "image_labels",
    "measure_site_packages",
    "size_records_dir",
    "with_labels",
]

Log = Callable[[str], None]
SOURCE_URL = "https://github.com/torchrig/torchrig"
LABEL_INPUTS = "io.torchrig.inputs"
MB = 1_000_000  # sizes in MB as `docker images` shows them (10^6 bytes)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def default_root() -> Path:
    """The torchrig checkout: where images/, locks/ and the code copied into images live."""
    here = Path(__file__).resolve().parents[3]
    if (here / "images" / "Dockerfile").is_file():
        return here
    return default_matrix_path().parent


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How to build. Every field defaults to "what matrix.yaml says"; see ``torchrig build --help``."""

    base_image: str | None = None  # instead of env.targets[target]
    index_url: str | None = None  # instead of env.index
    extra_index_urls: tuple[str, ...] | None = None  # instead of env.extra_index
    wheelhouse: Path | None = None  # install offline from these wheels (pip --no-index --find-links)
    ca_bundle: Path | None = None  # served to every downloading step, never kept (unless keep_ca_bundle)
    keep_ca_bundle: bool = False  # install ca_bundle into the image's trust store
    size_budget_mb: int | None = None  # instead of env.size_budget_mb[target]
    use_lock: bool = True
    lock_file: Path | None = None  # instead of <root>/locks/<env>.txt
    uid: int = 1000
    gid: int = 1000
    no_cache: bool = False
    root: Path | None = None  # the checkout (images/, locks/, src/torchrig, tasks/, bench/); default_root()
    ref: ImageRef | None = None  # tag under these names instead of env.tags(target)
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, base_image: str | None = None,
                     index_url: str | None = None, extra_index_urls: Sequence[str] | None = None,
                     wheelhouse: str | os.PathLike[str] | None = None, ca_bundle: str | os.PathLike[str] | None = None,
                     keep_ca_bundle: bool | None = None, size_budget_mb: int | None = None,
                     **rest: Any) -> BuildOptions:
        """Options from arguments (the CLI's flags), falling back to ``TORCHRIG_*`` variables.

        TORCHRIG_BASE_IMAGE, TORCHRIG_INDEX_URL, TORCHRIG_EXTRA_INDEX_URL (space-separated), TORCHRIG_WHEELHOUSE,
        TORCHRIG_CA_BUNDLE (a file, or "none"; default: PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE),
        TORCHRIG_KEEP_CA_BUNDLE (1), TORCHRIG_SIZE_BUDGET_MB.
        """
        env = os.environ if environ is None else environ
        extra = extra_index_urls
        if extra is None and "TORCHRIG_EXTRA_INDEX_URL" in env:
            extra = env["TORCHRIG_EXTRA_INDEX_URL"].replace(",", " ").split()
        house = wheelhouse if wheelhouse is not None else env.get("TORCHRIG_WHEELHOUSE") or None
        keep = keep_ca_bundle if keep_ca_bundle is not None else \
            env.get("TORCHRIG_KEEP_CA_BUNDLE", "").lower() in ("1", "true", "yes")
        budget = size_budget_mb
        if budget is None and env.get("TORCHRIG_SIZE_BUDGET_MB"):
            try:
                budget = int(env["TORCHRIG_SIZE_BUDGET_MB"])
            except ValueError:
                raise UsageError(f"TORCHRIG_SIZE_BUDGET_MB={env['TORCHRIG_SIZE_BUDGET_MB']!r} is not a whole "
                                 "number of MB") from None
        return cls(
            base_image=base_image or env.get("TORCHRIG_BASE_IMAGE") or None,
            index_url=index_url or env.get("TORCHRIG_INDEX_URL") or None,
            extra_index_urls=tuple(extra) if extra is not None else None,
            wheelhouse=Path(house).expanduser().resolve() if house else None,
            ca_bundle=resolve_ca_bundle(ca_bundle, env),
            keep_ca_bundle=keep,
            size_budget_mb=budget,
            **rest,
        )


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image that exists in the engine, with what a user wants to know about it."""

    env_id: str
    target: Target
    image_id: str
    ref: ImageRef
    labels: Mapping[str, str]
    size_bytes: int
    base_size_bytes: int
    site_packages_bytes: int
    build_seconds: float
    reused: bool  # True: an image built from the same inputs already existed (ensure_image)
    steps_run: tuple[str, ...] = ()  # Dockerfile steps that ran (not taken from the layer cache)
    steps_total: int = 0
    budget_mb: int | None = None
    lock_sha256: str | None = None

    @property
    def payload_bytes(self) -> int:
        """What the image cannot do without: its base image plus the installed site-packages."""
        return self.base_size_bytes + self.site_packages_bytes

    @property
    def ratio(self) -> float:
        """Image size / payload: 1.0 is no overhead at all; torchrig aims for <= 1.10."""
        return self.size_bytes / self.payload_bytes if self.payload_bytes else float("inf")

    def summary(self) -> str:
        budget = f", budget {self.budget_mb} MB" if self.budget_mb else ""
        return (f"{self.ref.immutable} ({self.image_id[7:19]}): {self.size_bytes / MB:,.0f} MB = {self.ratio:.3f} x "
                f"payload {self.payload_bytes / MB:,.0f} MB (base {self.base_size_bytes / MB:,.0f} MB + "
                f"site-packages {self.site_packages_bytes / MB:,.0f} MB){budget}")


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True, kw_only=True)
class _Plan:
    env: Environment
    target: Target
    ref: ImageRef
    base: str
    index_url: str
    extra_index_urls: tuple[str, ...]
    lock: LockDecision
    context: BuildContext
    buildargs: Mapping[str, str]
    labels: Mapping[str, str]
    budget_mb: int | None
    stage: str | None  # the Dockerfile stage to build: the target's, or None (the last) if it names no stages

    @property
    def inputs(self) -> str:
        return self.labels[LABEL_INPUTS]


def _check_index(url: str, what: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"{what} {url!r} is not an http(s) URL")
    if parsed.username or parsed.password:
        raise UsageError(f"{what} carries credentials: build args are recorded in `docker history`, so torchrig "
                         "does not pass them. Download the wheels with `pip download -d DIR` and build with "
                         "--wheelhouse DIR instead.")


def _generated_files(env: Environment, lock: LockDecision) -> dict[str, str]:
    """The requirement files the Dockerfile installs from (``torchrig-build/`` in the context)."""
    pins = f"torch=={env.torch}\ntorchvision=={env.torchvision}\n"
    if lock.lock is not None:
        return {"requirements-torch.txt": lock.lock.section_text("torch"), "constraints-torch.txt": "",
                "requirements-extras.txt": lock.lock.section_text("extras"), "constraints.txt": pins}
    # Unlocked, the torch layer resolves under the extras' version pins too (e.g. numpy<2): else it would install
    # the newest numpy and the extras layer a second, older copy on top.
    return {"requirements-torch.txt": pins, "constraints-torch.txt": extras_as_constraints(env.image_extras),
            "requirements-extras.txt": "".join(f"{r}\n" for r in env.image_extras), "constraints.txt": pins}


def extras_as_constraints(extras: Sequence[str]) -> str:
    """pip constraints from requirement strings: name + version specifier (+ marker); extras ``[...]`` dropped."""
    out = []
    for req in extras:
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$", req)
        if m and m.group(2).strip() and not m.group(2).lstrip().startswith("@"):
            out.append(f"{m.group(1)}{m.group(2).strip()}\n")
    return "".join(out)


def _git_revision(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src/torchrig", "tasks",
                                "bench", "images"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def image_labels(env: Environment, target: Target, ref: ImageRef, *, base: str, index_url: str,
                 lock_sha256: str | None, inputs: str, revision: str, created: str,
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """OCI labels plus torchrig's: what `docker inspect` tells a user about where an image came from."""
    labels = {
        "org.opencontainers.image.title": f"torchrig {env.id} ({target})",
        "org.opencontainers.image.description": env.description or f"torch {env.torch} ({env.flavour})",
        "org.opencontainers.image.version": ref.immutable.rsplit(":", 1)[1],
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.base.name": base,
        "io.torchrig.env": env.id,
        "io.torchrig.target": target,
        "io.torchrig.accelerator": env.accelerator,
        "io.torchrig.torch": env.torch,
        "io.torchrig.torchvision": env.torchvision,
        "io.torchrig.python": env.python,
        "io.torchrig.cuda": env.cuda or "none",
        "io.torchrig.rocm": env.rocm or "none",
        "io.torchrig.index": index_url,
        "io.torchrig.lock": lock_sha256 or "none",
        "io.torchrig.version": __version__,
        LABEL_INPUTS: inputs,
    }
    labels.update(extra or {})
    return labels


def _image_id_or_name(client: docker.DockerClient, name: str) -> str:
    import docker.errors

    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return name  # pulled by the build; the next build then keys on its id


def _plan(env: Environment, target: Target, options: BuildOptions, client: docker.DockerClient) -> _Plan:
    if target not in env.targets and options.base_image is None:
        raise UsageError(f"environment {env.id} has no {target!r} target (targets: {', '.join(env.targets)}); "
                         f"add one under targets: in matrix.yaml or pass --base-image")
    root = options.root or default_root()
    base = options.base_image or env.targets[target]
    index_url = options.index_url or env.index
    extra = options.extra_index_urls if options.extra_index_urls is not None else env.extra_index
    _check_index(index_url, "the index URL")
    for u in extra:
        _check_index(u, "the extra index URL")
    if options.keep_ca_bundle and options.ca_bundle is None:
        raise UsageError("--keep-ca-bundle needs a CA bundle: pass --ca-bundle FILE (or set TORCHRIG_CA_BUNDLE)")
    stage = _stage(env.dockerfile, target)
    lock_path = options.lock_file or root / "locks" / f"{env.id}.txt"
    lock = decide(read_lock(lock_path) if options.use_lock else None, env, index_url=index_url,
                  extra_index_urls=extra, path=lock_path, wanted=options.use_lock)
    images_dir = root / "images"
    if not env.dockerfile.is_file():
        raise BuildError(f"the Dockerfile {env.dockerfile} does not exist (set dockerfile: in matrix.yaml)")
    dockerfile = env.dockerfile.read_text(encoding="utf-8")

    def context_with(text: str) -> BuildContext:
        return assemble(dockerfile=text, helper=images_dir / "build-env.sh", generated=_generated_files(env, lock),
                        code=code_sources(root), ignore=read_dockerignore(images_dir / ".dockerignore"))

    buildargs = {
        "BASE_IMAGE": base,
        "PYTHON_VERSION": env.python,
        "TORCHRIG_UID": str(options.uid),
        "TORCHRIG_GID": str(options.gid),
        "KEEP_CA_BUNDLE": "1" if options.keep_ca_bundle else "0",
        "TORCHRIG_INDEX_URL": index_url,
        "TORCHRIG_EXTRA_INDEX_URLS": " ".join(extra),
        "TORCHRIG_PIP_SOURCE": "wheelhouse" if options.wheelhouse else "index",
        "TORCHRIG_TORCH_VERSION": env.torch,
        "TORCHRIG_ENV_ID": env.id,
        "TORCHRIG_ACCELERATOR": env.accelerator,
        # torch.compile's inductor (and Triton's launcher on GPUs) compiles C/C++ at run time: the runtime image
        # gets gcc/g++ and Python's headers wherever torch.compile can work with this Python (devel has them).
        "TORCHRIG_C_COMPILER": "1" if env.torch_compile_supported() else "0",
    }
    kept_ca = _sha256_file(options.ca_bundle) if options.keep_ca_bundle and options.ca_bundle else None
    inputs = hashlib.sha256(json.dumps({
        "v": 1, "target": target, "stage": stage, "context": context_with(dockerfile).sha256, "buildargs": buildargs,
        "base": _image_id_or_name(client, base), "kept_ca": kept_ca, "extra_labels": dict(options.extra_labels),
    }, sort_keys=True).encode()).hexdigest()
    ref = options.ref or env.tags(target)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    labels = image_labels(env, target, ref, base=base, index_url=index_url,
                          lock_sha256=lock.lock.sha256 if lock.lock else None, inputs=inputs,
                          revision=_git_revision(root), created=created, extra=options.extra_labels)
    budget = options.size_budget_mb or env.size_budget_mb.get(target)
    context = context_with(with_labels(dockerfile, stage, labels))
    return _Plan(env=env, target=target, ref=ref, base=base, index_url=index_url, extra_index_urls=tuple(extra),
                 lock=lock, context=context, buildargs=buildargs, labels=labels, budget_mb=budget, stage=stage)


_FROM_RE = re.compile(r"^\s*FROM\s+\S+(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE | re.MULTILINE)


def with_labels(dockerfile: str, stage: str | None, labels: Mapping[str, str]) -> str:
    """The Dockerfile with one LABEL instruction at the end of ``stage`` (the last stage when None).

    One instruction, not the API's ``labels=``: the legacy builder turns those into one step per label, ~20 steps
    that all re-run on every build because ``created`` changes.
    """
    body = " \\\n    ".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(labels.items()))
    instruction = f"\n# added by torchrig: the image's labels\nLABEL {body}\n"
    end = len(dockerfile)
    if stage is not None:
        froms = list(_FROM_RE.finditer(dockerfile))
        for i, m in enumerate(froms):
            if (m.group(1) or "").lower() == stage.lower() and i + 1 < len(froms):
                end = froms[i + 1].start()
    return dockerfile[:end].rstrip("\n") + "\n" + instruction + ("\n" + dockerfile[end:] if end < len(dockerfile)
                                                               else "")


def _quote(text: str) -> str:
    """A Dockerfile double-quoted word: backslash, quote and ``$`` (variable expansion) escaped, one line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + " ".join(escaped.splitlines()) + '"'


def _stage(dockerfile: Path, target: Target) -> str | None:
    """The stage a target builds: the one named like it. A Dockerfile without named stages builds its last one."""
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError:
        return target  # reported as a missing Dockerfile
    stages = [m.group(1) for m in _FROM_RE.finditer(text) if m.group(1)]
    if not stages:
        return None
    if target not in [s.lower() for s in stages]:
        raise UsageError(f"{dockerfile} has no {target!r} stage (stages: {', '.join(stages)}): name one "
                         f"`FROM ... AS {target}`, or build another target")
    return target


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- measuring

# Runs inside the image (network off): the apparent size of every file under site-packages, hard links once.
_MEASURE = """import json, os, sysconfig
paths = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
seen, total = set(), 0
for top in paths:
    for d, _, files in os.walk(top):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
print(json.dumps({"bytes": total, "paths": paths}))
"""


def measure_site_packages(client: docker.DockerClient, image: str) -> int:
    """Bytes installed in the image's site-packages, measured inside it."""
    import docker.errors

    try:
        out = client.containers.run(image, ["python", "-c", _MEASURE], remove=True, network_disabled=True,
                                    stdout=True, stderr=True)
    except docker.errors.ContainerError as e:
        raise BuildError(f"measuring site-packages in {image} failed: {e}") from None
    return int(json.loads(out.decode().strip().splitlines()[-1])["bytes"])


def size_records_dir() -> Path:
    return cache_dir() / "images"


def _record(built: BuiltImage) -> None:
    """Keep the measurement beside the cache (``~/.cache/torchrig/images/<env>-<target>.json``)."""
    d = size_records_dir()
    d.mkdir(parents=True, exist_ok=True)
    data = {**asdict(built), "ref": asdict(built.ref), "payload_bytes": built.payload_bytes, "ratio": built.ratio,
            "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    tmp = d / f".{built.env_id}-{built.target}.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(d / f"{built.env_id}-{built.target}.json")


def _recorded(env_id: str, target: str, image_id: str) -> dict[str, Any] | None:
    path = size_records_dir() / f"{env_id}-{target}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("image_id") == image_id else None


# ---------------------------------------------------------------------------------------------- building


def build_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                client: docker.DockerClient | None = None, log: Log | None = None) -> BuiltImage:
    """Build ``env``'s ``target`` image, tag it ``env.tags(target)`` (immutable + alias) and measure it.

    Raises BuildError (with the last log lines) when the build fails or the image exceeds its size budget; a
    failed build leaves no new tag behind.
    """
    options = options or BuildOptions()
    client = client or connect()
    say = log or _stderr
    return _build(_plan(env, target, options, client), options, client, say)


def ensure_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                 client: docker.DockerClient | None = None, log: Log | None = None) -> BuiltImage:
    """The image for ``env``/``target``: reused when one with the same build inputs exists, else built."""
    options = options or BuildOptions()
    client = client or connect()
    say = log or _stderr
    plan = _plan(env, target, options, client)
    found = _find(plan, client)
    if found is None:
        return _build(plan, options, client, say)
    _tag(client, found, plan.ref)
    built = _describe(client, plan, found, build_seconds=0.0, reused=True, steps_run=(), steps_total=0)
    say(f"[{env.id}/{target}] reusing {found[7:19]}: built from the same inputs ({plan.inputs[:12]})")
    say(f"[{env.id}/{target}] {built.summary()}")
    return built


def find_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
               client: docker.DockerClient | None = None) -> BuiltImage | None:
    """The existing image built from the same inputs as ``build_image`` would use, or None."""
    options = options or BuildOptions()
    client = client or connect()
    plan = _plan(env, target, options, client)
    found = _find(plan, client)
    if found is None:
        return None
    return _describe(client, plan, found, build_seconds=0.0, reused=True, steps_run=(), steps_total=0)


def _find(plan: _Plan, client: docker.DockerClient) -> str | None:
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


def _build(plan: _Plan, options: BuildOptions, client: docker.DockerClient, say: Log) -> BuiltImage:
    import docker.errors

    label = f"{plan.env.id}/{plan.target}"
    serve = serve_plan(ca_bundle=options.ca_bundle, wheelhouse=options.wheelhouse)
    say(f"[{label}] building {plan.ref.immutable} from {plan.base} (Dockerfile {plan.env.dockerfile}, "
        f"context {len(plan.context.data) / 1e3:,.0f} kB, {len(plan.context.files)} files)")
    say(f"[{label}] packages from " + (f"the wheelhouse {options.wheelhouse} (offline)" if options.wheelhouse
                                       else plan.index_url + "".join(f" + {u}" for u in plan.extra_index_urls)))
    say(f"[{label}] " + plan.lock.message)
    if options.ca_bundle is not None:
        say(f"[{label}] CA bundle {options.ca_bundle}: served to each downloading step, "
            + ("installed in the image's trust store (--keep-ca-bundle)" if options.keep_ca_bundle
               else "not kept in the image"))
    stream = BuildStream(label=label, log=say)
    start = time.monotonic()
    with _serving(serve) as url:
        buildargs = dict(plan.buildargs)
        if url:
            buildargs["FTP_PROXY"] = url  # the predefined arg: no cache key, no history (see build_server)
        try:
            items = client.api.build(
                fileobj=plan.context.fileobj(), custom_context=True, dockerfile="Dockerfile", target=plan.stage,
                buildargs=buildargs, network_mode="host", rm=True, forcerm=True,
                pull=False, nocache=options.no_cache, decode=True,
            )
            image_id = stream.consume(items)
        except BuildError as e:
            if stream.steps and stream.steps[-1].instruction.upper().startswith("FROM"):
                raise BuildError(f"{e}\nThe base image {plan.base} could not be had: pull it, or "
                                 f"{missing_base_hint(plan.env.python)}.") from None
            raise
        except docker.errors.APIError as e:
            raise BuildError(f"the engine refused to build {label}: {e.explanation or e}") from None
    seconds = time.monotonic() - start
    if not image_id.startswith("sha256:"):
        image_id = str(client.images.get(image_id).id)
    # what ran: not the cache's, not FROM, and not the global ARGs before the first FROM (they make no layer)
    first_from = next((i for i, s in enumerate(stream.steps) if s.instruction.upper().startswith("FROM")), 0)
    steps_run = tuple(s.instruction for s in stream.steps[first_from:]
                      if not s.cached and not s.instruction.upper().startswith("FROM"))
    built = _describe(client, plan, image_id, build_seconds=seconds, reused=False, steps_run=steps_run,
                      steps_total=stream.steps[-1].total if stream.steps else 0)
    if plan.budget_mb is not None and built.size_bytes > plan.budget_mb * MB:
        _discard_untagged(client, image_id)
        source = "--size-budget-mb" if options.size_budget_mb else f"size_budget_mb.{plan.target} in matrix.yaml"
        raise BuildError(
            f"{label}: the image is {built.size_bytes / MB:,.0f} MB, over its size budget of {plan.budget_mb:,} MB "
            f"({source}); it was not tagged.\n{built.summary()}\n"
            "Shrink what the environment installs, or, for a build from other sources than matrix.yaml's (e.g. "
            "PyPI's CUDA wheels), raise the budget with --size-budget-mb / TORCHRIG_SIZE_BUDGET_MB.")
    _tag(client, image_id, plan.ref)
    cached = sum(s.cached for s in stream.steps)
    say(f"[{label}] built in {seconds:.1f} s ({len(steps_run)} steps ran, {cached} from cache); tagged "
        f"{plan.ref.immutable} and {plan.ref.alias}")
    say(f"[{label}] {built.summary()}")
    _record(built)
    return built


@contextlib.contextmanager
def _serving(serve: ServePlan) -> Iterator[str | None]:
    if not serve.needed:
        yield None
        return
    with FileServer(serve) as srv:
        yield srv.url


def _describe(client: docker.DockerClient, plan: _Plan, image_id: str, *, build_seconds: float, reused: bool,
              steps_run: tuple[str, ...], steps_total: int) -> BuiltImage:
    image = client.images.get(image_id)
    size = int(image.attrs.get("Size") or 0)
    base_size = int(client.images.get(plan.base).attrs.get("Size") or 0)
    recorded = _recorded(plan.env.id, plan.target, str(image.id)) if reused else None
    site = int(recorded["site_packages_bytes"]) if recorded else measure_site_packages(client, str(image.id))
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
