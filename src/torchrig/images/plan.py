"""Planning a build without building: the sources, the lock, the context, the build args, the labels, the inputs.

:func:`plan_build` decides everything a build needs before the engine does any work -- and before anything is
served or pulled -- so every decision is unit-tested without a daemon. :func:`sources` is the part a lock shares
with a build: which base image, index and extra indexes the flags and matrix.yaml add up to.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from torchrig import __version__
from torchrig.errors import BuildError, UsageError
from torchrig.images.context import BuildContext, assemble, code_sources, read_dockerignore
from torchrig.images.lock import LockDecision, decide, lock_path, read_lock
from torchrig.images.options import LABEL_INPUTS, SOURCE_URL, BuildOptions, default_root
from torchrig.images.pin import BASES_FILE, PinnedBase, pin, read_pins
from torchrig.images.platforms import DEFAULT_PLATFORM, check_lock_platform, check_row_platform, platform_ref
from torchrig.matrix import Environment, ImageRef, Target
from torchrig.results.io import file_sha256

if TYPE_CHECKING:
    import docker

__all__ = [
    "Plan",
    "Sources",
    "dockerfile_stage",
    "extras_as_constraints",
    "image_labels",
    "plan_build",
    "sources",
    "with_labels",
]


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Where an environment's packages come from, flags over matrix.yaml: the same for its build and its lock."""

    base: str
    index_url: str
    extra_index_urls: tuple[str, ...]

    def describe(self) -> str:
        return self.index_url + "".join(f" + {u}" for u in self.extra_index_urls)


def sources(env: Environment, target: Target, options: BuildOptions) -> Sources:
    """The base image, index and extra indexes for ``env``/``target``; UsageError for what cannot work."""
    if target not in env.targets and options.base_image is None:
        raise UsageError(f"environment {env.id} has no {target!r} target (targets: {', '.join(env.targets)}); "
                         f"add one under targets: in matrix.yaml or pass --base-image")
    index_url = options.index_url or env.index
    extra = options.extra_index_urls if options.extra_index_urls is not None else env.extra_index
    _check_index(index_url, "the index URL")
    for u in extra:
        _check_index(u, "the extra index URL")
    return Sources(base=options.base_image or env.targets[target], index_url=index_url,
                   extra_index_urls=tuple(extra))


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One build, decided: what :func:`torchrig.images.build.build_image` hands the engine."""

    env: Environment
    target: Target
    ref: ImageRef
    base: str  # what FROM uses: tag@digest when pinned (locks/bases.yaml)
    pinned: PinnedBase
    index_url: str
    extra_index_urls: tuple[str, ...]
    lock: LockDecision
    context: BuildContext
    buildargs: Mapping[str, str]
    labels: Mapping[str, str]
    budget_mb: int | None
    stage: str | None  # the Dockerfile stage to build: the target's, or None (the last) if it names no stages
    platform: str = DEFAULT_PLATFORM  # the OCI platform the engine builds for

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


def _generated_files(env: Environment, lock: LockDecision, installer: str) -> dict[str, str]:
    """The requirement files the Dockerfile installs from (``torchrig-build/`` in the context).

    ``uv.txt`` is the hash-pinned uv a locked build installs with (``locks/uv.txt``); empty: pip installs.
    """
    pins = f"torch=={env.torch}\ntorchvision=={env.torchvision}\n"
    if lock.lock is not None:
        return {"requirements-torch.txt": lock.lock.section_text("torch"), "constraints-torch.txt": "",
                "requirements-extras.txt": lock.lock.section_text("extras"), "constraints.txt": pins,
                "uv.txt": installer}
    # Unlocked, the torch layer resolves under the extras' version pins too (e.g. numpy<2): else it would install
    # the newest numpy and the extras layer a second, older copy on top.
    return {"requirements-torch.txt": pins, "constraints-torch.txt": extras_as_constraints(env.image_extras),
            "requirements-extras.txt": "".join(f"{r}\n" for r in env.image_extras), "constraints.txt": pins,
            "uv.txt": ""}


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


def created_time(root: Path, source_date_epoch: int | None) -> str:
    """The image's ``created`` label: SOURCE_DATE_EPOCH, else the last commit's time, else a fixed epoch (1980-01-01,
    the zip epoch) outside a git checkout -- never the clock, so rebuilding the same inputs gives the same labels."""
    epoch = source_date_epoch
    if epoch is None:
        try:
            out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%ct"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            epoch = int(out) if out.isdigit() else None
        except (OSError, subprocess.SubprocessError):
            epoch = None
    epoch = FALLBACK_EPOCH if epoch is None else epoch
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


FALLBACK_EPOCH = 315532800  # 1980-01-01T00:00:00Z


def image_labels(env: Environment, target: Target, ref: ImageRef, *, base: str | PinnedBase, index_url: str,
                 lock_sha256: str | None, inputs: str, revision: str, created: str,
                 extra: Mapping[str, str] | None = None, lock_file: str | None = None) -> dict[str, str]:
    """OCI labels plus torchrig's: what `docker inspect` tells a user about where an image came from."""
    pinned = base if isinstance(base, PinnedBase) else pin(base, {})
    labels = {
        "org.opencontainers.image.title": f"torchrig {env.id} ({target})",
        "org.opencontainers.image.description": env.description or f"torch {env.torch} ({env.flavour})",
        "org.opencontainers.image.version": ref.immutable.rsplit(":", 1)[1],
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.base.name": pinned.name,
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
        "io.torchrig.lock.file": lock_file or "none",
        "io.torchrig.version": __version__,
        LABEL_INPUTS: inputs,
    }
    if pinned.digest is not None:
        labels["org.opencontainers.image.base.digest"] = pinned.digest
    labels.update(extra or {})
    return labels


def _image_id_or_name(client: docker.DockerClient, name: str) -> str:
    import docker.errors

    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return name  # pulled by the build; the next build then keys on its id


def plan_build(env: Environment, target: Target, options: BuildOptions, client: docker.DockerClient) -> Plan:
    """Everything ``env``/``target``'s build needs, decided; ``client`` only looks up the base image's id."""
    src = sources(env, target, options)
    check_row_platform(env, options.platform)
    root = options.root or default_root()
    pinned = pin(src.base, read_pins(options.bases_file or root / BASES_FILE))
    base, index_url, extra = pinned.ref, src.index_url, src.extra_index_urls
    if options.keep_ca_bundle and options.ca_bundle is None:
        raise UsageError("--keep-ca-bundle needs a CA bundle: pass --ca-bundle FILE (or set TORCHRIG_CA_BUNDLE)")
    stage = dockerfile_stage(env.dockerfile, target)
    path = options.lock_file or lock_path(root, env, index_url=index_url, extra_index_urls=extra,
                                          platform=options.platform)
    found = read_lock(path) if options.use_lock else None
    if found is not None:  # a lock for another machine is refused, stale or not
        check_lock_platform(lock_name=found.name, lock_platform=found.platform, platform=options.platform,
                            env_id=env.id)
    lock = decide(found, env, index_url=index_url,
                  extra_index_urls=extra, path=path, wanted=options.use_lock, required=options.require_lock)
    installer = root / "locks" / "uv.txt"
    installer_text = installer.read_text(encoding="utf-8") if lock.lock is not None and installer.is_file() else ""
    images_dir = root / "images"
    if not env.dockerfile.is_file():
        raise BuildError(f"the Dockerfile {env.dockerfile} does not exist (set dockerfile: in matrix.yaml)")
    dockerfile = env.dockerfile.read_text(encoding="utf-8")

    def context_with(text: str) -> BuildContext:
        return assemble(dockerfile=text, helper=images_dir / "build-env.sh",
                        generated=_generated_files(env, lock, installer_text),
                        code=code_sources(root), ignore=read_dockerignore(images_dir / ".dockerignore"))

    kept_ca = file_sha256(options.ca_bundle) if options.keep_ca_bundle and options.ca_bundle else None
    buildargs = {
        "BASE_IMAGE": base,
        "PYTHON_VERSION": env.python,
        "TORCHRIG_UID": str(options.uid),
        "TORCHRIG_GID": str(options.gid),
        "KEEP_CA_BUNDLE": "1" if options.keep_ca_bundle else "0",
        # in the layer cache key of the step that installs a kept CA (its bytes come through the file server)
        "TORCHRIG_KEPT_CA_SHA256": kept_ca or "",
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
    inputs = hashlib.sha256(json.dumps({
        "v": 1, "target": target, "stage": stage, "context": context_with(dockerfile).sha256, "buildargs": buildargs,
        "base": _image_id_or_name(client, base), "kept_ca": kept_ca, "extra_labels": dict(options.extra_labels),
        # only when not amd64: the amd64 images built before platforms existed keep their inputs (and are reused)
        **({"platform": options.platform} if options.platform != DEFAULT_PLATFORM else {}),
    }, sort_keys=True).encode()).hexdigest()
    ref = options.ref or platform_ref(env.tags(target), options.platform)
    labels = image_labels(env, target, ref, base=pinned, index_url=index_url,
                          lock_sha256=lock.lock.sha256 if lock.lock else None, inputs=inputs,
                          revision=_git_revision(root), created=created_time(root, options.source_date_epoch),
                          extra={"io.torchrig.platform": options.platform, **options.extra_labels},
                          lock_file=lock.lock.name if lock.lock else None)
    budget = options.size_budget_mb or env.size_budget_mb.get(target)
    context = context_with(with_labels(dockerfile, stage, labels))
    return Plan(env=env, target=target, ref=ref, base=base, pinned=pinned, index_url=index_url, extra_index_urls=extra,
                lock=lock, context=context, buildargs=buildargs, labels=labels, budget_mb=budget, stage=stage,
                platform=options.platform)


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


def dockerfile_stage(dockerfile: Path, target: Target) -> str | None:
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
