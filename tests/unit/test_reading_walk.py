"""Every file a user can point torchrig at goes through the reading layer (torchrig.results.reading: special files
refused, size caps, strict UTF-8, bounded JSON) or the safe YAML loader (torchrig.matrix.yamlsafe).

This walks src/torchrig, tasks, bench and noxfile.py and fails on any other file read, found by the AST with the
module's imports resolved (``import gzip as gz``, ``from builtins import open as o``, ``from pathlib import Path``):

- the openers: ``open``/``builtins.open``, ``io.open``/``io.FileIO``/``io.open_code``, ``codecs.open``, ``os.open``,
  ``gzip``/``bz2``/``lzma`` ``.open`` and their file classes, ``zipfile.ZipFile``, ``tarfile.open``/``TarFile``,
  ``fileinput.input``, and ``.open()``/``.read_text()``/``.read_bytes()`` on anything (``Path(p).open()``);
- the parsers and copiers that read a file object or path: ``json.load``, every ``yaml`` loader, ``pickle.load``,
  ``tomllib.load``, ``numpy.load``/``loadtxt``/``genfromtxt``/``fromfile``, ``torch.load``, ``safetensors``,
  ``pandas.read_*``, ``onnx.load``, ``onnxruntime.InferenceSession``, ``.from_pretrained``,
  ``shutil.copyfileobj``;
- any of these held under another name (``o = open``, ``rd = p.read_text``, ``functools.partial(open, ...)``) and
  then called, or handed on as a value (``map(open, paths)``).

An opener with a constant write-only mode (``open(p, "w")``, ``tarfile.open(p, "w:gz")``, ``os.open(p,
os.O_WRONLY | ...)``) is a write and passes. Anything else is listed in :data:`ALLOWED` **per call site**: module,
function (its qualified name), callee, how many such calls, and why the file is not user-supplied. A second read
in an allowed function is a new site and fails; an entry that matches fewer sites than it says is stale and fails.
(Unsafe deserialisation -- pickle, torch.load, eval -- has its own walk: tests/tasks/test_task_no_unsafe_loads.py.)
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src/torchrig", "tasks", "bench")
FILES = ("noxfile.py",)
LAYER = ("src/torchrig/results/reading.py", "src/torchrig/matrix/yamlsafe.py")

_METHODS = {"read_text", "read_bytes", "open", "from_pretrained"}  # on any object: Path, a zip member, PIL's Image,
# a transformers model class (reads a model directory)
READERS = {
    "builtins.open", "io.open", "io.open_code", "io.FileIO", "_io.open", "codecs.open", "os.open", "fileinput.input",
    "gzip.open", "gzip.GzipFile", "bz2.open", "bz2.BZ2File", "lzma.open", "lzma.LZMAFile",
    "zipfile.ZipFile", "zipfile.Path", "tarfile.open", "tarfile.TarFile", "tarfile.TarFile.open",
    "json.load", "pickle.load", "pickle.Unpickler", "tomllib.load", "tomli.load", "marshal.load",
    "yaml.load", "yaml.safe_load", "yaml.full_load", "yaml.unsafe_load",
    "yaml.load_all", "yaml.safe_load_all", "yaml.full_load_all", "yaml.unsafe_load_all",
    "numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "torch.load",
    "safetensors.torch.load_file", "safetensors.safe_open", "safetensors.numpy.load_file",
    "pandas.read_csv", "pandas.read_json", "pandas.read_parquet", "pandas.read_table", "pandas.read_pickle",
    "shutil.copyfileobj", "onnx.load", "onnx.load_model", "onnxruntime.InferenceSession",
}
_NOT_FILES = {"webbrowser"}  # webbrowser.open(url)
_MODE_AT = {  # opener -> position of its mode argument; a constant write-only mode is a write, not a read
    "builtins.open": 1, "io.open": 1, "_io.open": 1, "codecs.open": 1, "io.FileIO": 1, "gzip.open": 1,
    "gzip.GzipFile": 1, "bz2.open": 1, "bz2.BZ2File": 1, "lzma.open": 1, "lzma.LZMAFile": 1, ".open": 0,
    "zipfile.ZipFile": 1, "tarfile.open": 1, "tarfile.TarFile": 1,
}
_ARCHIVES = {"zipfile.ZipFile", "tarfile.open", "tarfile.TarFile"}  # their "a" mode reads the archive first


@dataclass(frozen=True)
class Read:
    func: str  # qualified name of the enclosing function ("Class.method", "outer.inner", "<module>")
    callee: str  # "builtins.open", "gzip.open", ".read_text" (a method on anything), ...
    line: int
    how: str = "call"  # "call"; "value": handed on without being called here; "subclass": a base class


def _written(callee: str, call: ast.Call) -> bool:
    """Whether ``call`` opens for writing only (so reads nothing): a constant mode, or os.open's flags."""
    if callee == "os.open":
        flags = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "flags"),
                                                             None)
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(flags)
                 if isinstance(n, (ast.Attribute, ast.Name))} if flags is not None else set()
        return "O_WRONLY" in names and "O_RDWR" not in names
    at = _MODE_AT.get(callee)
    if at is None:
        return False
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None and len(call.args) > at:
        mode = call.args[at]
    if mode is None:
        return False  # the default mode reads
    if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
        return False  # a mode we cannot see may read
    m = mode.value
    if callee in _ARCHIVES:
        return m[:1] in ("w", "x")
    return "r" not in m and "+" not in m and bool(m)


class _Walker(ast.NodeVisitor):
    def __init__(self, tree: ast.Module) -> None:
        self.names: dict[str, str] = {}  # local name -> what it was imported as
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self.names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.names[a.asname or a.name] = f"{node.module}.{a.name}"
        self.aliases: dict[str, str] = {}  # local name -> the reader it holds (o = open; rd = p.read_text)
        self.stack: list[str] = []
        self.found: list[Read] = []
        self._callees: set[int] = set()  # ids of nodes that are a call's func (not "handed on")
        for node in ast.walk(tree):  # annotations name types (tarfile.TarFile), they open nothing
            notes = [node.annotation] if isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation else []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
                notes.append(node.returns)
            self._callees.update(id(n) for note in notes for n in ast.walk(note))

    # ------------------------------------------------------------------ naming
    def qualify(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            return "builtins.open" if node.id == "open" else node.id
        if isinstance(node, ast.Attribute):
            base = self.qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def reader(self, node: ast.AST) -> str | None:
        """The reader ``node`` names (a callee or a value), or None."""
        if isinstance(node, ast.Name) and node.id in self.aliases:
            return self.aliases[node.id]
        q = self.qualify(node)
        if q in READERS:
            return q
        if isinstance(node, ast.Attribute) and node.attr in _METHODS:
            root = q.split(".")[0] if q else None
            if root in _NOT_FILES:
                return None
            local = node.value
            while isinstance(local, ast.Attribute):
                local = local.value
            imported = isinstance(local, ast.Name) and local.id in self.names
            if q and imported and node.attr == "open" and not q.startswith("pathlib."):
                return q  # an imported module's own opener: PIL.Image.open, ...
            return f".{node.attr}"  # a method on anything: Path(p).open(), zf.open(name), p.read_text()
        return None

    # ------------------------------------------------------------------ scopes
    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for base in node.bases if isinstance(node, ast.ClassDef) else []:
            r = self.reader(base)
            if r:  # class U(pickle.Unpickler): a reader of its own
                self.found.append(Read(self.func, r, base.lineno, "subclass"))
                self._callees.add(id(base))
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    @property
    def func(self) -> str:
        return ".".join(self.stack) or "<module>"

    # ------------------------------------------------------------------ aliases and calls
    def _held(self, value: ast.AST) -> tuple[str | None, ast.AST]:
        """The reader an assigned value holds (``open``, ``p.read_text``, ``partial(open, ...)``) and its node."""
        if isinstance(value, ast.Call) and self.qualify(value.func) in ("functools.partial", "partial") \
                and value.args:
            return self.reader(value.args[0]), value.args[0]
        return self.reader(value), value

    def collect_aliases(self, tree: ast.Module) -> None:
        """Names that hold a reader, wherever they are bound (so a use above the binding is seen too)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                held, _ = self._held(node.value)
                for t in node.targets:
                    if held and isinstance(t, ast.Name):
                        self.aliases[t.id] = held

    def visit_Assign(self, node: ast.Assign) -> None:
        held, where = self._held(node.value)
        if held and all(isinstance(t, ast.Name) for t in node.targets):
            self._callees.add(id(where))  # reported where the name is called or handed on, not here
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self._callees.add(id(node.func))
        callee = self.reader(node.func)
        if callee and not _written(callee, node):
            self.found.append(Read(self.func, callee, node.lineno))
        self.generic_visit(node)

    def _value(self, node: ast.Name | ast.Attribute) -> None:
        if id(node) in self._callees:
            if isinstance(node, ast.Attribute):
                self._callees.add(id(node.value))  # TarFile in TarFile.open(p) is part of the callee's name
        elif isinstance(node.ctx, ast.Load):
            r = self.reader(node)
            if r:
                self.found.append(Read(self.func, r, node.lineno, "value"))
                return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self._value(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._value(node)

    def visit_Import(self, node: ast.Import) -> None:  # names in imports are not values
        pass

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        pass


def file_reads(source: str) -> list[Read]:
    """Every file read in ``source``, in order."""
    tree = ast.parse(source)
    w = _Walker(tree)
    w.collect_aliases(tree)
    w.visit(tree)
    return sorted(w.found, key=lambda r: r.line)


@dataclass(frozen=True)
class Allow:
    module: str
    func: str
    callee: str
    why: str
    sites: int = 1  # how many such calls the function makes; one more is a new site


_TMP_UV = "uv's output, written a moment ago into torchrig's own temp dir"
_GENERATED = "compares files torchrig generates"
_ONNX = "the ONNX file this task exported a moment ago into its own output dir"
ALLOWED: tuple[Allow, ...] = (
    Allow("src/torchrig/results/io.py", "file_sha256", "builtins.open",
          "hashes in 1 MiB chunks (bounded memory) files torchrig has already found as regular files"),
    Allow("src/torchrig/results/probe.py", "gpu_driver", ".read_text",
          "/proc/driver/nvidia and /sys/module/amdgpu: kernel files", sites=2),
    Allow("src/torchrig/results/probe.py", "_cpu_model", ".read_text", "/proc/cpuinfo"),
    Allow("tasks/_torchsupport.py", "available_cpus", ".read_text", "/sys/fs/cgroup/cpu.max"),
    Allow("tasks/_torchsupport.py", "_missing_nvidia", ".read_text", "/proc/driver/nvidia/version"),
    Allow("src/torchrig/config/files.py", "_read_toml", ".open",
          "stat()s for a regular file and its 1 MiB cap, then reads at most cap+1 bytes (the same rules, kept local "
          "for the 3.10 tomli fallback)"),
    Allow("src/torchrig/config/files.py", "write_setting", ".read_text",
          "rewrites torchrig.toml after _read_toml has checked it"),
    Allow("src/torchrig/images/base.py", "host_mirror", ".read_text", "the host's own /etc/apt sources"),
    Allow("src/torchrig/images/base.py", "require_emulation", ".read_text",
          "/proc/sys/fs/binfmt_misc/qemu-*: kernel files"),
    Allow("src/torchrig/images/context.py", "assemble", ".read_bytes",
          "the checkout's files that go into the build context (build-env.sh, its helpers, the code folders; "
          "each is_file() first, so a FIFO is skipped)", sites=3),
    Allow("src/torchrig/images/plan.py", "plan_build", ".read_text",
          "the project's Dockerfile and the installer lock shipped with it", sites=2),
    Allow("src/torchrig/images/plan.py", "dockerfile_stage", ".read_text", "the project's Dockerfile"),
    Allow("src/torchrig/images/uvlock.py", "resolve", ".read_text", _TMP_UV, sites=2),
    Allow("src/torchrig/images/uvlock.py", "write_installer_lock", ".read_text", _TMP_UV),
    Allow("src/torchrig/matrix/devcontainer.py", "write_devcontainers", ".read_text", _GENERATED),
    Allow("src/torchrig/matrix/devcontainer.py", "stale_devcontainers", ".read_text", _GENERATED),
    Allow("src/torchrig/cli/run.py", "_devcontainer", ".read_text", _GENERATED),
    Allow("src/torchrig/report/html.py", "render_html", ".read_bytes",
          "the chart PNGs this same report just wrote"),
    Allow("tasks/sentiment_data.py", "load_labelled_sentences", ".open",
          "the sentences shipped in tasks/data, sha256-checked before they are read"),
    Allow("bench/ddp_worker.py", "launch", ".read_text",
          "the JSON the worker this process started wrote into its temp dir"),
    Allow("bench/peaks.py", "load_peaks", ".read_text", "bench/gpu_peaks.json, packaged with the suite"),
    Allow("tasks/export_prune.py", "_sizes", ".read_bytes", _ONNX),
    Allow("tasks/cifar_files.py", "<module>", "pickle.Unpickler",
          "RestrictedUnpickler: unpickles bytes read_file() got through the reading layer, admitting only the "
          "CIFAR-10 format's globals (tests/tasks/test_task_no_unsafe_loads.py)"),
    Allow("src/torchrig/images/base_archive.py", "_uncompressed_sha256", "gzip.open",
          "the rootfs tarball torchrig's own debootstrap wrote into its cache, hashed in 1 MiB chunks"),
    Allow("tasks/bert_classifier.py", "load_model", ".from_pretrained",
          "a model checkpoint (--model DIR, GBs: past any reading-layer cap) read by transformers: weights from "
          "safetensors only, never the checkpoint's code (tests/tasks/test_task_no_unsafe_loads.py)", sites=2),
    Allow("tasks/export_onnx.py", "export", "onnx.load", _ONNX),
    Allow("tasks/export_onnx.py", "perturb_one_weight", "onnx.load", _ONNX),
    Allow("tasks/export_onnx.py", "session", "onnxruntime.InferenceSession", _ONNX),
    Allow("tasks/export_prune.py", "onnx_sparsity", "onnx.load", _ONNX),
    Allow("bench/load.py", "_descendants_cpu_s", "builtins.open", "/proc/PID/stat: kernel files"),
    Allow("bench/load.py", "_proc_stat", "builtins.open", "/proc/stat: a kernel file"),
    Allow("noxfile.py", "_front_door", ".read_text", "the stamp file nox itself wrote into its own venv"),
    Allow("noxfile.py", "_checkov_venv", ".read_text", "the stamp file nox itself wrote into its own venv"),
)


def _modules() -> list[Path]:
    layer = {ROOT / p for p in LAYER}
    paths = [p for d in FOLDERS for p in sorted((ROOT / d).rglob("*.py"))] + [ROOT / f for f in FILES]
    return [p for p in paths if p not in layer]


@functools.cache
def _sites() -> dict[tuple[str, str, str], list[Read]]:
    out: dict[tuple[str, str, str], list[Read]] = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        for r in file_reads(path.read_text(encoding="utf-8")):
            out.setdefault((rel, r.func, r.callee), []).append(r)
    return out


def test_the_walk_covers_the_package_tasks_bench_and_nox() -> None:
    rels = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert len(rels) > 120 and "noxfile.py" in rels and not set(LAYER) & rels
    for folder in FOLDERS:
        assert sum(r.startswith(folder + "/") for r in rels) > 10, folder
    assert {"tasks/__main__.py", "bench/__main__.py", "src/torchrig/cli/fleet.py"} <= rels
    # the layer itself is left out because it is the layer, not because the walk cannot see its reads
    assert {r.callee for r in file_reads((ROOT / LAYER[0]).read_text(encoding="utf-8"))} == {"os.open"}


def test_every_file_read_goes_through_the_reading_layer_or_says_why_not() -> None:
    allowed = Counter({(a.module, a.func, a.callee): a.sites for a in ALLOWED})
    unlisted = [f"{rel}:{r.line} {func}: {callee}{'()' if r.how == 'call' else f' ({r.how})'}"
                for (rel, func, callee), reads in sorted(_sites().items())
                for r in reads[allowed[(rel, func, callee)]:]]
    assert not unlisted, ("read through torchrig.results.reading (read_text/read_bytes/read_json/tail_lines) or "
                          "torchrig.matrix.yamlsafe, or add the call site to ALLOWED with the reason it is not "
                          "user-supplied:\n  " + "\n  ".join(unlisted))


def test_every_allowed_site_still_exists() -> None:
    """An entry that matches fewer calls than it says is stale: remove it (or lower ``sites``)."""
    sites = _sites()
    keys = [(a.module, a.func, a.callee) for a in ALLOWED]
    assert len(keys) == len(set(keys)), "an ALLOWED site is listed twice"
    stale = [f"{a.module} {a.func}: {a.callee} x{a.sites} (found {len(sites.get((a.module, a.func, a.callee), []))})"
             for a in ALLOWED if len(sites.get((a.module, a.func, a.callee), [])) < a.sites]
    assert not stale, "ALLOWED names reads that no longer exist:\n  " + "\n  ".join(stale)
    assert all(a.why.strip() for a in ALLOWED)


# --------------------------------------------------------------------------- the walk, over synthetic modules

# (source, the reads it must report as {(func, callee)}); each forbidden shape, then the shapes that pass.
FORBIDDEN = [
    ("def f(p): return open(p).read()", {("f", "builtins.open")}),
    ("import builtins\ndef f(p): return builtins.open(p)", {("f", "builtins.open")}),
    ("from builtins import open as o\ndef f(p): return o(p)", {("f", "builtins.open")}),
    ("import io\ndef f(p): return io.open(p, 'rb')", {("f", "io.open")}),
    ("from io import open\ndef f(p): return open(p)", {("f", "io.open")}),
    ("import io\ndef f(p): return io.FileIO(p)", {("f", "io.FileIO")}),
    ("import gzip\ndef f(p): return gzip.open(p).read()", {("f", "gzip.open")}),
    ("import gzip as gz\ndef f(p): return gz.open(p, 'rt')", {("f", "gzip.open")}),
    ("from gzip import GzipFile\ndef f(p): return GzipFile(p)", {("f", "gzip.GzipFile")}),
    ("import bz2\ndef f(p): return bz2.open(p)", {("f", "bz2.open")}),
    ("import lzma\ndef f(p): return lzma.open(p, mode='r')", {("f", "lzma.open")}),
    ("import zipfile\ndef f(p): return zipfile.ZipFile(p)", {("f", "zipfile.ZipFile")}),
    ("import zipfile\ndef f(p): return zipfile.ZipFile(p, 'a')", {("f", "zipfile.ZipFile")}),
    ("import tarfile\ndef f(p): return tarfile.open(p)", {("f", "tarfile.open")}),
    ("import tarfile\ndef f(p): return tarfile.open(p, 'r:gz')", {("f", "tarfile.open")}),
    ("from tarfile import TarFile\ndef f(p): return TarFile.open(p)", {("f", "tarfile.TarFile.open")}),
    ("import codecs\ndef f(p): return codecs.open(p, encoding='utf-8')", {("f", "codecs.open")}),
    ("import os\ndef f(p): return os.open(p, os.O_RDONLY)", {("f", "os.open")}),
    ("import os\ndef f(p, flags): return os.open(p, flags)", {("f", "os.open")}),
    ("import os\ndef f(p): return os.open(p, os.O_RDWR | os.O_CREAT)", {("f", "os.open")}),
    ("from os import open as osopen\ndef f(p): return osopen(p, 0)", {("f", "os.open")}),
    ("import fileinput\ndef f(p): return list(fileinput.input(p))", {("f", "fileinput.input")}),
    ("from pathlib import Path\ndef f(p): return Path(p).read_text()", {("f", ".read_text")}),
    ("from pathlib import Path as P\ndef f(p): return P(p).open()", {("f", ".open")}),
    ("import pathlib\ndef f(p): return pathlib.Path(p).read_bytes()", {("f", ".read_bytes")}),
    ("from pathlib import Path\ndef f(p): return Path.read_text(p)", {("f", ".read_text")}),
    ("def f(p):\n    with p.open(mode) as fh: return fh.read()", {("f", ".open")}),
    ("def f(p): return p.open('r+')", {("f", ".open")}),
    ("from PIL import Image\ndef f(p): return Image.open(p)", {("f", "PIL.Image.open")}),
    ("import json\ndef f(fh): return json.load(fh)", {("f", "json.load")}),
    ("from json import load\ndef f(fh): return load(fh)", {("f", "json.load")}),
    ("import yaml\ndef f(t): return yaml.safe_load(t)", {("f", "yaml.safe_load")}),
    ("import yaml\ndef f(fh): return list(yaml.safe_load_all(fh))", {("f", "yaml.safe_load_all")}),
    ("import yaml\ndef f(fh): return yaml.load(fh, Loader=yaml.SafeLoader)", {("f", "yaml.load")}),
    ("import pickle\ndef f(fh): return pickle.load(fh)", {("f", "pickle.load")}),
    ("import tomllib\ndef f(fh): return tomllib.load(fh)", {("f", "tomllib.load")}),
    ("import numpy as np\ndef f(fh): return np.load(fh)", {("f", "numpy.load")}),
    ("import numpy\ndef f(p): return numpy.loadtxt(p)", {("f", "numpy.loadtxt")}),
    ("import torch\ndef f(fh): return torch.load(fh, weights_only=True)", {("f", "torch.load")}),
    ("from safetensors.torch import load_file\ndef f(p): return load_file(p)", {("f", "safetensors.torch.load_file")}),
    ("import pandas as pd\ndef f(p): return pd.read_csv(p)", {("f", "pandas.read_csv")}),
    ("import shutil\ndef f(a, b): shutil.copyfileobj(a, b)", {("f", "shutil.copyfileobj")}),
    ("import onnx\ndef f(p): return onnx.load(str(p))", {("f", "onnx.load")}),
    ("def f(p):\n    import onnxruntime as ort\n    return ort.InferenceSession(p)",
     {("f", "onnxruntime.InferenceSession")}),
    ("from transformers import AutoModel\ndef f(d): return AutoModel.from_pretrained(d)", {("f", ".from_pretrained")}),
    # held under another name, then called
    ("def f(p):\n    o = open\n    return o(p)", {("f", "builtins.open")}),
    ("import io\nOPEN = io.open\ndef f(p): return OPEN(p)", {("f", "io.open")}),
    ("def f(p):\n    rd = p.read_text\n    return rd()", {("f", ".read_text")}),
    ("import functools\ndef f(p):\n    o = functools.partial(open, encoding='utf-8')\n    return o(p)",
     {("f", "builtins.open")}),
    # handed on as a value
    ("def f(ps): return list(map(open, ps))", {("f", "builtins.open")}),
    ("import json\ndef f(fh, g): return g(json.load, fh)", {("f", "json.load")}),
    ("from pathlib import Path\ndef f(ps): return sorted(ps, key=Path.read_text)", {("f", ".read_text")}),
    # where it sits: a method, a nested function, the module, a lambda
    ("class C:\n    def m(self, p): return open(p)", {("C.m", "builtins.open")}),
    ("def outer():\n    def inner(p): return open(p)\n    return inner", {("outer.inner", "builtins.open")}),
    ("import sys\nDATA = open(sys.argv[1]).read()", {("<module>", "builtins.open")}),
    ("def f(ps): return [(lambda q: q.read_bytes())(p) for p in ps]", {("f", ".read_bytes")}),
]
ALLOWED_SHAPES = [
    "def f(p): open(p, 'w').write('x')",
    "def f(p): open(p, mode='ab').write(b'x')",
    "def f(p): p.open('w')",
    "import gzip\ndef f(p): gzip.open(p, 'wt')",
    "import tarfile\ndef f(p): tarfile.open(p, 'w:gz')",
    "import tarfile\ndef f(p): tarfile.open(p, mode='x')",
    "import zipfile\ndef f(p): zipfile.ZipFile(p, 'w')",
    "import os\ndef f(p): os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)",
    "import os\ndef f(p): return os.path.exists(p) and p.write_text('x')",
    "import json\ndef f(t): return json.loads(t)",
    "import json\ndef f(v, fh): json.dump(v, fh)",
    "import webbrowser\ndef f(u): webbrowser.open(u)",
    "from torchrig.results.reading import read_text, read_json\ndef f(p): return read_text(p, kind='x'), "
    "read_json(p, kind='record')",
    "from torchrig.matrix.yamlsafe import load_yaml\ndef f(p): return load_yaml(p)",
    "import yaml\ndef f(v): return yaml.safe_dump(v)",
    "def f(opened): return opened",
    "import io\ndef f(b): return io.BytesIO(b).read()",
]


@pytest.mark.parametrize(("source", "expected"), FORBIDDEN, ids=[s.splitlines()[-1][:50] for s, _ in FORBIDDEN])
def test_the_walk_flags_each_forbidden_shape(source: str, expected: set[tuple[str, str]]) -> None:
    assert {(r.func, r.callee) for r in file_reads(source)} == expected


@pytest.mark.parametrize("source", ALLOWED_SHAPES, ids=[s.splitlines()[-1][:50] for s in ALLOWED_SHAPES])
def test_the_walk_passes_writes_and_the_reading_layer(source: str) -> None:
    assert file_reads(source) == []


def test_a_second_read_in_an_allowed_function_is_a_new_site() -> None:
    """The allow-list counts call sites: the same function reading twice needs ``sites=2``."""
    one = file_reads("def gpu_driver(p):\n    return p.read_text()\n")
    two = file_reads("def gpu_driver(p):\n    a = p.read_text()\n    return a + open(p).read() + p.read_text()\n")
    assert [(r.func, r.callee) for r in one] == [("gpu_driver", ".read_text")]
    assert Counter((r.func, r.callee) for r in two) == {("gpu_driver", ".read_text"): 2,
                                                        ("gpu_driver", "builtins.open"): 1}
    assert [r.line for r in two] == [2, 3, 3]
