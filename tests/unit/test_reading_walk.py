"""Every file a user can point torchrig at goes through the reading layer (torchrig.results.reading: special files
refused, size caps, strict UTF-8, bounded JSON) or the safe YAML loader (torchrig.matrix.yamlsafe).

This walks src/torchrig, tasks and bench and fails on any other file read -- ``open()``, ``Path.open/read_text/
read_bytes``, ``json.load``, ``yaml.*load`` -- unless it is listed below with the reason it is not user-supplied.
So the next reader someone writes is covered too: either it uses the layer, or it says here why it need not.
(Unsafe deserialisation -- pickle, torch.load, eval -- has its own walk: tests/tasks/test_task_no_unsafe_loads.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src/torchrig", "tasks", "bench")
_READ_ATTRS = {"read_text", "read_bytes", "open"}
_NOT_FILES = {"tarfile", "os", "io", "gzip", "zipfile", "webbrowser"}  # tarfile.open(..., "w"), os.open(devnull)

# (module, function) -> why this read needs no reading layer
ALLOWED: dict[tuple[str, str], str] = {
    ("src/torchrig/results/io.py", "file_sha256"): "hashes in 1 MiB chunks (bounded memory) files torchrig has "
                                                  "already found as regular files",
    ("src/torchrig/results/probe.py", "gpu_driver"): "/proc/driver/nvidia and /sys/module/amdgpu: kernel files",
    ("src/torchrig/results/probe.py", "_cpu_model"): "/proc/cpuinfo",
    ("tasks/_torchsupport.py", "available_cpus"): "/sys/fs/cgroup/cpu.max",
    ("tasks/_torchsupport.py", "_missing_nvidia"): "/proc/driver/nvidia/version",
    ("src/torchrig/config/files.py", "_read_toml"): "stat()s for a regular file and its 1 MiB cap, then reads at "
                                                   "most cap+1 bytes (the same rules, kept local for the 3.10 tomli "
                                                   "fallback)",
    ("src/torchrig/config/files.py", "write_setting"): "rewrites torchrig.toml after _read_toml has checked it",
    ("src/torchrig/images/base.py", "host_mirror"): "the host's own /etc/apt sources",
    ("src/torchrig/images/context.py", "assemble"): "the checkout's files that go into the build context",
    ("src/torchrig/images/plan.py", "plan_build"): "the project's Dockerfile and the installer lock shipped with it",
    ("src/torchrig/images/plan.py", "dockerfile_stage"): "the project's Dockerfile",
    ("src/torchrig/images/uvlock.py", "resolve"): "uv's output, written a moment ago into torchrig's own temp dir",
    ("src/torchrig/images/uvlock.py", "write_installer_lock"): "uv's output in torchrig's own temp dir",
    ("src/torchrig/matrix/devcontainer.py", "write_devcontainers"): "compares files torchrig generates",
    ("src/torchrig/matrix/devcontainer.py", "stale_devcontainers"): "compares files torchrig generates",
    ("src/torchrig/cli/run.py", "_devcontainer"): "compares files torchrig generates",
    ("src/torchrig/report/html.py", "render_html"): "the chart PNGs this same report just wrote",
    ("tasks/sentiment_data.py", "load_labelled_sentences"): "the sentences shipped in tasks/data, sha256-checked "
                                                           "before they are read",
    ("bench/ddp_worker.py", "launch"): "the JSON the worker this process started wrote into its temp dir",
    ("bench/peaks.py", "load_peaks"): "bench/gpu_peaks.json, packaged with the suite",
    ("src/torchrig/images/base.py", "require_emulation"): "/proc/sys/fs/binfmt_misc/qemu-*: kernel files",
    ("tasks/export_prune.py", "_sizes"): "the ONNX file this task exported a moment ago into its own output dir",
    ("bench/load.py", "_descendants_cpu_s"): "/proc/PID/stat: kernel files",
    ("bench/load.py", "_proc_stat"): "/proc/stat: a kernel file",
}


def file_reads(source: str) -> list[tuple[str, str, int]]:
    """(enclosing function, what, line) of every file read in ``source``."""
    out: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                fn, hit = child.func, None
                if isinstance(fn, ast.Name) and fn.id == "open":
                    hit = "open()"
                elif isinstance(fn, ast.Attribute) and fn.attr in _READ_ATTRS:
                    if not (isinstance(fn.value, ast.Name) and fn.value.id in _NOT_FILES):
                        hit = f".{fn.attr}()"
                elif (isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name)
                      and (fn.value.id, fn.attr) in {("json", "load"), ("yaml", "load"), ("yaml", "safe_load"),
                                                     ("yaml", "unsafe_load"), ("yaml", "full_load")}):
                    hit = f"{fn.value.id}.{fn.attr}()"
                if hit:
                    out.append((here, hit, child.lineno))
            visit(child, here)

    visit(ast.parse(source), "<module>")
    return out


def _modules() -> list[Path]:
    layer = {ROOT / "src/torchrig/results/reading.py", ROOT / "src/torchrig/matrix/yamlsafe.py"}
    return [p for d in FOLDERS for p in sorted((ROOT / d).rglob("*.py")) if p not in layer]


def test_the_walk_finds_every_kind_of_read() -> None:
    src = ("import json, yaml, tarfile, os\nfrom pathlib import Path\n"
           "def a(p): return open(p).read()\n"
           "def b(p): return Path(p).read_text()\n"
           "def c(p): return p.read_bytes()\n"
           "def d(p):\n    with p.open() as f: return json.load(f)\n"
           "def e(t): return yaml.safe_load(t)\n"
           "def fine(p): tarfile.open(p, 'w'); os.open(p, 0); return json.loads('{}')\n")
    found = {(f, what) for f, what, _ in file_reads(src)}
    assert found == {("a", "open()"), ("b", ".read_text()"), ("c", ".read_bytes()"), ("d", ".open()"),
                     ("d", "json.load()"), ("e", "yaml.safe_load()")}


def test_every_file_read_goes_through_the_reading_layer_or_says_why_not() -> None:
    unlisted, seen = [], set()
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        for func, what, line in file_reads(path.read_text(encoding="utf-8")):
            seen.add((rel, func))
            if (rel, func) not in ALLOWED:
                unlisted.append(f"{rel}:{line} {func}: {what}")
    assert not unlisted, ("read through torchrig.results.reading (read_text/read_bytes/read_json/tail_lines) or "
                          "torchrig.matrix.yamlsafe, or add the read to ALLOWED with the reason it is not "
                          "user-supplied:\n  " + "\n  ".join(unlisted))
    stale = sorted(set(ALLOWED) - seen)
    assert not stale, f"ALLOWED names reads that no longer exist (remove them): {stale}"
