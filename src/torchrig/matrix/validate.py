"""Validate a parsed ``matrix.yaml`` against the compat data and build the frozen objects.

Every problem is collected (not only the first); each message names the file, the environment and the key, and
says how to fix it. :func:`torchrig.matrix.load.load_matrix` raises them together as a ConfigurationError.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrig.matrix.compat import Compat, parse_version
from torchrig.matrix.model import (
    ACCELERATORS,
    DEFAULT_PLATFORMS,
    PLATFORMS,
    SCHEMA_VERSION,
    TARGETS,
    Environment,
    Matrix,
    Target,
    requirement_name,
)
from torchrig.matrix.onnx_extras import onnx_extras_problems
from torchrig.matrix.platforms import platform_problems
from torchrig.matrix.references import (
    image_reference_problem,
    index_url_problem,
    registry_problem,
    repository_problem,
)

__all__ = ["Validator", "runtime_pin_problems"]

_SPEC_RE = re.compile(r"(===|==|~=|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)")


def _bounds(requirement: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(operator, version)]`` of a requirement's specifiers (``setuptools>=82,<90`` -> [(">=", (82,)), ...])."""
    spec = re.sub(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?", "", requirement).split(";", 1)[0]
    return [(m.group(1), tuple(int(x) for x in m.group(2).split("."))) for m in _SPEC_RE.finditer(spec)]


def runtime_pin_problems(torch: str, extras: tuple[str, ...] | list[str], compat: Compat) -> list[str]:
    """Extras that contradict a runtime pin compat.yaml gives this torch (``runtime_pins``): e.g. a row pinning
    ``setuptools>=82`` for torch 2.0.1, whose cpp_extension imports the pkg_resources that 82 removed."""
    problems = []
    for pin in compat.pins_for(torch):
        caps = [v for op, v in _bounds(pin.requirement) if op == "<"]  # the pins are upper bounds
        if not caps:
            continue
        cap = min(caps)
        for req in extras:
            if requirement_name(req) != requirement_name(pin.requirement):
                continue
            if any(op in (">=", ">", "==", "===", "~=") and v >= cap for op, v in _bounds(req)):
                problems.append(f"{req!r} contradicts {pin.requirement!r}, which torch {torch} needs "
                                f"({pin.why}; compat.yaml runtime_pins): drop the pin (torchrig adds "
                                f"{pin.requirement!r}) or pin below {'.'.join(map(str, cap))}")
    return problems

_TOP_KEYS = ("schema_version", "registry", "image", "defaults", "environments")
_ENV_KEYS = (
    "id", "description", "accelerator", "torch", "torchvision", "python", "cuda", "rocm",
    "targets", "index", "extra_index", "extras", "size_budget_mb", "dockerfile", "platforms",
)
_DEFAULT_KEYS = tuple(k for k in _ENV_KEYS if k not in ("id", "torch", "accelerator", "cuda", "rocm"))
# Keys whose value may not be empty (null), with an example value for the message.
_REQUIRED_VALUE: dict[str, str] = {
    "accelerator": "cpu", "torch": '"2.0.1"', "torchvision": '"0.15.2"', "python": '"3.11"', "cuda": '"11.8"',
    "rocm": '"5.4.2"', "targets": "{runtime: python:3.11-slim-bookworm}",
    "index": "https://download.pytorch.org/whl/{flavour}", "size_budget_mb": "{runtime: 6000}",
    "dockerfile": "images/Dockerfile", "platforms": "[linux/amd64, linux/arm64]",
}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_TORCH_RE = re.compile(r"^\d+\.\d+\.\d+$")
_PY_RE = re.compile(r"^3\.\d{1,2}$")
_GPU_VER_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")
_REQ_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"  # name[extras]
    r"\s*((===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*"  # version specifiers
    r"(;.*)?$"  # environment marker
)

# ------------------------------------------------------------------------------------------------- loading


# ---------------------------------------------------------------------------------------------- validation


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, 1, 0.6)
    return f" Perhaps you meant {close[0]!r}?" if close else f" Allowed keys: {', '.join(allowed)}."


class Validator:
    def __init__(self, name: str, root: Path, compat: Compat) -> None:
        self.name = name
        self.root = root
        self.compat = compat
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.problems.append(f"{self.name}: {where}: {msg}")

    def _unknown_keys(self, where: str, d: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for k in d:
            if k not in allowed:
                self.err(f"{where}{k}", f"unknown key {k!r}.{_suggest(str(k), allowed)}")

    def _str(self, where: str, value: Any, *, pattern: re.Pattern[str] | None = None, example: str = "") -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            hint = " Write versions quoted: YAML reads an unquoted 3.10 as the number 3.1." \
                if isinstance(value, int | float) else ""
            self.err(where, f"expected a string, got {type(value).__name__} {value!r}.{hint}")
            return None
        if pattern is not None and not pattern.match(value):
            self.err(where, f"{value!r} is not a valid value{f' (expected e.g. {example})' if example else ''}")
            return None
        return value

    def _str_list(self, where: str, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.err(where, f"expected a list of strings, got {value!r}")
            return None
        return tuple(value)

    def matrix(self, data: Any, path: Path) -> Matrix | None:
        if not isinstance(data, dict):
            self.err("top level", f"expected a mapping with keys {', '.join(_TOP_KEYS)}, got {type(data).__name__}")
            return None
        self._unknown_keys("", data, _TOP_KEYS)
        ver = data.get("schema_version", SCHEMA_VERSION)
        if ver != SCHEMA_VERSION:
            self.err("schema_version", f"{ver!r} is not supported; this torchrig reads schema_version {SCHEMA_VERSION}")
        registry = self._str("registry", data.get("registry", "")) or ""
        if problem := registry_problem(registry):
            self.err("registry", problem)
        image = self._str("image", data.get("image", "torchrig")) or "torchrig"
        if problem := repository_problem(image):
            self.err("image", problem)
        defaults = data.get("defaults", {}) or {}
        if not isinstance(defaults, dict):
            self.err("defaults", f"expected a mapping, got {type(defaults).__name__}")
            defaults = {}
        self._unknown_keys("defaults.", defaults, _DEFAULT_KEYS)
        envs_raw = data.get("environments")
        if not isinstance(envs_raw, list) or not envs_raw:
            self.err("environments", "expected a non-empty list of environments (each a mapping with an `id`)")
            return None
        envs: list[Environment] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(envs_raw):
            label = f"environments[{i}]"
            if not isinstance(raw, dict):
                self.err(label, f"expected a mapping, got {type(raw).__name__}")
                continue
            env_id = raw.get("id")
            if not isinstance(env_id, str) or not _ID_RE.match(env_id):
                self.err(f"{label}.id", f"missing or invalid id {env_id!r}: use lower-case letters, digits, '-', '_'")
                continue
            if env_id in seen:
                self.err(f"{env_id}.id", f"duplicate id: environments[{seen[env_id]}] and environments[{i}] are both "
                         f"{env_id!r}; rename one")
                continue
            seen[env_id] = i
            env = self.environment(env_id, raw, defaults, registry, image)
            if env is not None:
                envs.append(env)
        if self.problems:
            return None
        return Matrix(path=path, registry=registry, image=image, environments=tuple(envs),
                      warnings=tuple(self.warnings))

    def environment(self, eid: str, raw: dict[str, Any], defaults: dict[str, Any], registry: str,
                    image: str) -> Environment | None:
        n_before = len(self.problems)
        self._unknown_keys(f"{eid}.", raw, _ENV_KEYS)
        merged = {**defaults, **raw}
        for key in ("targets", "size_budget_mb"):  # per-target mappings merge key by key
            if isinstance(defaults.get(key), dict) and isinstance(raw.get(key), dict):
                merged[key] = {**defaults[key], **raw[key]}

        for key, value in merged.items():  # `torch:` with nothing after it is null in YAML, not "absent"
            if value is None and key in _REQUIRED_VALUE:
                self.err(f"{eid}.{key}", f"has no value: give one (e.g. {key}: {_REQUIRED_VALUE[key]}) "
                         "or remove the key")
        merged = {k: v for k, v in merged.items() if v is not None or k not in _REQUIRED_VALUE}
        if len(self.problems) > n_before:
            return None

        accelerator = merged.get("accelerator")
        if accelerator not in ACCELERATORS:
            close = difflib.get_close_matches(str(accelerator), ACCELERATORS, 1, 0.5)
            hint = f" Perhaps you meant {close[0]!r}?" if close else ""
            self.err(f"{eid}.accelerator", f"{accelerator!r} is not one of {', '.join(ACCELERATORS)}.{hint}")
        torch = self._str(f"{eid}.torch", merged.get("torch"), pattern=_TORCH_RE, example='"2.0.1"')
        if "torch" not in merged:
            self.err(f"{eid}.torch", 'missing: state the exact torch release, e.g. torch: "2.0.1"')
        python = self._str(f"{eid}.python", merged.get("python"), pattern=_PY_RE, example='"3.10"')
        if "python" not in merged:
            self.err(f"{eid}.python", 'missing: state the CPython minor version, e.g. python: "3.10"')
        cuda = self._str(f"{eid}.cuda", merged.get("cuda"), pattern=_GPU_VER_RE, example='"11.8"')
        rocm = self._str(f"{eid}.rocm", merged.get("rocm"), pattern=_GPU_VER_RE, example='"5.4.2"')
        description = self._str(f"{eid}.description", merged.get("description", "")) or ""

        if accelerator == "cuda" and "cuda" not in merged:
            self.err(f"{eid}.cuda", 'missing: a cuda environment states its CUDA version, e.g. cuda: "11.8"')
        if accelerator == "rocm" and "rocm" not in merged:
            self.err(f"{eid}.rocm", 'missing: a rocm environment states its ROCm version, e.g. rocm: "5.4.2"')
        if accelerator != "cuda" and "cuda" in merged:
            self.err(f"{eid}.cuda", f"set, but accelerator is {accelerator!r}: remove it or set accelerator: cuda")
        if accelerator != "rocm" and "rocm" in merged:
            self.err(f"{eid}.rocm", f"set, but accelerator is {accelerator!r}: remove it or set accelerator: rocm")

        torchvision = self._str(f"{eid}.torchvision", merged.get("torchvision"), pattern=_TORCH_RE,
                                example='"0.15.2"')
        release = None
        if torch is not None:
            release = self.compat.release(torch)
            if release is None:
                self.err(f"{eid}.torch", f"torch {torch} is not in torchrig's compatibility table (known: "
                         f"{self.compat.known_range}); pick a known release or add it to compat.yaml")
            elif torch not in release.torchvision:
                known = ", ".join(release.torchvision)
                self.err(f"{eid}.torch", f"torch {torch} is not a known {release.minor} release ({known})")
            else:
                tv = release.torchvision[torch]
                if tv is None:
                    self.err(f"{eid}.torch", f"torch {torch} has no torchvision release yet (compat.yaml); pick "
                             "an earlier torch, or add the pair to compat.yaml once torchvision ships one")
                elif torchvision is not None and torchvision != tv:
                    self.err(f"{eid}.torchvision", f"torchvision {torchvision} does not match torch {torch}; "
                             f"torch {torch} pairs with torchvision {tv} (remove the key to derive it)")
                torchvision = tv
                if not release.confirmed:
                    self.warnings.append(f"{eid}: the compatibility data for torch {release.minor} could not be "
                                         "confirmed against a published source; check the index before relying on it")
        if release is not None and python is not None and not release.python_ok(python):
            self.err(f"{eid}.python", f"torch {torch} has wheels for Python {release.python_min}-"
                     f"{release.python_max}, not {python}; pick a Python in that range or another torch")
        if release is not None and python is not None and release.python_ok(python) and \
                parse_version(python) > parse_version(release.compile_max_python):
            self.warnings.append(f"{eid}: torch.compile in torch {release.minor} supports Python <= "
                                 f"{release.compile_max_python}; with Python {python} only eager mode works")
        if release is not None and cuda is not None and accelerator == "cuda" and cuda not in release.cuda:
            flav = "cu" + cuda.replace(".", "")
            first = self.compat.first_with_cuda(cuda)
            need = f"{flav} needs torch >= {first}.0" if first else f"no torch release in the table offers {flav}"
            if cuda in release.cuda_unadvertised:
                need = f"its {flav} wheels are on the index, but PyTorch neither advertises nor supports them"
            offers = ", ".join("cu" + c.replace(".", "") for c in release.cuda)
            self.err(f"{eid}.cuda", f"torch {torch} has no {flav} build; {need} ({torch} offers {offers})")
        if cuda is not None and accelerator == "cuda" and cuda not in self.compat.driver_min:
            self.err(f"{eid}.cuda", f"CUDA {cuda} has no known minimum driver; known CUDA versions: "
                     f"{', '.join(self.compat.driver_min)}")
        if release is not None and rocm is not None and accelerator == "rocm" and rocm not in release.rocm:
            first = self.compat.first_with_rocm(rocm)
            need = f"rocm{rocm} first shipped with torch {first}" if first else \
                f"PyTorch never shipped a rocm{rocm} build"
            offers = ", ".join("rocm" + r for r in release.rocm) or "no ROCm build known to compat.yaml"
            self.err(f"{eid}.rocm", f"torch {torch} has no rocm{rocm} build; {need} ({torch} offers {offers})")

        targets = self._targets(eid, merged.get("targets"), python=python, torch=torch, cuda=cuda, rocm=rocm,
                                release=release)
        index = self._str(f"{eid}.index", merged.get("index"))
        if index is None and "index" not in merged:
            self.err(f"{eid}.index", "missing: the package index torch comes from "
                     "(e.g. https://download.pytorch.org/whl/{flavour})")
        extra_index = self._str_list(f"{eid}.extra_index", merged.get("extra_index"))
        extras = self._str_list(f"{eid}.extras", merged.get("extras"))
        for req in extras or ():
            if not _REQ_RE.match(req.strip()):
                self.err(f"{eid}.extras", f"{req!r} is not a pip requirement (e.g. 'transformers==4.40.2')")
            elif requirement_name(req) in ("torch", "torchvision"):
                self.err(f"{eid}.extras", f"{req!r}: torch and torchvision are pinned by the `torch` key; "
                         "remove them from extras")
        for msg in onnx_extras_problems(torch, extras or ()) if torch else ():
            self.err(f"{eid}.extras", msg)
        for msg in runtime_pin_problems(torch, extras or (), self.compat) if torch else ():
            self.err(f"{eid}.extras", msg)
        budgets = self._budgets(eid, merged.get("size_budget_mb"))
        platforms = self._platforms(eid, merged.get("platforms", list(DEFAULT_PLATFORMS)))
        dockerfile = self._str(f"{eid}.dockerfile", merged.get("dockerfile", "images/Dockerfile"))
        # lexically (a symlinked images/ folder is fine; `../` or an absolute path elsewhere is not)
        if dockerfile is not None and not Path(os.path.normpath(self.root.absolute() / dockerfile)).is_relative_to(
                Path(os.path.normpath(self.root.absolute()))):
            self.err(f"{eid}.dockerfile", f"{dockerfile!r} is outside the project ({self.root}): the build context "
                     "is the project, so keep the Dockerfile inside it, e.g. images/Dockerfile")
        elif dockerfile is not None and not (self.root / dockerfile).is_file():
            self.err(f"{eid}.dockerfile", f"{dockerfile} does not exist (relative to {self.root})")

        if len(self.problems) > n_before or accelerator not in ACCELERATORS:
            return None
        if not (torch and python and torchvision and index is not None and targets is not None):
            self.err(eid, "incomplete: torch, python, torchvision, index and targets are all needed")
            return None
        fmt = {"python": python, "torch": torch, "cuda": cuda or "", "rocm": rocm or ""}
        env = Environment(
            id=eid, description=description, accelerator=accelerator, torch=torch, torchvision=torchvision,
            python=python, cuda=cuda, rocm=rocm, targets=targets, index="", extra_index=(),
            extras=extras or (), size_budget_mb=budgets or {}, dockerfile=self.root / (dockerfile or ""),
            registry=registry, image=image, platforms=platforms or DEFAULT_PLATFORMS,
        )
        fmt["flavour"] = env.flavour
        try:
            index_url = index.format(**fmt)
            extra = tuple(x.format(**fmt) for x in extra_index or ())
        except (KeyError, IndexError, ValueError) as e:
            self.err(f"{eid}.index",
                     f"bad placeholder {e} (use {{python}}, {{torch}}, {{flavour}}, {{cuda}}, {{rocm}})")
            return None
        for key, url in (("index", index_url), *(("extra_index", x) for x in extra)):
            if problem := index_url_problem(url):
                self.err(f"{eid}.{key}", problem)
        for msg in platform_problems(env.platforms, torch=torch, flavour=env.flavour, index=index_url,
                                     compat=self.compat):
            self.err(f"{eid}.platforms", msg)
        if len(self.problems) > n_before:
            return None
        return Environment(**{**env.__dict__, "index": index_url, "extra_index": extra})

    def _targets(self, eid: str, raw: Any, *, python: str | None, torch: str | None, cuda: str | None,
                 rocm: str | None, release: Any) -> dict[Target, str] | None:
        where = f"{eid}.targets"
        if raw is None:
            self.err(where, "missing: give a base image per target, e.g. {runtime: python:{python}-slim-bookworm}")
            return None
        if not isinstance(raw, dict):
            self.err(where, f"expected a mapping of target -> base image, got {type(raw).__name__}")
            return None
        out: dict[Target, str] = {}
        for tgt, base in raw.items():
            if tgt not in TARGETS:
                self.err(f"{where}.{tgt}", f"unknown target {tgt!r}.{_suggest(str(tgt), TARGETS)}")
                continue
            if base is None:
                continue  # a defaults target switched off for this environment
            b = self._str(f"{where}.{tgt}", base)
            if b is None:
                continue
            try:
                b = b.format(python=python or "", torch=torch or "", cuda=cuda or "", rocm=rocm or "")
            except (KeyError, IndexError, ValueError) as e:
                self.err(f"{where}.{tgt}", f"bad placeholder {e} in {base!r}")
                continue
            if problem := image_reference_problem(b):
                self.err(f"{where}.{tgt}", problem)
                continue
            facts = self.compat.base_image(b)
            if facts is not None and python is not None and facts.python and facts.python != python:
                self.err(f"{where}.{tgt}", f"base image {b} ships Python {facts.python} but python is {python}; "
                         f"use a base with Python {python} or set python: \"{facts.python}\"")
            need = release.needs_glibc if release is not None else None
            if facts is not None and facts.glibc and need and parse_version(facts.glibc) < parse_version(need):
                self.err(f"{where}.{tgt}", f"base image {b} has glibc {facts.glibc}, but torch {torch} wheels are "
                         f"{release.wheel_tag} (glibc >= {need}); use a newer base (e.g. ubuntu22.04)")
            out[tgt] = b
        if "runtime" not in out:
            self.err(f"{where}.runtime", "missing: every environment needs a runtime base image")
            return None
        return out

    def _platforms(self, eid: str, raw: Any) -> tuple[str, ...] | None:
        where = f"{eid}.platforms"
        if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
            self.err(where, f"expected a non-empty list of platforms (e.g. [linux/amd64, linux/arm64]), got {raw!r}")
            return None
        n_before = len(self.problems)
        for p in raw:
            if p not in PLATFORMS:
                close = difflib.get_close_matches(p, PLATFORMS, 1, 0.6)
                hint = f" Perhaps you meant {close[0]!r}?" if close else ""
                self.err(where, f"{p!r} is not a platform torchrig builds; allowed: {', '.join(PLATFORMS)}.{hint}")
        dups = sorted({p for p in raw if raw.count(p) > 1})
        if dups:
            self.err(where, f"{', '.join(dups)} listed more than once; list each platform once")
        return tuple(raw) if len(self.problems) == n_before else None

    def _budgets(self, eid: str, raw: Any) -> dict[Target, int] | None:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.err(f"{eid}.size_budget_mb", f"expected a mapping target -> megabytes, got {raw!r}")
            return None
        out: dict[Target, int] = {}
        for tgt, mb in raw.items():
            if tgt not in TARGETS:
                self.err(f"{eid}.size_budget_mb.{tgt}", f"unknown target {tgt!r}.{_suggest(str(tgt), TARGETS)}")
            elif not isinstance(mb, int) or isinstance(mb, bool) or mb <= 0:
                self.err(f"{eid}.size_budget_mb.{tgt}", f"expected a positive integer (MB), got {mb!r}")
            else:
                out[tgt] = mb
        return out
