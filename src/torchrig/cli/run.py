"""Running things in an environment's image: ``run-tasks``, ``run-bench``, ``dev`` and ``devcontainer``.

Each run follows the same steps: check the host can run the image (before anything is pulled or built), make
sure the image exists (building it through :mod:`torchrig.images` when absent, with the same overrides as
``torchrig build``), start the container with the options from :func:`torchrig.engine.containers.container_spec`, stream
its output, and -- for tasks and benchmarks -- list the records that landed on the host.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from torchrig.engine.client import connect
from torchrig.engine.containers import (
    DEFAULT_SHM_SIZE,
    ContainerSpec,
    Mount,
    RunResult,
    container_spec,
    keep_containers,
    run,
)
from torchrig.engine.hostcheck import HostFacts, check_host, gather_host_facts
from torchrig.engine.registry import pull_image
from torchrig.errors import RegistryError, RunError, UsageError
from torchrig.images import BuildOptions, ensure_image, find_image
from torchrig.matrix import TARGETS, Environment, Matrix, Target, load_matrix
from torchrig.matrix.devcontainer import dev_target, devcontainer_files, stale_devcontainers, write_devcontainers
from torchrig.results.records import Record, load_records

__all__ = ["ImageInfo", "image_environment", "register", "summarize_records"]

RESULTS_ENV = "TORCHRIG_RESULTS"
DATA_ENV = "TORCHRIG_DATA"
# In-container paths the tasks and benchmarks are pointed at.
RESULTS_IN = "/results"
DATA_IN = "/data"
WORKSPACE_IN = "/workspace"
INTERACTIVE_SHELL = "bash"
IMAGE_CODE = "/opt/torchrig"  # where images/Dockerfile puts src/torchrig, tasks/ and bench/ (on PYTHONPATH)
# The folder torchvision's CIFAR10 loader reads (tasks/make_data.py writes the synthetic stand-in there).
CIFAR_FOLDER = "cifar-10-batches-py"


# ----------------------------------------------------------------------------------------------- arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, what, timeout in (("run-tasks", "the correctness tasks (python -m tasks)", 3 * 3600),
                                ("run-bench", "the benchmarks (python -m bench)", 2 * 3600)):
        opts = _options_parser()
        g = opts.add_argument_group("run")
        g.add_argument("--results", metavar="DIR", default=None,
                       help=f"host directory for the records (default: ${RESULTS_ENV}/ENV or ./results/ENV)")
        g.add_argument("--data", metavar="DIR", default=None,
                       help=f"host data directory, mounted at {DATA_IN} (default: ${DATA_ENV} or ./data)")
        g.add_argument("--quick", action="store_true", help="the short budget (CI, CPU)")
        g.add_argument("--timeout", type=float, default=float(timeout), metavar="SECONDS",
                       help=f"stop the run after this long (default {timeout}; 0: no limit)")
        g.add_argument("--network", default="none",
                       help="container network (default none: runs are offline; `bridge` lets them download)")
        p = sub.add_parser(name, parents=[opts], help=f"run {what} inside an environment's image",
                           description=f"Run {what} inside ENV's image (built first when absent, with the same "
                                       "overrides as `torchrig build`); the records land on the host. Arguments "
                                       "after `--` go to the command in the container.")
        p.add_argument("env", help="environment id from matrix.yaml")
        p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[OPTIONS] [-- ARGS]",
                       help="options above, then `--` and arguments for the command in the container")
        p.set_defaults(func=_run_tasks if name == "run-tasks" else _run_bench, options_parser=opts)

    opts = _options_parser(default_target=None)
    g = opts.add_argument_group("dev")
    g.add_argument("--workspace", metavar="DIR", default=None, help=f"mounted at {WORKSPACE_IN} (default: cwd)")
    g.add_argument("--network", default=None, help="container network (default: Docker's default bridge)")
    g.add_argument("--timeout", type=float, default=0, metavar="SECONDS",
                   help="with a command: stop it after this long (default: no limit)")
    p = sub.add_parser("dev", parents=[opts], help="start a container to develop in an environment's image",
                       description=f"Start a container from ENV's image with the workspace at {WORKSPACE_IN}, your "
                                   "UID/GID, enough shared memory and the GPU flags. With `-- CMD...` run CMD in "
                                   "it and exit with its status instead of opening an interactive shell.")
    p.add_argument("env", help="environment id from matrix.yaml")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[OPTIONS] [-- CMD]",
                   help="options above, then `--` and the command to run instead of a shell")
    p.set_defaults(func=_dev, options_parser=opts)

    p = sub.add_parser("devcontainer", help="write .devcontainer/<env>/devcontainer.json from matrix.yaml")
    p.add_argument("envs", nargs="*", metavar="ENV", help="environment ids (or --all)")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    p.set_defaults(func=_devcontainer)


def _options_parser(default_target: Target | None = "runtime") -> argparse.ArgumentParser:
    """The options of a run command, in a parser of their own: they are parsed again from what follows ENV."""
    opts = argparse.ArgumentParser(add_help=False)
    g = opts.add_argument_group("container")
    g.add_argument("--target", choices=TARGETS, default=default_target,
                   help=f"which image of the environment (default: {default_target or 'devel if defined'})")
    g.add_argument("--image", metavar="REF", default=None,
                   help="run this image instead of the environment's (nothing is built)")
    g.add_argument("--pull", action="store_true",
                   help="pull the environment's image from the registry ($TORCHRIG_REGISTRY) instead of building it")
    g.add_argument("--no-build", action="store_true", help="fail instead of building a missing image")
    g.add_argument("--no-gpu", action="store_true", help="run a GPU image without its GPU (deliberately on the CPU)")
    g.add_argument("--shm-size", default=DEFAULT_SHM_SIZE,
                   help=f"/dev/shm size for DataLoader workers (default {DEFAULT_SHM_SIZE})")
    g.add_argument("--ipc-host", action="store_true", help="share the host's IPC namespace (--ipc=host)")
    b = opts.add_argument_group("build overrides (when the image is built; as for `torchrig build`)")
    b.add_argument("--base-image", default=None, help="base image (default: $TORCHRIG_BASE_IMAGE or matrix.yaml)")
    b.add_argument("--index-url", default=None, help="package index (default: $TORCHRIG_INDEX_URL or matrix.yaml)")
    b.add_argument("--extra-index-url", action="append", default=None,
                   help="extra package index, repeatable (default: $TORCHRIG_EXTRA_INDEX_URL or matrix.yaml)")
    b.add_argument("--wheelhouse", metavar="DIR", default=None,
                   help="install offline from these wheels (default: $TORCHRIG_WHEELHOUSE)")
    b.add_argument("--ca-bundle", metavar="FILE", default=None,
                   help="CA bundle for downloads during the build (default: $TORCHRIG_CA_BUNDLE, $PIP_CERT, ...)")
    b.add_argument("--size-budget-mb", type=int, metavar="MB", default=None,
                   help="fail a build above this size instead of matrix.yaml's ($TORCHRIG_SIZE_BUDGET_MB)")
    return opts


def _parse_rest(args: argparse.Namespace) -> list[str]:
    """Parse the options that followed ENV; return what came after ``--`` (for the command in the container).

    argparse cannot mix options and a ``--``-separated command after a positional (it drops a second ``--``
    and refuses options before the first), so ENV is followed by a REMAINDER that is split here.
    """
    rest = list(args.rest)
    own, passthrough = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    opts: argparse.ArgumentParser = args.options_parser
    _, unknown = opts.parse_known_args(own, namespace=args)
    if unknown:
        raise UsageError(f"unknown option(s) {' '.join(unknown)} for `{args.command} {args.env}`; arguments for "
                         f"the command in the container go after `--`: torchrig {args.command} {args.env} "
                         f"[OPTIONS] -- {' '.join(unknown)}")
    return passthrough


# ------------------------------------------------------------------------------------------- images adapter


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """The image a run uses, and what the records should say about it."""

    ref: str
    id: str
    digest: str | None


def _build_options(args: argparse.Namespace, matrix: Matrix) -> BuildOptions:
    return BuildOptions.from_environ(
        base_image=args.base_image, index_url=args.index_url, extra_index_urls=args.extra_index_url,
        wheelhouse=args.wheelhouse, ca_bundle=args.ca_bundle, size_budget_mb=args.size_budget_mb,
        root=matrix.root if (matrix.root / "images").is_dir() else None,
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _ensure_image(client: docker.DockerClient, matrix: Matrix, env: Environment, target: Target,
                  args: argparse.Namespace, *, prefer_existing: bool = False) -> ImageInfo:
    """The image to run: ``--image``; ``--pull``ed; for ``dev`` (``prefer_existing``) the local tag, else pulled;
    otherwise the one built from the checkout's current inputs (reused when it exists, else built now)."""
    if args.image:
        return _inspect(client, args.image, env)
    ref = env.tags(target)
    if args.pull:
        pull_image(ref, client=client, log=_progress)  # RegistryError says what went wrong and what to do
        return _inspect(client, ref.immutable, env)
    if prefer_existing:
        if _exists(client, ref.immutable):
            _progress(f"torchrig: using {ref.immutable} from this engine (refresh it with `torchrig build "
                      f"{env.id} --target {target}` or --pull)")
            return _inspect(client, ref.immutable, env)
        try:
            pull_image(ref, client=client, log=_progress)
            return _inspect(client, ref.immutable, env)
        except RegistryError as e:
            _progress(f"torchrig: could not pull {ref.immutable} ({str(e).splitlines()[0]}); building it")
    options = _build_options(args, matrix)
    if args.no_build:
        found = find_image(env, target, options, client=client)
        if found is None:
            raise RunError(f"no {target} image of {env.id} built from the current inputs is on this engine and "
                           f"--no-build was given: run `torchrig build {env.id} --target {target}` first, or pass "
                           "--pull or --image REF")
        built = found
    else:
        built = ensure_image(env, target, options, client=client, log=_progress)
    return _inspect(client, built.image_id, env, ref_name=built.ref.immutable)


def _inspect(client: docker.DockerClient, ref: str, env: Environment, *, ref_name: str | None = None) -> ImageInfo:
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


def image_environment(env: Environment, image: ImageInfo) -> dict[str, str]:
    """Variables the records read to say which image they came from (``records.collect_container``)."""
    out = {"TORCHRIG_ENV_ID": env.id, "TORCHRIG_IMAGE": image.ref, "TORCHRIG_IMAGE_ID": image.id,
           "TORCHRIG_HOSTNAME": socket.gethostname()}
    if image.digest:
        out["TORCHRIG_IMAGE_DIGEST"] = image.digest
    return out


# ---------------------------------------------------------------------------------------------- commands


def _prepare(args: argparse.Namespace) -> tuple[Matrix, Environment, docker.DockerClient, HostFacts, bool]:
    """Load the environment, connect, and check the host -- before anything is pulled or built."""
    matrix = load_matrix(args.matrix)
    env = matrix.get(args.env)
    client = connect()
    facts = gather_host_facts(client.info())
    verdict = check_host(env, facts, no_gpu=args.no_gpu, others=matrix.environments)
    for w in verdict.warnings:
        print(f"torchrig: warning: {w}", file=sys.stderr, flush=True)
    return matrix, env, client, facts, verdict.use_gpu


def _host_dir(path: Path) -> Path:
    path = path.expanduser().resolve()
    # Created here, as the user: a bind-mount source that Docker has to create belongs to root.
    path.mkdir(parents=True, exist_ok=True)
    return path


def _results_dir(args: argparse.Namespace, matrix: Matrix, env: Environment) -> Path:
    if args.results:
        return _host_dir(Path(args.results))
    base = os.environ.get(RESULTS_ENV)
    return _host_dir(Path(base) / env.id if base else matrix.root / "results" / env.id)


def _spec(args: argparse.Namespace, env: Environment, image: ImageInfo, facts: HostFacts, use_gpu: bool, *,
          purpose: str, command: list[str], mounts: list[Mount], environment: dict[str, str] | None = None,
          working_dir: str | None = None, interactive: bool = False) -> ContainerSpec:
    """Every container of this module, through the one options function (host user, GPU flags, shm, IPC)."""
    return container_spec(
        env_id=env.id, accelerator=env.accelerator, image=image.ref, purpose=purpose, command=command,
        uid=facts.uid, gid=facts.gid, use_gpu=use_gpu,
        render_group=str(facts.render_gid) if facts.render_gid is not None else None,
        mounts=mounts, environment={**image_environment(env, image), **(environment or {})},
        working_dir=working_dir, shm_size=args.shm_size, ipc_host=args.ipc_host, network_mode=args.network or None,
        interactive=interactive,
    )


def _run_suite(args: argparse.Namespace, module: str) -> int:
    passthrough = _parse_rest(args)
    matrix, env, client, facts, use_gpu = _prepare(args)
    results = _results_dir(args, matrix, env)
    data = _host_dir(Path(args.data or os.environ.get(DATA_ENV) or matrix.root / "data"))
    image = _ensure_image(client, matrix, env, args.target, args)
    mounts = [Mount(source=str(results), target=RESULTS_IN), Mount(source=str(data), target=DATA_IN)]
    paths = {"TORCHRIG_RESULTS": RESULTS_IN, "TORCHRIG_DATA": DATA_IN}
    command = ["python", "-m", module, "--results", RESULTS_IN, *(["--quick"] if args.quick else [])]
    if module == "tasks" and not (data / CIFAR_FOLDER).is_dir():
        print(f"torchrig: no CIFAR-10 in {data}: the tasks write the synthetic stand-in there first (put the real "
              f"{CIFAR_FOLDER}/ there to train on CIFAR-10)", file=sys.stderr, flush=True)
        command.append("--synthetic-cifar")
    command += passthrough
    spec = _spec(args, env, image, facts, use_gpu, purpose=module, command=command, mounts=mounts,
                 environment=paths)
    before = set(results.rglob("*.json"))
    result = run(client, spec, timeout=args.timeout or None, prefix=env.id, check=False)
    records = summarize_records(results, before, image)
    if not result.ok:
        raise RunError(_failure(result, records, results))
    return 0


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


def _run_tasks(args: argparse.Namespace) -> int:
    return _run_suite(args, "tasks")


def _run_bench(args: argparse.Namespace) -> int:
    return _run_suite(args, "bench")


def _dev(args: argparse.Namespace) -> int:
    command = _parse_rest(args)
    interactive = not command
    if interactive:
        command = [INTERACTIVE_SHELL]  # the image's CMD is `python`; developing starts from a shell
    if interactive and not sys.stdin.isatty():
        raise UsageError("`dev` without a command opens an interactive shell and needs a terminal; "
                         f"to run a command instead: torchrig dev {args.env} -- CMD ...")
    docker_cli = shutil.which("docker")
    if interactive and docker_cli is None:
        raise UsageError("the interactive `dev` runs the `docker` command line, which is not installed: install it, "
                         f"or run a command without a terminal: torchrig dev {args.env} -- CMD ...")
    workspace = Path(args.workspace or Path.cwd()).expanduser().resolve()
    if not workspace.is_dir():
        raise UsageError(f"--workspace {workspace} is not a directory")
    matrix, env, client, facts, use_gpu = _prepare(args)
    image = _ensure_image(client, matrix, env, args.target or dev_target(env), args, prefer_existing=True)
    environment = {}
    if (workspace / "src" / "torchrig").is_dir():
        # A torchrig checkout: its package, tasks and benchmarks shadow the copies baked into the image.
        environment["PYTHONPATH"] = f"{WORKSPACE_IN}/src:{WORKSPACE_IN}:{IMAGE_CODE}"
    spec = _spec(args, env, image, facts, use_gpu, purpose="dev", command=command,
                 mounts=[Mount(source=str(workspace), target=WORKSPACE_IN)], environment=environment,
                 working_dir=WORKSPACE_IN, interactive=interactive)
    if not interactive:
        # Output as is (no prefix, status lines on stderr), so `torchrig dev ENV -- CMD` pipes like CMD itself.
        result = run(client, spec, timeout=args.timeout or None, prefix="", check=False, status=sys.stderr)
        if result.timed_out or result.exit_code is None:
            raise RunError(result.describe())
        return result.exit_code
    assert docker_cli is not None
    argv = [docker_cli, "run", *spec.cli_args(remove=not keep_containers())]
    print(f"torchrig: {shlex.join(argv)}", file=sys.stderr, flush=True)
    # The docker CLI owns the terminal: Ctrl-C goes to the shell in the container, and --rm removes it on exit.
    return subprocess.call(argv)


def _devcontainer(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix)
    if args.all == bool(args.envs):
        raise UsageError("name the environments, or pass --all: torchrig devcontainer cpu cuda118 | --all")
    ids = None if args.all else tuple(args.envs)
    if args.check:
        problems = stale_devcontainers(matrix) if args.all else [
            f"{f.path}: out of date" for f in devcontainer_files(matrix, ids)
            if not f.path.is_file() or f.path.read_text(encoding="utf-8") != f.text]
        for problem in problems:
            print(problem)
        if problems:
            print("run `torchrig devcontainer --all` to regenerate them", file=sys.stderr)
        return 1 if problems else 0
    changed = write_devcontainers(matrix, ids)
    for path in changed:
        print(f"wrote {path.relative_to(matrix.root)}")
    if not changed:
        print("the devcontainer files are up to date")
    return 0
