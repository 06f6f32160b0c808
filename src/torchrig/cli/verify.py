"""``torchrig verify ENV|IMAGE``: does an image hold what its lock, SBOM and environment say? Exit 1 on drift."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchrig.cli.context import settings as resolve_settings
from torchrig.engine.client import connect
from torchrig.errors import ConfigurationError, UsageError
from torchrig.images import default_root
from torchrig.images.verify import verify_image
from torchrig.matrix import TARGETS, Environment, load_matrix
from torchrig.settings import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check an image against its lock, its SBOM and its environment (exit 1 on "
                                      "drift)",
                       description="Read what is installed in the image (in a throwaway container, network off) "
                                   "and compare it with the lock its io.torchrig.lock label names, with its SBOM "
                                   "(io.torchrig.sbom.sha256), and with the environment: Python, torch and "
                                   "torchvision with their build (+cpu/+cu117/+rocm5.4.2). Prints each difference "
                                   "(extra:, missing:, changed:) and exits 1 when there is any, 0 when none.")
    p.add_argument("image", metavar="ENV|IMAGE", help="an environment id from matrix.yaml (its image, built or "
                   "pulled), or any image name or id (checked against its own labels)")
    p.add_argument("--target", choices=TARGETS, default="runtime", help="with ENV: which image (default runtime)")
    p.add_argument("--lock", metavar="FILE", type=Path, help="the lock to compare with (default: the checkout's "
                   "locks/*.txt whose sha256 the image's label names, else the lock's sections in the image)")
    p.add_argument("--sbom", metavar="FILE", type=Path, help="the SBOM to compare with (default: the copy in the "
                   "image, /etc/torchrig/sbom.cdx.json)")
    p.set_defaults(func=_verify)


def _looks_like_image(name: str) -> bool:
    return any(ch in name for ch in ":/@") or name.startswith("sha256")


def _environment(name: str, settings: Settings) -> tuple[Environment | None, Path, tuple[str, ...]]:
    """The environment ``name`` names, if it is one, the checkout it belongs to, and matrix.yaml's ids."""
    try:
        matrix = load_matrix(settings.matrix_path, settings=settings)
    except (ConfigurationError, UsageError, OSError):
        if _looks_like_image(name):
            return None, default_root(), ()
        raise
    if name not in matrix.ids:
        return None, default_root(), matrix.ids
    root = matrix.root if (matrix.root / "locks").is_dir() else default_root()
    return matrix.get(name), root, matrix.ids


def _verify(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    env, root, ids = _environment(args.image, settings)
    client = connect()
    image = args.image
    if env is not None:
        ref = env.tags(args.target)
        image = ref.immutable if client.images.list(name=ref.immutable) else ref.alias
    try:
        verdict = verify_image(client, image, env=env, root=root, lock_file=args.lock, sbom_file=args.sbom,
                               cache_dir=settings.cache_dir, keep=settings.keep_containers)
    except UsageError as e:
        if env is None and ids and not _looks_like_image(image):
            raise UsageError(f"{e}; nor is {image!r} an environment in matrix.yaml ({', '.join(ids)})") from None
        raise
    print(verdict.render())
    return 0 if verdict.ok else 1
