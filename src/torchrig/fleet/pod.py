"""The Kubernetes pod container of a suite: :func:`pod_container` renders a :class:`~torchrig.container.SuiteContainer`.

Its environment (the node's name from the downward API where the description names the node's host), one local
emptyDir per mount of the description, ``/dev/shm``, the PVC at :data:`FLEET_MOUNT`, and the description's user.
:mod:`torchrig.fleet.kubernetes` puts it into the Indexed Job.
"""

from __future__ import annotations

import re
from typing import Any

from torchrig.container import IMAGE_GID, IMAGE_UID, SuiteContainer
from torchrig.fleet.plan import var

__all__ = ["FLEET_MOUNT", "pod_container", "volume_name"]

FLEET_MOUNT = "/fleet"  # where the PVC is mounted in the pods


def volume_name(target: str) -> str:
    """A volume's name from its mount path: ``/results`` -> ``results``."""
    return re.sub(r"[^a-z0-9-]+", "-", target.lower()).strip("-") or "root"


def _env_var(name: str, value: str) -> dict[str, Any]:
    if value == var("host"):  # the node's name, which only the pod can read
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    if "\x00" in value:
        raise ValueError(f"{name}: a node-side placeholder the pod cannot fill ({value!r})")
    return {"name": name, "value": value}


def pod_container(c: SuiteContainer, *, script: str, job: str) -> dict[str, Any]:
    """The pod's container for ``c`` (without resources): its environment (the node's name from the downward
    API), a local emptyDir per mount, ``/dev/shm`` and the PVC at :data:`FLEET_MOUNT`, the image's user."""
    env = [_env_var(k, v) for k, v in c.environment.items()]
    env += [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TORCHRIG_FLEET_JOB", "value": job}]
    uid, _, gid = (c.user or f"{IMAGE_UID}:{IMAGE_GID}").partition(":")
    return {
        "name": "suite",
        "image": c.image,
        # An immutable tag or a digest: Always costs one manifest check and never runs a stale local copy.
        "imagePullPolicy": "Always",
        "command": ["/bin/sh", "-c", script],
        "env": env,
        "workingDir": c.working_dir,
        "volumeMounts": [
            *({"name": volume_name(m.target), "mountPath": m.target, **({"readOnly": True} if m.read_only else {})}
              for m in c.mounts),
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "fleet", "mountPath": FLEET_MOUNT},
        ],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "runAsUser": int(uid), "runAsGroup": int(gid or uid)},
    }
