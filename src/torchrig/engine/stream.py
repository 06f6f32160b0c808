"""Reading Docker's JSON progress streams (build, push, pull): live progress out, errors raised.

docker-py does not raise when a build or push fails: the failure is a ``{"error": ...}`` item inside the stream
(docker/docker-py#3161). These readers are fed the decoded items one by one, print progress as they go, keep the
last log lines, and raise :class:`~torchrig.errors.BuildError` / :class:`~torchrig.errors.RegistryError` with
those lines and a hint when the stream reports an error. They hold no Docker client, so they are tested with
recorded streams. Terminal control sequences in the engine's output (pip's and apt's colours, progress bars,
window titles) are removed before a line is logged or kept (:func:`strip_ansi`).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchrig.errors import BuildError, RegistryError
from torchrig.results.io import Log

__all__ = ["BuildStream", "Step", "TransferStream", "registry_hint", "strip_ansi"]

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILT_RE = re.compile(r"^Successfully built ([0-9a-f]{12,64})\s*$")
# ECMA-48 control sequences: OSC (to BEL or ST, or the end of the line when unterminated, never past it), CSI
# (7- and 8-bit), DCS/SOS/PM/APC strings, the other two- and three-byte escapes, and a lone ESC.
_ANSI_RE = re.compile(
    r"\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|\x1b[PX^_][^\x1b\n]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
)
# Other C0/C1 controls but tab; a carriage return inside a line (a redrawn progress bar) keeps what follows it.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f\x80-\x9f]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tab and newline kept); of a line
    redrawn after a carriage return, only what was drawn last."""
    return "\n".join(_CONTROL_RE.sub("", _last_drawn(line)) for line in _ANSI_RE.sub("", text).split("\n"))


def _last_drawn(line: str) -> str:
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""


def _fmt_seconds(s: float) -> str:
    return f"{int(s) // 60}m{int(s) % 60:02d}s" if s >= 60 else f"{s:.0f}s"


@dataclass(kw_only=True)
class Step:
    number: int
    total: int
    instruction: str
    started: float
    cached: bool = False
    seconds: float = 0.0


@dataclass(kw_only=True)
class BuildStream:
    """Consumes ``client.api.build(..., decode=True)``; ``image_id`` is set when the build succeeded."""

    label: str
    log: Log
    tail_lines: int = 40
    clock: Callable[[], float] = time.monotonic
    image_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start = self.clock()
        self._tail: deque[str] = deque(maxlen=self.tail_lines)
        self._partial = ""

    def consume(self, items: Iterable[Mapping[str, Any]]) -> str:
        """Feed every item; return the image id or raise BuildError."""
        _drain(items, self.feed)
        return self.finish()

    def feed(self, item: Mapping[str, Any]) -> None:
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            message = str(item.get("error") or detail.get("message") or "unknown error").strip()
            self._close_step()
            raise BuildError(self._failure(message))
        aux = item.get("aux")
        if isinstance(aux, Mapping) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = item.get("stream")
        if isinstance(text, str):
            self._text(text)
        status = item.get("status")
        # pulling a missing FROM image: show its status lines, but its per-layer bars are noise here
        if isinstance(status, str) and status.strip() and not item.get("progressDetail"):
            self._line(status.strip())

    def finish(self) -> str:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        self._close_step()
        if self.image_id is None:
            raise BuildError(self._failure("the build stream ended without an image id (the engine closed the "
                                           "connection?)"))
        return self.image_id

    @property
    def elapsed(self) -> float:
        return self.clock() - self._start

    @property
    def tail(self) -> list[str]:
        return list(self._tail)

    # -- internals

    def _text(self, text: str) -> None:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.rstrip("\r"))

    def _line(self, line: str) -> None:
        line = strip_ansi(line)
        if not line.strip():
            return
        self._tail.append(line)
        m = _STEP_RE.match(line)
        if m:
            self._close_step()
            self.steps.append(Step(number=int(m.group(1)), total=int(m.group(2)), instruction=m.group(3),
                                   started=self.clock()))
            self.log(f"[{self.label} {_fmt_seconds(self.elapsed)}] step {m.group(1)}/{m.group(2)}: "
                     f"{_short(m.group(3))}")
            return
        if line.strip() == "---> Using cache" and self.steps:
            self.steps[-1].cached = True
        built = _BUILT_RE.match(line)
        if built and self.image_id is None:
            self.image_id = built.group(1)
        if line.startswith("[Warning]") or line.lower().startswith("warning:"):
            self.warnings.append(line)
        self.log(f"    {line}")

    def _close_step(self) -> None:
        if self.steps and not self.steps[-1].seconds:
            self.steps[-1].seconds = self.clock() - self.steps[-1].started

    def _failure(self, message: str) -> str:
        step = self.steps[-1] if self.steps else None
        where = f" at step {step.number}/{step.total} ({_short(step.instruction, 100)})" if step else ""
        tail = "\n".join(f"  | {line}" for line in self._tail)
        return (f"building {self.label} failed{where} after {_fmt_seconds(self.elapsed)}: {message}\n"
                f"Last lines of the build log:\n{tail}\n"
                "No image was tagged. Fix the cause above and run the build again (cached steps are reused).")


def _drain(items: Iterable[Mapping[str, Any]], feed: Callable[[Mapping[str, Any]], None]) -> None:
    """Feed every item; on the first error keep reading to the end of the stream, then raise it.

    The engine ends the stream right after an error; reading it to the end lets docker-py hand the connection
    back instead of leaving a half-read socket to the garbage collector.
    """
    error: Exception | None = None
    for item in items:
        if error is None:
            try:
                feed(item)
            except (BuildError, RegistryError) as e:
                error = e
    if error is not None:
        raise error


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def registry_hint(registry: str, message: str) -> str:
    """What to do next for a registry error message from the engine."""
    low = message.lower()
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "dial tcp", "no route to host",
                              "connection reset", "eof")):
        return (f"cannot reach registry {registry}: is it running? Set TORCHRIG_REGISTRY to a registry that is "
                "(or an empty value for local names only).")
    if any(s in low for s in ("unauthorized", "authentication required", "denied", "forbidden")):
        return f"registry {registry} refused the credentials: run `docker login {registry}` and try again."
    if "http response to https client" in low or "server gave http response" in low:
        return (f"registry {registry} speaks plain HTTP: add it to the engine's insecure-registries "
                "(/etc/docker/daemon.json) or serve it with TLS.")
    if "manifest unknown" in low or "not found" in low:
        return f"{registry} does not have that image: push it first (`torchrig push ENV`) or check the tag."
    return f"the registry {registry} reported an error."


@dataclass(kw_only=True)
class TransferStream:
    """Consumes ``api.push``/``api.pull(..., stream=True, decode=True)``: per-layer bytes, errors raised."""

    action: str  # "push" | "pull"
    ref: str
    registry: str
    log: Log
    clock: Callable[[], float] = time.monotonic
    every_s: float = 2.0
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer id -> (bytes done, bytes total)
    done: set[str] = field(default_factory=set)
    digest: str | None = None

    def __post_init__(self) -> None:
        self._start = self.clock()
        self._last = -1e9
        self._tail: deque[str] = deque(maxlen=15)

    def consume(self, items: Iterable[Mapping[str, Any]]) -> None:
        _drain(items, self.feed)
        self.summary(final=True)

    def feed(self, item: Mapping[str, Any]) -> None:
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            message = str(item.get("error") or detail.get("message") or "unknown error").strip()
            raise RegistryError(f"{self.action} {self.ref} failed: {registry_hint(self.registry, message)}\n"
                                f"  engine said: {message}")
        status = str(item.get("status") or "")
        layer = item.get("id")
        aux = item.get("aux")
        if isinstance(aux, Mapping) and isinstance(aux.get("Digest"), str):
            self.digest = aux["Digest"]
        m = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
        if m:
            self.digest = m.group(1)
        if status:
            self._tail.append(f"{layer + ': ' if layer else ''}{status}")
        if isinstance(layer, str) and len(layer) >= 12 and re.fullmatch(r"[0-9a-f]+", layer):
            detail = item.get("progressDetail") or {}
            cur, total = self.layers.get(layer, (0, 0))
            if isinstance(detail, Mapping) and detail.get("total"):
                cur, total = int(detail.get("current") or 0), int(detail["total"])
            if status in ("Pushed", "Layer already exists", "Pull complete", "Already exists") or \
                    status.startswith("Mounted from"):
                self.done.add(layer)
                cur = total
                self.log(f"[{self.action} {self.ref}] layer {layer[:12]}: {status}"
                         + (f" ({total / 1e6:.1f} MB)" if total else ""))
            self.layers[layer] = (cur, total)
            self.summary()
        elif status and not status.startswith(("Preparing", "Waiting")):
            self.log(f"[{self.action} {self.ref}] {status}")

    def summary(self, final: bool = False) -> None:
        now = self.clock()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        cur = sum(c for c, _ in self.layers.values())
        total = sum(t for _, t in self.layers.values())
        self.log(f"[{self.action} {self.ref} {_fmt_seconds(now - self._start)}] {len(self.done)}/{len(self.layers)} "
                 f"layers, {cur / 1e6:.1f}/{total / 1e6:.1f} MB transferred"
                 + (f", digest {self.digest}" if final and self.digest else ""))
