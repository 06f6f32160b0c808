"""What a scheduler says about each element of a fleet job, in one shape for Slurm and Kubernetes."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FAILED_STATES", "RUNNING_STATES", "ElementState", "parse_duration"]

# Slurm's job states (Kubernetes pods are mapped onto the same words). Anything not listed as running or pending
# is final; of the final ones only COMPLETED with exit code 0 is a success.
RUNNING_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING",
                            "REQUEUE_FED", "REQUEUE_HOLD", "SIGNALING", "STAGE_OUT", "STOPPED"})
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                           "PREEMPTED", "REVOKED", "SPECIAL_EXIT"})

_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?$")


def parse_duration(text: str) -> float | None:
    """Slurm's elapsed time (``[D-][HH:]MM:SS``) in seconds; None for ``Unknown``/``INVALID``/empty."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass(frozen=True, kw_only=True)
class ElementState:
    """One array element (Slurm) or completion index (Kubernetes): one node's run."""

    index: int
    state: str  # the scheduler's word, e.g. COMPLETED, FAILED, OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, RUNNING
    exit_code: int | None = None
    signal: int | None = None
    elapsed_s: float | None = None
    node: str | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.state not in RUNNING_STATES

    @property
    def failed(self) -> bool:
        return self.done and (self.state != "COMPLETED" or bool(self.exit_code) or bool(self.signal))

    def why(self) -> str:
        """What ended it, for the list of failed nodes: the state, exit code, signal and the scheduler's reason."""
        parts = [self.state]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.signal:
            parts.append(f"signal {self.signal}")
        if self.reason and self.reason not in ("None", "NonZeroExitCode"):
            parts.append(f"reason {self.reason}")
        return ", ".join(parts)
