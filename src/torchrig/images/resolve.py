"""Making a lock: resolve an environment inside a throwaway container from its base image, then write the file.

The container (``torchrig-<env>-lock-*``) goes through the one container lifecycle (:func:`torchrig.engine.run`:
label, timeout, cleanup, keep-for-debugging). It gets the resolver script, the build helper and the requirement
files copied in, reaches the index through the host network, and the CA bundle and wheelhouse through the same
file server a build uses (:func:`torchrig.images.serve.serving`); the base image, index and extra indexes are
decided as for a build (:func:`torchrig.images.plan.sources`). Its stderr (pip's progress) streams live; its
stdout is the JSON report that :func:`torchrig.images.lock.packages_from_reports` turns into the lock.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torchrig.engine import container_spec, run
from torchrig.errors import BuildError
from torchrig.images.base import missing_base_hint
from torchrig.images.lock import format_lock, packages_from_reports, parse_lock
from torchrig.images.options import BuildOptions, default_root
from torchrig.images.plan import sources
from torchrig.images.serve import serving
from torchrig.matrix import Environment
from torchrig.results.io import atomic_write_text

if TYPE_CHECKING:
    import docker

__all__ = ["LOCK_TIMEOUT_S", "resolve_in_container", "resolve_script", "write_lock"]

# pip downloads every wheel it cannot read metadata for without it (torch with its CUDA libraries: gigabytes);
# an hour covers a slow link, and a resolver that hangs longer is stuck.
LOCK_TIMEOUT_S = 3600.0


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def write_lock(env: Environment, options: BuildOptions, *, client: docker.DockerClient, output: Path | None = None,
               out: TextIO | None = None, timeout: float = LOCK_TIMEOUT_S) -> Path:
    """Resolve ``env`` in its runtime base image with ``options``' sources and write the lock (default
    ``<root>/locks/<env>.txt``); return where it went."""
    out = out or sys.stderr
    root = options.root or default_root()
    output = output or options.lock_file or root / "locks" / f"{env.id}.txt"
    src = sources(env, "runtime", options)
    _say(out, f"lock {env.id}: resolving {' '.join(env.requirements())} in {src.base} against {src.describe()}"
         + (f" (wheelhouse {options.wheelhouse})" if options.wheelhouse else ""))
    with serving(ca_bundle=options.ca_bundle, wheelhouse=options.wheelhouse) as url:
        result = resolve_in_container(client=client, base_image=src.base, env=env, index_url=src.index_url,
                                      extra_index_urls=src.extra_index_urls, helper=root / "images" / "build-env.sh",
                                      server_url=url, keep=options.keep_containers, out=out, timeout=timeout)
    packages = packages_from_reports(result["torch"], result["full"])
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    text = format_lock(env=env, index_url=src.index_url, extra_index_urls=src.extra_index_urls, packages=packages,
                       resolved_at=now,
                       resolved_in=f"{src.base} (CPython {result.get('python')}, linux {result.get('machine')})")
    parse_lock(text, source=str(output))  # what we write must read back
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    n_torch = sum(p.section == "torch" for p in packages)
    _say(out, f"lock {env.id}: wrote {output} ({len(packages)} packages: {n_torch} in [torch], "
         f"{len(packages) - n_torch} in [extras])")
    return output


def resolve_script(*, python_version: str) -> str:
    """The bash script that resolves inside the base image and prints ``{"torch": report, "full": report}``.

    It reads the build helper (CA bundle, wheelhouse) from /tmp/torchrig, the requirements from files there, and
    the index from $TORCHRIG_INDEX_URL / $TORCHRIG_EXTRA_INDEX_URLS, like the image build does.
    """
    return f"""set -euo pipefail
cd /tmp/torchrig
. ./build-env.sh
found="$(python3 -c 'import ensurepip, venv, sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
if [ "$found" != "{python_version}" ] && command -v apt-get >/dev/null; then
    echo "torchrig lock: installing python3 + venv into the throwaway container" >&2
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
    found="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
fi
if [ "$found" != "{python_version}" ]; then
    echo "torchrig lock: the base image's python3 is ${{found:-missing}}, the environment needs {python_version}" >&2
    exit 3
fi
python3 -m venv /tmp/torchrig/venv >&2
pip=/tmp/torchrig/venv/bin/pip
args=(--disable-pip-version-check --no-cache-dir --progress-bar off --index-url "$TORCHRIG_INDEX_URL")
for url in ${{TORCHRIG_EXTRA_INDEX_URLS:-}}; do args+=(--extra-index-url "$url"); done
echo "torchrig lock: resolving everything ($("$pip" --version | cut -d' ' -f1-2))" >&2
"$pip" install "${{args[@]}}" --dry-run --ignore-installed --report full.json \
    -r requirements-torch.txt -r requirements-extras.txt >&2
python3 -c 'import json; r = json.load(open("full.json"))
print("\\n".join(i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in r["install"]))' > pins.txt
echo "torchrig lock: splitting off torch + torchvision and what they need, at the same versions" >&2
"$pip" install "${{args[@]}}" --dry-run --ignore-installed --report torch.json -c pins.txt \
    -r requirements-torch.txt >&2
python3 -c 'import json, platform, sys
print(json.dumps({{"torch": json.load(open("torch.json")), "full": json.load(open("full.json")),
                  "python": platform.python_version(), "machine": platform.machine()}}))'
torchrig_build_done
"""


def resolve_in_container(*, client: docker.DockerClient, base_image: str, env: Environment, index_url: str,
                         extra_index_urls: Sequence[str], helper: Path, server_url: str | None, keep: bool = False,
                         out: TextIO | None = None, timeout: float = LOCK_TIMEOUT_S) -> dict[str, Any]:
    """Run :func:`resolve_script` in a throwaway container from ``base_image``; return its JSON."""
    import docker.errors

    try:
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise BuildError(f"base image {base_image} is not available here: pull it, or "
                         f"{missing_base_hint(env.python)}") from None
    files = {
        "/tmp/torchrig/build-env.sh": helper.read_bytes(),
        "/tmp/torchrig/requirements-torch.txt": f"torch=={env.torch}\ntorchvision=={env.torchvision}\n".encode(),
        "/tmp/torchrig/requirements-extras.txt": "".join(f"{r}\n" for r in env.image_extras).encode(),
        "/tmp/torchrig/resolve.sh": resolve_script(python_version=env.python).encode(),
    }
    environment = {"TORCHRIG_INDEX_URL": index_url, "TORCHRIG_EXTRA_INDEX_URLS": " ".join(extra_index_urls)}
    if server_url:
        environment["FTP_PROXY"] = server_url
    # root: the resolver may apt-get a Python into the throwaway container; no GPU, no large /dev/shm needed
    spec = container_spec(env_id=env.id, accelerator=env.accelerator, use_gpu=False, image=base_image,
                          purpose="lock", command=["bash", "/tmp/torchrig/resolve.sh"], uid=0, gid=0,
                          environment=environment, network_mode="host", shm_size=None)
    out = out or sys.stderr
    result = run(client, spec, keep=keep, timeout=timeout, prefix=f"lock {env.id}", check=False, tail=15,
                 out=out, capture_stdout=True, files=files)
    if not result.ok:
        how = (f"did not finish within {timeout:g} s" if result.timed_out
               else f"failed (exit {result.exit_code})")
        raise BuildError(f"resolving the lock for {env.id} in {base_image} {how}:\n" + "\n".join(result.last_lines)
                         + f"\nIs {index_url} reachable from here? Pass --index-url/--wheelhouse for another "
                         "source, --ca-bundle for a TLS-intercepting proxy.")
    stdout = result.stdout or ""
    try:
        report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BuildError(f"the lock resolver printed no JSON report:\n{stdout[-2000:]}") from None
    return report
