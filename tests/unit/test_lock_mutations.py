"""Locks checked as well as dated: mutations of the committed locks (hashes broken, lines dropped, pins changed,
headers swapped, garbage, CRLF, a BOM) are reported stale or invalid with a reason, never fresh when broken, and
never a traceback. The baselines are the committed locks' bodies under a header for today's matrix.yaml."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.errors import ConfigurationError, UsageError
from torchrig.images.lock import Lock, format_lock, lock_status, parse_lock, read_lock
from torchrig.images.options import BuildOptions
from torchrig.images.uvlock import write_lock
from torchrig.matrix import Matrix, load_matrix

ROOT = Path(__file__).resolve().parents[2]
MATRIX: Matrix = load_matrix(ROOT / "matrix.yaml")


def _baselines() -> dict[str, tuple[str, str]]:
    """file name -> (env id, text): each committed lock's packages, formatted for the row as matrix.yaml has it."""
    out = {}
    for path in sorted((ROOT / "locks").glob("*.txt")):
        if path.name == "uv.txt":
            continue
        lock = parse_lock(path.read_text(encoding="utf-8"), source=str(path))
        env = MATRIX.get(lock.env_id)
        text = format_lock(env=env, index_url=lock.index_url, extra_index_urls=lock.extra_index_urls,
                           resolver=lock.resolver, platform=lock.platform, packages=lock.packages)
        out[path.name] = (env.id, text)
    return out


BASELINES = _baselines()


def _status(name: str, text: str) -> tuple[Lock | None, str | None]:
    """What `torchrig lock --check` decides for ``text`` saved as ``locks/NAME``: (lock, why stale) or raises
    ConfigurationError (invalid)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "locks" / name
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8", newline="")
        lock = read_lock(path)
        assert lock is not None
        if lock.env_id not in MATRIX.ids:
            return lock, f"{lock.env_id!r} is not in matrix.yaml"
        return lock, lock_status(lock, MATRIX.get(lock.env_id))


def _same(a: Lock, b: Lock) -> bool:
    """Whether ``b`` says what ``a`` says (hashes may only be dropped: a lock with fewer files' hashes is weaker,
    not wrong -- pip refuses the missing file at install); the resolver's name is cosmetic."""
    key = ("env_id", "index_url", "extra_index_urls", "requirements", "inputs_sha256", "python", "platform")
    if any(getattr(a, k) != getattr(b, k) for k in key):
        return False
    pa = {(p.name, p.version, p.section): set(p.hashes) for p in a.packages}
    pb = {(p.name, p.version, p.section): set(p.hashes) for p in b.packages}
    return pa.keys() == pb.keys() and all(pb[k] <= pa[k] for k in pa)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_is_fresh_under_its_own_name(name: str) -> None:
    _, problem = _status(name, BASELINES[name][1])
    assert problem is None, problem


# ------------------------------------------------------------------------------------------------ mutations

def _hash_spans(text: str) -> list[tuple[int, int]]:
    return [m.span(1) for m in re.finditer(r"--hash=sha256:([0-9a-f]{64})", text)]


# ------------------------------------------------------------------------------------------- named examples

def _one() -> tuple[str, str, str]:
    name = next(n for n in sorted(BASELINES) if "@" not in n)
    return name, BASELINES[name][0], BASELINES[name][1]


def test_a_lock_saved_under_another_environments_name_is_stale_and_says_so() -> None:
    _, env_id, text = _one()
    other = next(e for e in MATRIX.ids if e != env_id)
    _, problem = _status(f"{other}.txt", text)
    assert problem is not None
    assert f"header says environment {env_id!r}" in problem and f"named for {other!r}" in problem
    assert "another environment's name" in problem


def test_a_lock_for_another_index_under_the_own_index_name_is_stale() -> None:
    name = next(n for n in sorted(BASELINES) if "@" in n)
    env_id, text = BASELINES[name]
    _, problem = _status(f"{env_id}.txt", text)
    assert problem is not None and "own index" in problem and f"locks/{name}" in problem


def test_a_malformed_hash_is_invalid_and_named() -> None:
    name, _, text = _one()
    start, _ = _hash_spans(text)[0]
    with pytest.raises(ConfigurationError, match=r"malformed hash 'sha256:[0-9a-f]*Z"):
        _status(name, text[:start] + "Z" + text[start + 1:])


def test_a_body_pin_that_disagrees_with_the_row_is_stale() -> None:
    name, env_id, text = _one()
    torch = MATRIX.get(env_id).torch
    _, problem = _status(name, text.replace(f"\ntorch=={torch} ", "\ntorch=1.0.0 ".replace("=", "==", 1), 1))
    assert problem is not None and f"it locks torch==1.0.0, the row pins torch=={torch}" in problem


def test_a_dropped_last_hash_line_joins_two_packages_and_is_invalid() -> None:
    """Dropping a package's last --hash line leaves a trailing '\\' that swallowed the next package before."""
    name, _, text = _one()
    lines = text.split("\n")
    i = next(i for i, line in enumerate(lines) if line.strip().startswith("--hash=") and not line.endswith("\\")
             and i + 1 < len(lines) and "==" in lines[i + 1])
    with pytest.raises(ConfigurationError, match="more than NAME==VERSION"):
        _status(name, "\n".join(lines[:i] + lines[i + 1:]))


def test_crlf_and_a_bom_read_as_the_same_lock() -> None:
    name, _, text = _one()
    for variant in (text.replace("\n", "\r\n"), "\ufeff" + text):
        lock, problem = _status(name, variant)
        assert problem is None and lock is not None and _same(parse_lock(text), lock)


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan"), float("inf")])
def test_a_resolver_timeout_that_is_not_positive_is_refused_before_uv_runs(timeout: float, tmp_path: Path) -> None:
    def run(*_: object, **__: object) -> object:
        raise AssertionError("the resolver started")

    with pytest.raises(UsageError, match="--timeout"):
        write_lock(MATRIX.get("cpu"), BuildOptions(root=tmp_path), output=tmp_path / "x.txt", run=run,  # type: ignore[arg-type]
                   timeout=timeout)


# ------------------------------------------------------------------------------------ generated mutations



# CPU seconds a decision may take (typical: 5 ms; 6,000 random mutations peaked at 6 ms). CPU, not wall time: a
# wall-clock deadline (hypothesis's default 200 ms) once saw a 2.8-3.6 s example that no seed reproduced -- the
# machine, not the input.
_CPU_S = 1.0


def _outcome(name: str, text: str) -> str:
    t0 = time.process_time()
    try:
        _, problem = _status(name, text)
    except ConfigurationError:
        return "invalid"
    finally:
        spent = time.process_time() - t0
        assert spent < _CPU_S, f"deciding took {spent:.2f} s of CPU"
    return "fresh" if problem is None else "stale"


@given(st.sampled_from(sorted(BASELINES)), st.data())
def test_a_broken_hash_is_never_fresh(name: str, data: st.DataObject) -> None:
    text = BASELINES[name][1]
    start, end = data.draw(st.sampled_from(_hash_spans(text)))
    how = data.draw(st.sampled_from(["non-hex", "cut", "longer", "upper"]))
    i = data.draw(st.integers(start, end - 1))
    bad = {"non-hex": text[:i] + data.draw(st.sampled_from("gzGZ-_ x")) + text[i + 1:],
           "cut": text[:i] + text[end:],
           "longer": text[:end] + data.draw(st.sampled_from("0af9")) + text[end:],
           "upper": text[:start] + text[start:end].upper() + text[end:] if any(c.isalpha() for c in
                                                                               text[start:end]) else text[:i] + "Q"
                                                                               + text[i + 1:]}[how]
    assert _outcome(name, bad) == "invalid"


@given(st.sampled_from(sorted(BASELINES)), st.data())
def test_a_changed_or_dropped_pin_is_never_fresh(name: str, data: st.DataObject) -> None:
    env_id, text = BASELINES[name]
    pinned = [r.split("==")[0] for r in MATRIX.get(env_id).requirements() if "==" in r]
    pkg = data.draw(st.sampled_from(pinned))
    lines = text.split("\n")
    idx = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(pkg)}==\S+", line, re.IGNORECASE))
    if data.draw(st.booleans()):  # another version
        version = data.draw(st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True))
        lines[idx] = re.sub(r"==[^ \\]+", f"=={version}9", lines[idx], count=1)
    else:  # the line and its hash continuation lines dropped
        end = idx + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        del lines[idx:end]
    assert _outcome(name, "\n".join(lines)) in ("stale", "invalid")


@given(st.sampled_from(sorted(BASELINES)), st.data())
def test_any_byte_level_mutation_is_decided_without_a_traceback(name: str, data: st.DataObject) -> None:
    text = BASELINES[name][1]
    i = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(max_size=40))
    cut = data.draw(st.integers(0, 80))
    assert _outcome(name, text[:i] + junk + text[i + cut:]) in ("fresh", "stale", "invalid")
