"""Image commands: build, lock, pin-bases, push, pull, images (sizes), base-local."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.config.files import PROJECT_FILE, write_setting
from torchrig.container import IMAGE_GID, IMAGE_UID
from torchrig.engine.client import connect
from torchrig.engine.registry import merge_index, pull_image, push_image, push_platforms
from torchrig.errors import BuildError, UsageError
from torchrig.images import MB, BuildOptions, BuiltImage, build_image, default_root, ensure_image, size_records_dir
from torchrig.images.base import ARCHES, DEBIAN_RELEASES, ensure_base
from torchrig.images.lock import Lock, lock_oci_platform, lock_path, lock_status, read_lock
from torchrig.images.pin import bases_file, pin_bases
from torchrig.images.plan import sources
from torchrig.images.platforms import DEFAULT_PLATFORM, parse_platform, platform_ref
from torchrig.images.uvlock import RESOLVE_TIMEOUT_S, write_installer_lock, write_lock
from torchrig.matrix import TARGETS, Environment, Matrix, Target, load_matrix
from torchrig.results.reading import InputFileError, read_json
from torchrig.settings import Settings

__all__ = ["register"]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _source_flags(p: argparse.ArgumentParser) -> None:
    """Flags for sites without internet; each also a TORCHRIG_* variable (the flag wins)."""
    g = p.add_argument_group("package sources (each flag also an environment variable)")
    g.add_argument("--base-image", metavar="IMAGE", type=types.image_ref,
                   help="base image instead of matrix.yaml's targets ($TORCHRIG_BASE_IMAGE), "
                   "e.g. torchrig-base:bookworm from `torchrig base-local`")
    g.add_argument("--index-url", metavar="URL", type=types.url, help="package index instead of the environment's "
                   "($TORCHRIG_INDEX_URL), e.g. https://pypi.org/simple or a local mirror")
    g.add_argument("--extra-index-url", metavar="URL", action="append", default=None, type=types.url,
                   help="extra package index, repeatable ($TORCHRIG_EXTRA_INDEX_URL, space-separated)")
    g.add_argument("--wheelhouse", metavar="DIR", help="install offline from the wheels in DIR "
                   "(`pip download -d DIR ...`; served to the build, never copied into it) ($TORCHRIG_WHEELHOUSE)")
    g.add_argument("--ca-bundle", metavar="FILE", help="CA bundle for every download in the build, kept out of "
                   "the image ($TORCHRIG_CA_BUNDLE; default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE "
                   "when set; 'none' to turn off)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build an environment's image through the Docker SDK",
                       description="Build ENV's image (runtime by default), tag it with its immutable tag and "
                       "alias, and report its size against its payload.")
    p.add_argument("env")
    p.add_argument("--target", choices=(*TARGETS, "all"), default="runtime",
                   help="runtime (default), devel (compilers, from the devel base) or all")
    _source_flags(p)
    p.add_argument("--keep-ca-bundle", action="store_true", default=None,
                   help="install the CA bundle into the image's trust store ($TORCHRIG_KEEP_CA_BUNDLE=1)")
    p.add_argument("--size-budget-mb", type=types.size_budget_mb, metavar="MB",
                   help="fail above this size instead of matrix.yaml's size_budget_mb ($TORCHRIG_SIZE_BUDGET_MB): "
                   "for builds from other sources than matrix.yaml's")
    p.add_argument("--no-lock", action="store_true", help="ignore locks/ENV.txt and resolve the requirements now")
    p.add_argument("--lock", metavar="FILE", type=Path, help="the lock to install from (default locks/ENV.txt, or "
                   "locks/ENV@INDEX.txt for another --index-url)")
    p.add_argument("--require-lock", action="store_true", default=None, help="fail when no lock matches this build "
                   "instead of building unlocked ($TORCHRIG_REQUIRE_LOCK=1; CI sets it)")
    p.add_argument("--uid", type=types.uid, default=IMAGE_UID, help=f"UID of the image's user (default {IMAGE_UID})")
    p.add_argument("--gid", type=types.uid, default=IMAGE_GID, help=f"GID of the image's user (default {IMAGE_GID})")
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    p.add_argument("--reuse", action="store_true", help="skip the build when an image from the same inputs exists")
    _platform_flag(p)
    p.set_defaults(func=_build)

    p = sub.add_parser("lock", help="write locks/ENV.txt: every package pinned with its sha256 (uv, no container)",
                       description="Resolve each ENV's requirements on this host with `uv pip compile` for the "
                       "image's Python and platform against its index, and write the hash-pinned lock that builds "
                       "install from (and locks/uv.txt, the uv they install with). --check only reports stale locks.")
    p.add_argument("envs", nargs="*", metavar="ENV", help="environments to lock (with --check: to check)")
    p.add_argument("--all", action="store_true", help="every environment in matrix.yaml")
    p.add_argument("--stale", action="store_true", help="rewrite every committed lock that is stale, each against "
                   "the index it records")
    p.add_argument("--check", action="store_true", help="resolve nothing: exit 1 when a committed lock is stale")
    _source_flags(p)
    p.add_argument("--output", "-o", metavar="FILE", type=Path, help="where to write it (one ENV only; default "
                   "locks/ENV.txt, or locks/ENV@INDEX.txt for another --index-url); with it locks/uv.txt is left "
                   "as it is")
    p.add_argument("--timeout", type=types.positive_seconds, default=RESOLVE_TIMEOUT_S, metavar="SECONDS",
                   help=f"stop the resolver after this long (default {RESOLVE_TIMEOUT_S:g})")
    _platform_flag(p)
    p.set_defaults(func=_lock)

    p = sub.add_parser("pin-bases", help="record each base image's digest in locks/bases.yaml (builds use it)",
                       description="Ask each registry, through the engine, which digest every target base of ENV "
                       "(default: all) points at now, and record it in locks/bases.yaml beside matrix.yaml. "
                       "Builds then use TAG@DIGEST and label org.opencontainers.image.base.digest.")
    p.add_argument("envs", nargs="*", metavar="ENV")
    p.set_defaults(func=_pin_bases)

    for name, verb in (("push", "push"), ("pull", "pull")):
        p = sub.add_parser(name, help=f"{verb} an environment's image (immutable tag and alias) "
                           f"{'to' if name == 'push' else 'from'} the registry ($TORCHRIG_REGISTRY)")
        p.add_argument("env")
        p.add_argument("--target", choices=(*TARGETS, "all"), default="runtime")
        if name == "push":
            p.add_argument("--merge", action="store_true", help="push nothing: put one image index of the row's "
                           "platforms, each already pushed as TAG-ARCH (CI's merge job), under the tag and alias")
        p.set_defaults(func=_push if name == "push" else _pull)

    p = sub.add_parser("images", help="list an environment's local images with size, payload and ratio")
    p.add_argument("env", nargs="?", help="one environment (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_images)

    p = sub.add_parser("base-local", help="make torchrig-base:SUITE with debootstrap (no registry needed)",
                       description="Bootstrap a minimal Debian (python3, venv, pip, CA certificates) from the "
                       "mirror apt uses, cache the tarball under ~/.cache/torchrig/base, and docker-import it.")
    p.add_argument("--suite", choices=DEBIAN_RELEASES, default="bookworm", help="Debian release (default bookworm: "
                   "Python 3.11; bullseye 3.9, trixie 3.13)")
    p.add_argument("--arch", choices=ARCHES, default="amd64", help="Debian architecture (default amd64; arm64 "
                   "under qemu-user-static on an amd64 host: torchrig-base:SUITE-arm64)")
    p.add_argument("--mirror", metavar="URL", type=types.url,
                   help="Debian mirror ($TORCHRIG_DEBIAN_MIRROR; default: apt's)")
    p.add_argument("--rebuild", action="store_true", help="bootstrap again even when a cached tarball exists")
    p.add_argument("--write-config", action="store_true", help=f"write base-image = \"torchrig-base:SUITE\" into "
                   f"{PROJECT_FILE} beside matrix.yaml, so every build, tasks-, bench- and dev- session uses it")
    p.set_defaults(func=_base_local)


def _platform_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", type=parse_platform, default=DEFAULT_PLATFORM, metavar="OS/ARCH",
                   help="linux/amd64 (default) or linux/arm64 (one of the row's platforms: in matrix.yaml; arm64 "
                   "on an amd64 host runs under qemu-user-static); locks and local tags are per platform")


def _targets(env: Environment, choice: str) -> list[Target]:
    if choice == "all":
        return list(env.targets)
    return [choice]  # type: ignore[list-item]


def _settings(args: argparse.Namespace) -> Settings:
    return resolve_settings(args)


def _matrix(args: argparse.Namespace) -> tuple[Settings, Matrix]:
    settings = _settings(args)
    return settings, load_matrix(settings.matrix_path, settings=settings)


def _root(matrix: Matrix) -> Path:
    return matrix.root if (matrix.root / "images").is_dir() else default_root()


def _build(args: argparse.Namespace) -> int:
    if args.no_lock and (args.require_lock or args.lock is not None):
        raise UsageError("--no-lock contradicts " + ("--require-lock" if args.require_lock else "--lock") +
                         ": pass one of them")
    settings, matrix = _matrix(args)
    env = matrix.get(args.env)
    options = BuildOptions.from_settings(settings, matrix, use_lock=not args.no_lock, lock_file=args.lock,
                                         uid=args.uid, gid=args.gid, no_cache=args.no_cache)
    options = replace(options, platform=args.platform)
    client = connect()
    built: list[BuiltImage] = []
    for target in _targets(env, args.target):
        fn = ensure_image if args.reuse else build_image
        built.append(fn(env, target, options, client=client, log=_say))
    for b in built:
        print(f"{b.ref.immutable}\t{b.ref.alias}\t{b.image_id}\t{b.size_bytes / MB:.0f} MB\t"
              f"{b.ratio:.3f} x payload")
    return 0


def _lock(args: argparse.Namespace) -> int:
    settings, matrix = _matrix(args)
    root = _root(matrix)
    if args.check:
        return _check_locks(matrix, root, args.envs)
    if args.stale:
        if args.envs or args.all:
            raise UsageError("--stale picks the environments itself: give no ENV and no --all")
        jobs = [(matrix.get(lock.env_id), lock) for lock, problem in _committed(matrix, root) if problem]
        if not jobs:
            _say("every committed lock is fresh: nothing to do")
            return 0
        options = BuildOptions.from_settings(settings, matrix)
        for env, lock in jobs:
            # against the indexes the lock records: a lock for another index stays one
            again = replace(options, index_url=lock.index_url, extra_index_urls=lock.extra_index_urls,
                            platform=lock_oci_platform(lock.platform))  # an arm64 lock stays one
            print(write_lock(env, again, output=lock.path, out=sys.stderr, timeout=args.timeout))
        _installer(options)
        return 0
    envs = list(matrix.environments) if args.all else [matrix.get(e) for e in args.envs]
    if not envs:
        raise UsageError("name the environments to lock (torchrig lock ENV...), or --all, --stale or --check")
    if args.output is not None and len(envs) > 1:
        raise UsageError("--output takes one environment")
    options = replace(BuildOptions.from_settings(settings, matrix), platform=args.platform)
    for env in envs:
        print(write_lock(env, options, output=args.output, out=sys.stderr, timeout=args.timeout))
    if args.output is not None:  # written elsewhere: the checkout's locks/ (uv.txt is an input of every image) stay
        _say("locks/uv.txt left as it is: --output writes only this environment's lock (`torchrig lock ENV` "
             "without --output refreshes uv.txt too)")
        return 0
    _installer(options)
    return 0


def _installer(options: BuildOptions) -> None:
    """locks/uv.txt beside the locks; without it builds install with pip, so failing to write it only warns."""
    try:
        print(write_installer_lock(options, out=sys.stderr))
    except BuildError as e:
        _say(f"warning: locks/uv.txt not written (builds install the locks with pip until it is): {e}")


def _committed(matrix: Matrix, root: Path) -> list[tuple[Lock, str | None]]:
    """Every lock in locks/ with why it is stale (None: fresh)."""
    out: list[tuple[Lock, str | None]] = []
    for path in sorted((root / "locks").glob("*.txt")):
        if path.name == "uv.txt":
            continue
        lock = read_lock(path)
        if lock is None:
            continue
        if lock.env_id not in matrix.ids:
            out.append((lock, f"{lock.name} is for {lock.env_id!r}, which matrix.yaml no longer has: delete it"))
            continue
        out.append((lock, lock_status(lock, matrix.get(lock.env_id))))
    return out


def _check_locks(matrix: Matrix, root: Path, env_ids: list[str]) -> int:
    wanted = set(env_ids) or set(matrix.ids)
    for e in env_ids:
        matrix.get(e)  # an unknown id is a usage error
    rc = 0
    for lock, problem in _committed(matrix, root):
        if lock.env_id not in wanted and lock.env_id in matrix.ids:
            continue
        print(f"stale: {problem}" if problem else f"fresh: {lock.name} ({lock.resolver}, {lock.platform})")
        rc = rc or (1 if problem else 0)
    for env in (matrix.get(e) for e in sorted(wanted)):
        src = sources(env, "runtime", BuildOptions(root=root))
        path = lock_path(root, env, index_url=src.index_url, extra_index_urls=src.extra_index_urls)
        if not path.is_file():
            print(f"no lock: {env.id} ({path.relative_to(root)}; `torchrig lock {env.id}` writes it against "
                  f"{src.describe()})")
    return rc


def _pin_bases(args: argparse.Namespace) -> int:
    _, matrix = _matrix(args)
    envs = [matrix.get(e) for e in args.envs] if args.envs else list(matrix.environments)
    path = bases_file(matrix.path)
    pin_bases(envs, client=connect(), path=path, log=_say)
    print(path)
    return 0


def _push(args: argparse.Namespace) -> int:
    env = _matrix(args)[1].get(args.env)
    if args.merge:  # CI's merge job: each runner pushed its platform already
        for target in _targets(env, args.target):
            print(merge_index(env.tags(target), env.platforms, log=_say))
        return 0
    client = connect()
    for target in _targets(env, args.target):
        if tuple(env.platforms) == (DEFAULT_PLATFORM,):
            push_image(env.tags(target), client=client, log=_say)
            continue
        local = {p: platform_ref(env.tags(target), p).immutable for p in env.platforms
                 if client.images.list(name=platform_ref(env.tags(target), p).immutable)}
        if not local:
            raise UsageError(f"no local image of {env.id} ({target}) for any of its platforms "
                             f"({', '.join(env.platforms)}): build with `torchrig build {env.id} --platform P`")
        for p in env.platforms:
            if p not in local:
                _say(f"warning: {env.id} lists {p} but no local {p} image exists: the index leaves it out")
        print(push_platforms(env.tags(target), local, client=client, log=_say))
    return 0


def _pull(args: argparse.Namespace) -> int:
    env = _matrix(args)[1].get(args.env)
    client = connect()
    for target in _targets(env, args.target):
        image_id = pull_image(env.tags(target), client=client, log=_say)
        print(f"{env.tags(target).immutable}\t{image_id}")
    return 0


def _images(args: argparse.Namespace) -> int:
    import docker.errors

    settings, matrix = _matrix(args)
    envs = [matrix.get(args.env)] if args.env else list(matrix.environments)
    records = size_records_dir(settings.cache_dir)
    client = connect()
    rows = []
    for env in envs:
        for target in env.targets:
            ref = env.tags(target)
            try:
                image = client.images.get(ref.immutable)
            except docker.errors.ImageNotFound:
                rows.append({"env": env.id, "target": target, "image": ref.immutable, "present": False})
                continue
            row: dict[str, object] = {
                "env": env.id, "target": target, "image": ref.immutable, "present": True, "id": image.id,
                "size_mb": round(int(image.attrs.get("Size") or 0) / MB, 1),
                "budget_mb": env.size_budget_mb.get(target), "lock": image.labels.get("io.torchrig.lock"),
                "created": image.labels.get("org.opencontainers.image.created"),
            }
            try:  # the kept measurement, when there is a usable one of this very image
                data = read_json(records / f"{env.id}-{target}.json", kind="size-record")
            except InputFileError:
                data = {}
            payload, ratio = data.get("payload_bytes"), data.get("ratio")
            numbers = isinstance(payload, (int, float)) and isinstance(ratio, (int, float))
            if data.get("image_id") == image.id and numbers:
                row["payload_mb"] = round(payload / MB, 1)
                row["ratio"] = round(ratio, 3)
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ENV':<10} {'TARGET':<8} {'SIZE MB':>9} {'PAYLOAD MB':>11} {'RATIO':>6} {'BUDGET':>7}  IMAGE")
    for r in rows:
        if not r["present"]:
            print(f"{r['env']:<10} {r['target']:<8} {'-':>9} {'-':>11} {'-':>6} {'-':>7}  {r['image']} (not built)")
            continue
        payload = f"{r['payload_mb']:,.0f}" if "payload_mb" in r else "?"
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else "?"
        print(f"{r['env']:<10} {r['target']:<8} {r['size_mb']:>9,.0f} {payload:>11} {ratio:>6} "
              f"{r['budget_mb'] or '-':>7}  {r['image']}")
    return 0


def _base_local(args: argparse.Namespace) -> int:
    settings = _settings(args)
    base = ensure_base(args.suite, client=connect(), cache_dir=settings.cache_dir,
                       mirror=settings.debian_mirror, log=_say, rebuild=args.rebuild, arch=args.arch)
    print(base.ref)
    target = settings.matrix_root / PROJECT_FILE
    if args.write_config:
        _say(write_setting(target, "base-image", str(base.ref)))
    elif settings.base_image != str(base.ref):
        _say(f"to build from it every time, add this line to {target} (or rerun with --write-config):\n"
             f"  base-image = \"{base.ref}\"")
    return 0
