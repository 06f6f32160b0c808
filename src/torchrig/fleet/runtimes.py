"""How a node starts the suite's container, per runtime: the command lines of an sbatch script.

* ``docker`` / ``podman``: ``docker run`` with the options :func:`torchrig.engine.container_spec` derives for
  ``run-tasks`` (user, ``/dev/shm``, GPU flags, network, labels), rendered by :meth:`ContainerSpec.cli_args`.
* ``pyxis``: ``srun --container-image=...`` (Slurm's Pyxis/Enroot plugin; Slurm hands the allocated GPUs over).
* ``apptainer``: ``apptainer exec --nv`` (CUDA) or ``--rocm``, from ``docker://IMAGE`` or a ``.sif`` file.

Each returns shell lines for one suite, using the script's variables ``$work`` (the node's local records folder),
``$data``, ``$host``, ``$index``, ``$job``, ``$uid``/``$gid`` and ``$image_id`` (docker/podman only).
"""

from __future__ import annotations

from dataclasses import replace

from torchrig.engine import Mount, container_spec
from torchrig.fleet.plan import FleetPlan, Runtime, SuiteName, sh_word, sh_words, var
from torchrig.results.contract import DATA_IN, IMAGE_ID_ENV, RESULTS_IN

__all__ = ["container_name", "pyxis_image", "runtime_lines", "runtime_setup"]


def container_name(plan: FleetPlan, suite: SuiteName) -> str:
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
    ]
    if plan.gpu and plan.env.accelerator == "cuda" and runtime == "docker":
        # Only the GPUs Slurm allocated to this element (all of them where Slurm does not track GPUs).
        lines.append('docker_gpus=all; [[ -z ${SLURM_JOB_GPUS:-} ]] || docker_gpus="\\"device=$SLURM_JOB_GPUS\\""')
    if plan.gpu and plan.env.accelerator == "rocm":
        lines.append("render_gid=$(getent group render | cut -d: -f3); render_gid=${render_gid:-video}")
    return lines


def runtime_lines(plan: FleetPlan, runtime: Runtime, suite: SuiteName) -> list[str]:
    """The command line that runs ``suite`` on the node (as words for ``in_node``), and its cleanup on a signal."""
    command = plan.command(suite)
    env = plan.environment()
    if runtime in ("docker", "podman"):
        return [f"{runtime} run {sh_words(_oci_args(plan, runtime, suite, command, env))}"]
    if runtime == "pyxis":
        mounts = f"{var('work')}:{RESULTS_IN},{var('data')}:{DATA_IN}"
        if plan.gpu and plan.env.accelerator == "rocm":
            mounts += ",/dev/kfd:/dev/kfd,/dev/dri:/dev/dri"
        args = ["srun", "--ntasks=1", f"--container-image={pyxis_image(plan.image)}",
                f"--container-mounts={mounts}", "--container-workdir=/tmp", "--no-container-mount-home",
                f"--container-env={','.join(env)}", *command]
        exports = [f"export {k}={sh_word(v)}" for k, v in env.items()]
        return [*exports, sh_words(args)]
    if runtime == "apptainer":
        args = ["apptainer", "exec", "--cleanenv", "--pwd", "/tmp",
                "--bind", f"{var('work')}:{RESULTS_IN},{var('data')}:{DATA_IN}"]
        if plan.gpu:
            args.append("--nv" if plan.env.accelerator == "cuda" else "--rocm")
        args += [f"--env={k}={v}" for k, v in env.items()]
        return [sh_words([*args, _apptainer_image(plan.image), *command])]
    raise ValueError(f"unknown runtime {runtime!r}")


def _oci_args(plan: FleetPlan, runtime: Runtime, suite: SuiteName, command: list[str],
              env: dict[str, str]) -> list[str]:
    """``docker run`` arguments from the one options function, with the node's facts as placeholders."""
    spec = container_spec(
        env_id=plan.env.id, accelerator=plan.env.accelerator, image=plan.image, purpose=suite, command=command,
        use_gpu=plan.gpu, render_group=var("render_gid") if plan.env.accelerator == "rocm" else None,
        mounts=[Mount(source=var("work"), target=RESULTS_IN), Mount(source=var("data"), target=DATA_IN)],
        environment={**env, IMAGE_ID_ENV: var("image_id")}, shm_size=plan.shm_size, ipc_host=plan.ipc_host,
        network_mode=plan.network or None, name=container_name(plan, suite),
    )
    # The job's user owns the node's work folder; files the suite writes there must be theirs too.
    spec = replace(spec, user=f"{var('uid')}:{var('gid')}")
    args = spec.cli_args(remove=True, image_and_command=False)
    if spec.gpu.nvidia:
        if runtime == "podman":  # podman reaches NVIDIA GPUs through CDI (nvidia-ctk cdi generate)
            args = [("--device=nvidia.com/gpu=all" if a == "--gpus=all" else a) for a in args]
        else:
            args = [(f"--gpus={var('docker_gpus')}" if a == "--gpus=all" else a) for a in args]
    if spec.gpu.devices:
        args.append("--env=ROCR_VISIBLE_DEVICES")  # Slurm's AMD GPU binding, passed on when it sets one
    return [*args, spec.image, *spec.command]
