"""``run-tasks``, ``run-bench``, ``dev`` and ``devcontainer``: argparse only.

The flags become the frozen :class:`torchrig.run.RunOptions` / :class:`~torchrig.run.SuiteRequest`; the work (host
check, image resolution, the container, the records) is :mod:`torchrig.run`'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchrig import run
from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.container import SHM_SIZE, parse_user_env
from torchrig.errors import UsageError
from torchrig.images import BuildOptions
from torchrig.matrix import TARGETS, Environment, Matrix, Target, load_matrix
from torchrig.matrix.devcontainer import dev_target, devcontainer_files, stale_devcontainers, write_devcontainers
from torchrig.results.contract import DATA_IN, WORKSPACE_IN
from torchrig.settings import Settings

__all__ = ["register"]


# ----------------------------------------------------------------------------------------------- arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, what, timeout in (("run-tasks", "the correctness tasks (python -m tasks)", 3 * 3600),
                                ("run-bench", "the benchmarks (python -m bench)", 2 * 3600)):
        opts = _options_parser()
        g = opts.add_argument_group("run")
        g.add_argument("--results", metavar="DIR", default=None, type=types.directory,
                       help="host directory for the records (default: $TORCHRIG_RESULTS/ENV, else results/ENV "
                            "beside matrix.yaml)")
        g.add_argument("--data", metavar="DIR", default=None,
                       help=f"host data directory, mounted at {DATA_IN} (default: $TORCHRIG_DATA, else data/ beside "
                            "matrix.yaml)")
        g.add_argument("--quick", action="store_true", help="the short budget (CI, CPU)")
        g.add_argument("--timeout", type=types.non_negative_seconds, default=float(timeout), metavar="SECONDS",
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
        p.set_defaults(func=_run_suite, suite="tasks" if name == "run-tasks" else "bench", options_parser=opts)

    opts = _options_parser(default_target=None)
    g = opts.add_argument_group("dev")
    g.add_argument("--workspace", metavar="DIR", default=None, help=f"mounted at {WORKSPACE_IN} (default: cwd)")
    g.add_argument("--network", default=None, help="container network (default: Docker's default bridge)")
    g.add_argument("--timeout", type=types.non_negative_seconds, default=0, metavar="SECONDS",
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
    g.add_argument("--shm-size", default=SHM_SIZE, type=types.docker_size,
                   help=f"/dev/shm size for DataLoader workers (default {SHM_SIZE})")
    g.add_argument("--ipc-host", action="store_true", help="share the host's IPC namespace (--ipc=host)")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", dest="user_env",
                   help="set a variable in the container, repeatable (e.g. NCCL_DEBUG=INFO); recorded in the "
                        "benchmark fingerprint, values of *TOKEN*/*SECRET*/*PASSWORD*/*KEY* names as <set>")
    b = opts.add_argument_group("build overrides (when the image is built; as for `torchrig build`)")
    b.add_argument("--base-image", default=None, type=types.image_ref,
                   help="base image (default: $TORCHRIG_BASE_IMAGE, torchrig.toml or matrix.yaml)")
    b.add_argument("--index-url", default=None, type=types.url,
                   help="package index (default: $TORCHRIG_INDEX_URL, torchrig.toml or matrix.yaml)")
    b.add_argument("--extra-index-url", action="append", default=None, type=types.url,
                   help="extra package index, repeatable (default: $TORCHRIG_EXTRA_INDEX_URL or matrix.yaml)")
    b.add_argument("--wheelhouse", metavar="DIR", default=None,
                   help="install offline from these wheels (default: $TORCHRIG_WHEELHOUSE)")
    b.add_argument("--ca-bundle", metavar="FILE", default=None,
                   help="CA bundle for downloads during the build (default: $TORCHRIG_CA_BUNDLE, $PIP_CERT, ...)")
    b.add_argument("--size-budget-mb", type=types.size_budget_mb, metavar="MB", default=None,
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
    if unknown and _suite_accepts(getattr(args, "suite", None), unknown):
        # `nox -s bench-cuda130 -- --acceptance`: an option of the suite's own CLI needs no second `--`
        return [*unknown, *passthrough]
    if unknown:
        raise UsageError(f"unknown option(s) {' '.join(unknown)} for `{args.command} {args.env}`; arguments for "
                         f"the command in the container go after `--`: torchrig {args.command} {args.env} "
                         f"[OPTIONS] -- {' '.join(unknown)}")
    return passthrough


def _suite_accepts(suite: str | None, words: list[str]) -> bool:
    """Whether every word is an option (with its value) of the suite's own command line, ``python -m bench`` or
    ``python -m tasks``, so that it can go to the container without a ``--`` (pytest's own options still need one:
    a typo must not reach pytest as a test path)."""
    if suite is None or not words[0].startswith("-") or {"-h", "--help"} & set(words):
        return False
    if suite == "bench":
        from bench.__main__ import build_parser as suite_parser
    else:
        from tasks.all import build_parser as suite_parser
    parser = suite_parser()
    parser.exit_on_error = False
    try:
        _, left = parser.parse_known_args(words)
    except argparse.ArgumentError:
        return False
    return not left


# ---------------------------------------------------------------------------------------------- commands


def _context(args: argparse.Namespace) -> tuple[Settings, Matrix, Environment]:
    settings = resolve_settings(args)  # after _parse_rest: the flags that followed ENV count too
    matrix = load_matrix(settings.matrix_path, settings=settings)
    return settings, matrix, matrix.get(args.env)


def _options(args: argparse.Namespace, settings: Settings, matrix: Matrix, target: Target | None) -> run.RunOptions:
    build = BuildOptions.from_settings(settings, matrix)  # the same construction as `torchrig build`
    return run.RunOptions(target=target, image=args.image, pull=args.pull, no_build=args.no_build,
                          no_gpu=args.no_gpu, shm_size=args.shm_size, ipc_host=args.ipc_host,
                          network=args.network or None, user_env=parse_user_env(args.user_env), build=build)


def _run_suite(args: argparse.Namespace) -> int:
    passthrough = _parse_rest(args)
    settings, matrix, env = _context(args)
    request = run.SuiteRequest(
        suite=args.suite,
        results=Path(args.results) if args.results else settings.results_dir / env.id,
        data=Path(args.data) if args.data else settings.data_dir or matrix.root / "data",
        quick=args.quick, timeout_s=args.timeout or None, args=tuple(passthrough),
    )
    run.run_suite(matrix, env, _options(args, settings, matrix, args.target), request)
    return 0


def _dev(args: argparse.Namespace) -> int:
    command = _parse_rest(args)
    settings, matrix, env = _context(args)
    return run.dev(matrix, env, _options(args, settings, matrix, args.target), target=args.target or dev_target(env),
                   workspace=Path(args.workspace or Path.cwd()), command=command, timeout_s=args.timeout or None)


def _devcontainer(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    matrix = load_matrix(settings.matrix_path, settings=settings)
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
