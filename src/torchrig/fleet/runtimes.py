"""How a node starts the suite's container, per runtime: the command lines of an sbatch script.

Every runtime renders the same description, :meth:`FleetPlan.container <torchrig.fleet.plan.FleetPlan.container>`
(:class:`~torchrig.container.SuiteContainer`), with the node's facts as the script's variables:

* ``docker`` / ``podman``: ``docker run`` words from :func:`torchrig.container.oci_args` (podman takes NVIDIA GPUs
  as the CDI device ``nvidia.com/gpu=all``; docker the GPUs Slurm allocated).
* ``pyxis``: ``srun --container-image=...`` (Slurm's Pyxis/Enroot plugin; Slurm hands the allocated GPUs over); the
  environment is exported and named in ``--container-env``.
* ``apptainer``: ``apptainer exec --cleanenv`` with ``--nv`` (CUDA) or ``--rocm``, from ``docker://IMAGE`` or a
  ``.sif`` file; the environment goes in as ``APPTAINERENV_NAME`` exports, which ``--cleanenv`` keeps and which
  carry any value (``--env`` splits on commas).

Each returns shell lines for one suite, using the script's variables ``$work`` (the node's local records folder),
``$data``, ``$host``, ``$index``, ``$job``, ``$uid``/``$gid`` and ``$image_id``/``$image_digest`` (docker/podman).
"""

from __future__ import annotations

from torchrig.container import CONTAINER_HOME, SuiteContainer, SuiteKind, oci_args
from torchrig.errors import UsageError
from torchrig.fleet.plan import FleetPlan, NodeFacts, Runtime, sh_word, sh_words, var

__all__ = ["apptainer_words", "container_name", "node_facts", "pyxis_image", "pyxis_words", "runtime_lines",
           "runtime_setup"]


def container_name(plan: FleetPlan, suite: SuiteKind) -> str:
    """Unique per job, element and suite, so a signal handler can remove exactly this node's container."""
    return f"torchrig-{plan.env.id}-{suite}-{var('job')}-{var('index')}"


def pyxis_image(ref: str) -> str:
    """Enroot names a registry with ``#``: ``ghcr.io/torchrig/torchrig:tag`` -> ``ghcr.io#torchrig/torchrig:tag``."""
    if ref.startswith(("/", "./")) or ref.endswith(".sqsh") or "#" in ref:
        return ref
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return ref


def _apptainer_image(ref: str) -> str:
    if "://" in ref or ref.endswith(".sif") or ref.startswith(("/", "./")):
        return ref
    return f"docker://{ref}"


def node_facts(plan: FleetPlan, runtime: Runtime, suite: SuiteKind) -> NodeFacts:
    """How ``runtime``'s script names the node's facts."""
    if runtime not in ("docker", "podman"):
        return NodeFacts()
    rocm = plan.gpu and plan.env.accelerator == "rocm"
    return NodeFacts(
        image_id=var("image_id"), image_digest=var("image_digest"),
        render_group=var("render_gid") if rocm else None,
        nvidia_gpus=var("docker_gpus") if runtime == "docker" else "all",
        pass_env=("ROCR_VISIBLE_DEVICES",) if rocm else (),  # Slurm's AMD GPU binding, passed on when it sets one
        name=container_name(plan, suite))


def runtime_setup(plan: FleetPlan, runtime: Runtime) -> list[str]:
    """Lines run once per node before the suites: make sure the image is there, and what it is."""
    if runtime not in ("docker", "podman"):
        return []
    image = sh_word(plan.image)
    lines = [
        f'if ! {runtime} image inspect {image} >/dev/null 2>&1; then',
        f'  say "pulling {plan.image}"',
        f'  {runtime} pull {image} 2>&1 | tee -a "$work/node.log" || finish 125 "could not pull the image"',
        'fi',
        f"image_id=$({runtime} image inspect --format '{{{{.Id}}}}' {image})",
        # The registry digest (REPO@sha256:...) another machine can pull the image by; empty for a local build.
        f"image_digest=$({runtime} image inspect --format '{{{{if .RepoDigests}}}}{{{{index .RepoDigests 0}}}}"
        f"{{{{end}}}}' {image} 2>/dev/null)",
    ]
    if plan.gpu and plan.env.accelerator == "cuda" and runtime == "docker":
        # Only the GPUs Slurm allocated to this element (all of them where Slurm does not track GPUs).
        lines.append('docker_gpus=all; [[ -z ${SLURM_JOB_GPUS:-} ]] || docker_gpus="\\"device=$SLURM_JOB_GPUS\\""')
    if plan.gpu and plan.env.accelerator == "rocm":
        lines.append("render_gid=$(getent group render | cut -d: -f3); render_gid=${render_gid:-video}")
    return lines


def _binds(c: SuiteContainer) -> str:
    """``SRC:DST[:ro],...`` -- the one syntax of Pyxis' ``--container-mounts`` and apptainer's ``--bind``, which has
    no quoting: a path holding a comma or a colon would be read as two mounts, so it is refused."""
    for m in c.mounts:
        for path in (m.source, m.target):
            if "," in path or ":" in path:
                raise UsageError(f"{path!r}: a comma or colon in a path cannot be bind-mounted by pyxis or apptainer "
                                 "(SRC:DST,... has no quoting); use a path without them, or --runtime docker")
    return ",".join(f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in c.mounts)


def pyxis_words(c: SuiteContainer) -> tuple[list[tuple[str, str]], list[str]]:
    """(exports, ``srun`` words) for ``c`` under Pyxis: the variables exported, then named in ``--container-env``
    (Pyxis passes those of the job's environment into the container)."""
    mounts = _binds(c)
    if c.gpu.devices:
        mounts += "".join(f",{d}:{d}" for d in c.gpu.devices)
    names = [*c.environment, *c.gpu.pass_env]
    words = ["srun", "--ntasks=1", f"--container-image={pyxis_image(c.image)}", f"--container-mounts={mounts}",
             f"--container-workdir={c.working_dir or CONTAINER_HOME}", "--no-container-mount-home",
             f"--container-env={','.join(names)}", *c.command]
    return list(c.environment.items()), words


def apptainer_words(c: SuiteContainer) -> tuple[list[tuple[str, str]], list[str]]:
    """(exports, ``apptainer exec`` words) for ``c``: each variable as ``APPTAINERENV_NAME``."""
    words = ["apptainer", "exec", "--cleanenv", "--pwd", c.working_dir or CONTAINER_HOME, "--bind", _binds(c)]
    if c.gpu.nvidia or c.gpu.cdi:
        words.append("--nv")
    elif c.gpu.devices:
        words.append("--rocm")
    exports = [(f"APPTAINERENV_{k}", v) for k, v in c.environment.items()]
    return exports, [*words, _apptainer_image(c.image), *c.command]


def runtime_lines(plan: FleetPlan, runtime: Runtime, suite: SuiteKind) -> list[str]:
    """The export lines and the command line that runs ``suite`` on the node (as words for ``in_node``)."""
    c = plan.container(suite, node_facts(plan, runtime, suite))
    if runtime in ("docker", "podman"):
        return [f"{runtime} run {sh_words(oci_args(c, runtime=runtime))}"]
    if runtime == "pyxis":
        exports, words = pyxis_words(c)
    elif runtime == "apptainer":
        exports, words = apptainer_words(c)
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    return [*(f"export {k}={sh_word(v)}" for k, v in exports), sh_words(words)]
