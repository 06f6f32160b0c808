"""One error family for torchrig: each kind carries its exit code and a message telling the user what to do.

``torchrig.__main__`` catches :class:`FatalError` once, prints its message and exits with its ``return_code``
(the nox sessions run the CLI, so they exit the same way); anything else that escapes is a bug and is shown as
one.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConfigurationError",
    "DockerUnavailableError",
    "FatalError",
    "HostCheckError",
    "RegistryError",
    "RunError",
    "SchedulerError",
    "UsageError",
]


class FatalError(Exception):
    """An error the user can act on. ``str(err)`` is the full message."""

    return_code: int = 1


class UsageError(FatalError):
    """Wrong command-line use: unknown environment id, missing argument, conflicting flags."""

    return_code = 2


class ConfigurationError(FatalError):
    """``matrix.yaml`` (or another input file) is invalid. Carries every problem found, not only the first."""

    return_code = 2

    def __init__(self, problems: list[str], *, source: str = "matrix.yaml") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} found"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems))


class DockerUnavailableError(FatalError):
    """No Docker daemon answered."""

    return_code = 3


class BuildError(FatalError):
    """An image build failed; the message carries the last lines of the build log."""

    return_code = 4


class RegistryError(FatalError):
    """A push or pull failed (docker-py reports these only inside the stream)."""

    return_code = 5


class RunError(FatalError):
    """A command inside a container (or a task/benchmark run) failed, timed out or was killed."""

    return_code = 6


class HostCheckError(FatalError):
    """The host cannot run the image: no GPU runtime, a driver too old for the image's CUDA, no /dev/kfd."""

    return_code = 7


class SchedulerError(FatalError):
    """Slurm or Kubernetes refused a job, or is not there (no sbatch, no cluster configuration)."""

    return_code = 8
