"""The run step: resolve an environment's image, run a suite (or a dev container) in it, collect the records.

What ``run-tasks``, ``run-bench`` and ``dev`` do, without argparse: the CLI (:mod:`torchrig.cli.run`) turns flags
into the frozen :class:`RunOptions` / :class:`SuiteRequest` below and calls :func:`run_suite` or :func:`dev`.

Each run follows the same steps: check the host can run the image (before anything is pulled or built), make sure
the image exists (building it through :mod:`torchrig.images` when absent, with the same overrides as
``torchrig build``), start the container through the one lifecycle (:mod:`torchrig.engine`) as the one description
:func:`torchrig.container.suite_container` makes, stream its output, and -- for tasks and benchmarks -- list the
records that landed on the host.

The engine-facing calls go through :class:`Engine`, a bundle of functions with the real ones as defaults, so a
test swaps the engine in one place instead of patching module globals.
"""

from __future__ import annotations

import collections
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from torchrig.container import (
    SHM_SIZE,
    GpuFlags,
    Mount,
    SuiteContainer,
    SuiteImage,
    SuiteKind,
    compile_max_python,
    container,
    gpu_flags,
    oci_args,
    suite_container,
    suite_environment,
)
from torchrig.engine import Output, RunResult
from torchrig.engine import run as run_container
from torchrig.engine.client import connect
from torchrig.engine.hostcheck import HostCheck, HostFacts, check_host, gather_host_facts
from torchrig.engine.registry import pull_image
from torchrig.errors import RegistryError, RunError, UsageError
from torchrig.images import BuildOptions, ensure_image, find_image
from torchrig.matrix import Environment, Matrix, Target
from torchrig.results import contract
from torchrig.results.records import Record, load_records

__all__ = [
    "INTERACTIVE_SHELL",
    "Engine",
    "ImageInfo",
    "RunOptions",
    "SuiteRequest",
    "dev",
    "host_dir",
    "image_environment",
    "resolve_image",
    "run_suite",
    "summarize_records",
]

INTERACTIVE_SHELL = "bash"  # the image's CMD is `python`; developing starts from a shell


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Engine:
    """The engine-facing calls a run makes (the real ones by default; tests pass fakes)."""

    connect: Callable[[], Any] = connect
    host_facts: Callable[[dict[str, Any]], HostFacts] = gather_host_facts
    ensure_image: Callable[..., Any] = ensure_image
    find_image: Callable[..., Any] = find_image
    pull_image: Callable[..., Any] = pull_image
    run: Callable[..., RunResult] = run_container
    call: Callable[[list[str]], int] = subprocess.call  # the interactive `docker run` owns the terminal
    which: Callable[[str], str | None] = shutil.which


DEFAULT_ENGINE = Engine()


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """The image a run uses, and what the records should say about it."""

    ref: str
    id: str
    digest: str | None


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Which image and which container options (the flags shared by run-tasks, run-bench and dev)."""

    target: Target | None = "runtime"  # None: dev's choice (devel when the environment defines it)
    image: str | None = None  # run this image instead of the environment's (nothing is built)
    pull: bool = False
    no_build: bool = False
    no_gpu: bool = False
    shm_size: str = SHM_SIZE
    ipc_host: bool = False
    network: str | None = None
    user_env: Mapping[str, str] = field(default_factory=dict)  # --env NAME=VALUE (validated by parse_user_env)
    build: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class SuiteRequest:
    suite: SuiteKind
    results: Path  # host directory for the records
    data: Path  # host data directory
    quick: bool = False
    timeout_s: float | None = None
    args: tuple[str, ...] = ()  # for the command in the container


@dataclass(frozen=True, kw_only=True)
class _Prepared:
    client: Any
    facts: HostFacts
    gpu: GpuFlags  # the device request the host check decided on


def _gpu(env: Environment, facts: HostFacts, verdict: HostCheck) -> GpuFlags:
    render = str(facts.render_gid) if facts.render_gid is not None else None
    return gpu_flags(env.accelerator, use_gpu=verdict.use_gpu, render_group=render, access=verdict.gpu_access)


def host_dir(path: Path) -> Path:
    """An absolute host directory, created here as the user (a bind-mount source Docker creates belongs to root)."""
    path = path.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {path} ({e.strerror}): pick a writable directory") from None
    return path


def _prepare(engine: Engine, matrix: Matrix, env: Environment, options: RunOptions) -> _Prepared:
    """Connect and check the host -- before anything is pulled or built."""
    client = engine.connect()
    facts = engine.host_facts(client.info())
    verdict = check_host(env, facts, no_gpu=options.no_gpu, others=matrix.environments)
    for w in verdict.warnings:
        _progress(f"torchrig: warning: {w}")
    return _Prepared(client=client, facts=facts, gpu=_gpu(env, facts, verdict))


def _exists(client: Any, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _inspect(client: Any, ref: str, env: Environment, *, ref_name: str | None = None) -> ImageInfo:
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise RunError(f"image {ref} is not on this Docker engine: build it (`torchrig build {env.id}`) or pull "
                       "it") from None
    name = ref_name or ref
    digests = [str(d) for d in image.attrs.get("RepoDigests") or []]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    digest = next((d for d in digests if d.split("@", 1)[0] == repo), digests[0] if digests else None)
    return ImageInfo(ref=name, id=str(image.id), digest=digest)


def resolve_image(engine: Engine, client: Any, env: Environment, target: Target, options: RunOptions, *,
                  prefer_existing: bool = False) -> ImageInfo:
    """The image to run: ``--image``; ``--pull``ed; for ``dev`` (``prefer_existing``) the local tag, else pulled;
    otherwise the one built from the checkout's current inputs (reused when it exists, else built now)."""
    if options.image:
        return _inspect(client, options.image, env)
    ref = env.tags(target)
    if options.pull:
        engine.pull_image(ref, client=client, log=_progress)  # RegistryError says what went wrong and what to do
        return _inspect(client, ref.immutable, env)
    if prefer_existing:
        if _exists(client, ref.immutable):
            _progress(f"torchrig: using {ref.immutable} from this engine (refresh it with `torchrig build "
                      f"{env.id} --target {target}` or --pull)")
            return _inspect(client, ref.immutable, env)
        try:
            engine.pull_image(ref, client=client, log=_progress)
            return _inspect(client, ref.immutable, env)
        except RegistryError as e:
            _progress(f"torchrig: could not pull {ref.immutable} ({str(e).splitlines()[0]}); building it")
    if options.no_build:
        built = engine.find_image(env, target, options.build, client=client)
        if built is None:
            raise RunError(f"no {target} image of {env.id} built from the current inputs is on this engine and "
                           f"--no-build was given: run `torchrig build {env.id} --target {target}` first, or pass "
                           "--pull or --image REF")
    else:
        built = engine.ensure_image(env, target, options.build, client=client, log=_progress)
    return _inspect(client, built.image_id, env, ref_name=built.ref.immutable)


def _suite_image(image: ImageInfo) -> SuiteImage:
    return SuiteImage(ref=image.ref, id=image.id, digest=image.digest)


def image_environment(env: Environment, image: ImageInfo, user_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a ``dev`` container gets of the suites' contract variables: which image the records came from, the
    host's name, the compat facts the image cannot read itself -- not the records and data folders, which a dev
    container does not mount (a suite run there picks its own)."""
    out = suite_environment(env_id=env.id, image=_suite_image(image), hostname=socket.gethostname(),
                            compile_max_python=compile_max_python(env.torch), user_env=user_env)
    return {k: v for k, v in out.items() if k not in (contract.RESULTS_ENV, contract.DATA_ENV)}


def run_suite(matrix: Matrix, env: Environment, options: RunOptions, request: SuiteRequest, *,
              engine: Engine | None = None) -> list[Record]:
    """Run the tasks or the benchmarks in ``env``'s image; return the records it wrote (RunError on failure)."""
    engine = engine or DEFAULT_ENGINE
    prepared = _prepare(engine, matrix, env, options)
    results, data = host_dir(request.results), host_dir(request.data)
    image = resolve_image(engine, prepared.client, env, options.target or "runtime", options)
    synthetic = request.suite == "tasks" and not (data / contract.CIFAR_FOLDER).is_dir()
    if synthetic:
        _progress(f"torchrig: no CIFAR-10 in {data}: the tasks write the synthetic stand-in there first (put the "
                  f"real {contract.CIFAR_FOLDER}/ there to train on CIFAR-10)")
    facts = prepared.facts
    spec = suite_container(
        env_id=env.id, accelerator=env.accelerator, image=_suite_image(image), kind=request.suite,
        results=str(results), data=str(data), hostname=socket.gethostname(),
        compile_max_python=compile_max_python(env.torch), gpu=prepared.gpu, uid=facts.uid, gid=facts.gid,
        user_env=options.user_env, quick=request.quick, synthetic_cifar=synthetic, args=request.args,
        shm_size=options.shm_size, ipc_host=options.ipc_host, network_mode=options.network or None)
    before = set(results.rglob("*.json"))
    result = engine.run(prepared.client, spec, keep=options.build.keep_containers, timeout=request.timeout_s,
                        output=Output.labelled(env.id))
    records = summarize_records(results, before, image)
    if not result.ok:
        raise RunError(_failure(result, records, results))
    return records


def _failure(result: RunResult, records: list[Record], results: Path) -> str:
    failed = [r.name for r in records if r.verdict != "pass"]
    if result.exit_code == 1 and not result.timed_out and failed:  # a gate failed: the records say which, and why
        return (f"{len(failed)} of {len(records)} record(s) did not pass ({', '.join(failed)}): see the output "
                f"above and the records in {results}")
    msg = result.describe()
    if result.timed_out or (result.exit_code or 0) > 128:
        msg += f"\nthe {len(records)} record(s) written before it was stopped are kept in {results}"
    return msg


def summarize_records(results: Path, before: set[Path], image: ImageInfo) -> list[Record]:
    """Print the records this run wrote (count, verdicts, wall times) and return them."""
    new = {p for p in results.rglob("*.json") if p not in before and not p.name.startswith(".")}
    loaded, problems = load_records([results]) if new else ([], [])
    records = [r for r in loaded if any(p.stem.endswith(r.run_id) for p in new)]
    verdicts = collections.Counter(r.verdict for r in records)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
    print(f"torchrig: {len(records)} new record(s) in {results} ({counts})", flush=True)
    width = max((len(r.name) for r in records), default=0)
    for r in sorted(records, key=lambda r: (r.kind, r.name)):
        mark = "" if r.container and r.container.image_id == image.id else "  (the record does not name the image!)"
        print(f"  {r.verdict:<5} {r.kind:<5} {r.name:<{width}} {r.wall_time_s:8.1f} s{mark}", flush=True)
    for problem in problems:
        if problem.path in new:
            print(f"  invalid record {problem.path}: {problem.reason}", flush=True)
    return records


def _dev_container(env: Environment, image: ImageInfo, prepared: _Prepared, options: RunOptions, *,
                   command: Sequence[str], workspace: Path, environment: Mapping[str, str],
                   interactive: bool) -> SuiteContainer:
    """The ``dev`` container: the suite's contract variables and device request, the workspace, the host user."""
    facts = prepared.facts
    return container(
        env_id=env.id, accelerator=env.accelerator, image=image.ref, purpose="dev", command=command,
        uid=facts.uid, gid=facts.gid, gpu=prepared.gpu,
        mounts=[Mount(source=str(workspace), target=contract.WORKSPACE_IN)],
        environment={**image_environment(env, image, options.user_env), **environment},
        working_dir=contract.WORKSPACE_IN, shm_size=options.shm_size, ipc_host=options.ipc_host,
        network_mode=options.network or None, interactive=interactive)


def dev(matrix: Matrix, env: Environment, options: RunOptions, *, target: Target, workspace: Path,
        command: Sequence[str], timeout_s: float | None = None,
        interactive: bool | None = None, engine: Engine | None = None) -> int:
    """A container to develop in: the workspace mounted, the user's UID/GID, the GPU flags.

    With a command, run it and return its exit code; without one, open an interactive shell through the docker
    command line (it owns the terminal: Ctrl-C goes to the shell, ``--rm`` removes the container on exit).
    """
    engine = engine or DEFAULT_ENGINE
    interactive = not command if interactive is None else interactive
    argv = list(command) or [INTERACTIVE_SHELL]
    if interactive and not sys.stdin.isatty():
        raise UsageError("`dev` without a command opens an interactive shell and needs a terminal; "
                         f"to run a command instead: torchrig dev {env.id} -- CMD ...")
    docker_cli = engine.which("docker")
    if interactive and docker_cli is None:
        raise UsageError("the interactive `dev` runs the `docker` command line, which is not installed: install it, "
                         f"or run a command without a terminal: torchrig dev {env.id} -- CMD ...")
    workspace = workspace.expanduser().resolve()
    if not workspace.is_dir():
        raise UsageError(f"--workspace {workspace} is not a directory")
    prepared = _prepare(engine, matrix, env, options)
    image = resolve_image(engine, prepared.client, env, target, options, prefer_existing=True)
    environment = {}
    if (workspace / "src" / "torchrig").is_dir():
        # A torchrig checkout: its package, tasks and benchmarks shadow the copies baked into the image.
        ws = contract.WORKSPACE_IN
        environment["PYTHONPATH"] = f"{ws}/src:{ws}:{contract.IMAGE_CODE}"
    spec = _dev_container(env, image, prepared, options, command=argv, workspace=workspace,
                          environment=environment, interactive=interactive)
    if not interactive:
        # Output as is (no prefix, status lines on stderr), so `torchrig dev ENV -- CMD` pipes like CMD itself.
        result = engine.run(prepared.client, spec, keep=options.build.keep_containers, timeout=timeout_s,
                            output=Output.as_is())
        if result.timed_out or result.exit_code is None:
            raise RunError(result.describe())
        return result.exit_code
    if docker_cli is None:  # checked above; kept for the type checker
        raise UsageError("the `docker` command line is not installed")
    docker_argv = [docker_cli, "run", *oci_args(spec, remove=not options.build.keep_containers)]
    _progress(f"torchrig: {shlex.join(docker_argv)}")
    return engine.call(docker_argv)
