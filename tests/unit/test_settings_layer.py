"""The one settings layer: every TORCHRIG_* value typed and checked (exit 2 naming it), torchrig.toml read whole, the
five layers in one order, and every check done before Docker is contacted."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import shutil
import string
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.cli import types
from torchrig.config import values
from torchrig.config.files import write_setting
from torchrig.config.table import SETTINGS, by_key
from torchrig.errors import ConfigurationError, UsageError
from torchrig.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
MATRIX = str(ROOT / "matrix.yaml")
DEAD_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/torchrig-dead.sock"}
BOOLS = [s for s in SETTINGS if s.parse is values.boolean]
WORDS = ["1", "0", "true", "false", "yes", "no", "on", "off"]


def _case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(word, flips + [False] * len(word), strict=False))


def _run(env: dict[str, str], *argv: str) -> int:
    return _run_err(env, *argv)[0]


def _run_err(env: dict[str, str], *argv: str) -> tuple[int, str]:
    """main() with only these TORCHRIG_* variables and a Docker that is not there; (exit code, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_") and k != "SOURCE_DATE_EPOCH"}
    err = io.StringIO()
    with mock.patch.dict(os.environ, {**clean, **DEAD_DOCKER, **env}, clear=True), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--matrix", MATRIX, *argv])
    return rc, err.getvalue()


# ------------------------------------------------------------------------------------------------ booleans


@given(st.sampled_from(BOOLS), st.sampled_from(WORDS), st.lists(st.booleans(), max_size=5),
       st.sampled_from(["", " ", "\t"]))
def test_every_documented_boolean_spelling_is_accepted(setting, word, flips, pad) -> None:  # type: ignore[no-untyped-def]
    s = Settings.from_environ({setting.env[0]: pad + _case(word, flips) + pad}, matrix=MATRIX)
    assert getattr(s, setting.field) is (word in ("1", "true", "yes", "on"))
    assert s.sources[setting.key] == f"env {setting.env[0]}"


@settings(max_examples=40)
@given(st.sampled_from(BOOLS), st.text(string.printable, min_size=1, max_size=12).filter(
    lambda t: t.strip() and t.strip().lower() not in WORDS))
def test_any_other_boolean_word_is_exit_2_naming_the_variable(setting, word) -> None:  # type: ignore[no-untyped-def]
    rc, err = _run_err({setting.env[0]: word}, "tags", "cpu")
    assert rc == 2
    assert setting.env[0] in err and "1/0, true/false, yes/no, on/off" in err and "Traceback" not in err


def test_the_typo_that_built_unlocked_is_refused() -> None:
    """Regression (issue 17): TORCHRIG_REQUIRE_LOCK=ture was read as false."""
    rc, err = _run_err({"TORCHRIG_REQUIRE_LOCK": "ture"}, "build", "cpu")
    assert rc == 2
    assert "TORCHRIG_REQUIRE_LOCK='ture'" in err and "Docker" not in err
    assert Settings.from_environ({"TORCHRIG_REQUIRE_LOCK": ""}).require_lock is False  # empty: unset


# ------------------------------------------------------------------------------------ every variable, any text


@settings(max_examples=120)
@given(st.sampled_from([s for s in SETTINGS]), st.text(max_size=30))
def test_every_variable_either_parses_or_is_exit_2_naming_it(setting, text) -> None:  # type: ignore[no-untyped-def]
    name = setting.env[0]
    try:
        s = Settings.from_environ({name: text}, matrix=MATRIX)
    except UsageError as e:
        assert name in str(e) and "accepted:" in str(e)
        return
    value = s.matrix_path if setting.key == "matrix" else getattr(s, setting.field)
    if text.strip() or setting.empty_is_value:
        assert value is not None


def test_the_documented_table_has_every_variable_read() -> None:
    assert {"SOURCE_DATE_EPOCH", "TORCHRIG_PYTHON", "TORCHRIG_REQUIRE_LOCK"} <= set(ENV_VARS)
    assert Settings.from_environ({"TORCHRIG_PYTHON": "/opt/py/bin/python"}).python == "/opt/py/bin/python"
    src = (ROOT / "noxfile.py").read_text()
    assert 'os.environ.get("TORCHRIG_PYTHON"' not in src, "the noxfile reads TORCHRIG_PYTHON through the settings"


@pytest.mark.parametrize("epoch, ok", [("315532800", True), ("315532799", False), (str(2**32 - 1), True),
                                       (str(2**32), False), ("-1", False), ("1e9", False), ("9" * 5000, False)])
def test_source_date_epoch_fits_every_archive(epoch: str, ok: bool) -> None:
    if ok:
        assert Settings.from_environ({"SOURCE_DATE_EPOCH": epoch}).source_date_epoch == int(epoch)
    else:
        with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
            Settings.from_environ({"SOURCE_DATE_EPOCH": epoch})


# -------------------------------------------------------------------------------------------- numeric flags

_NUMERIC = {
    "positive_int": (types.positive_int, lambda v: isinstance(v, int) and v >= 1),
    "size_budget_mb": (types.size_budget_mb, lambda v: 1 <= v <= values.MAX_SIZE_BUDGET_MB),
    "uid": (types.uid, lambda v: 0 <= v <= values.UID_MAX),
    "port": (types.port, lambda v: 1 <= v <= 65535),
    "positive_seconds": (types.positive_seconds, lambda v: 0 < v <= values.MAX_TIMEOUT_S),
    "non_negative_seconds": (types.non_negative_seconds,
                             lambda v: 0 <= v <= values.MAX_TIMEOUT_S and math.copysign(1, v) > 0),
    "finite_positive": (types.finite_positive, lambda v: math.isfinite(v) and v > 0),
    "fraction": (types.fraction, lambda v: 0 <= v < 1),
    "docker_size": (types.docker_size, lambda v: isinstance(v, str) and v[0].isdigit()),
}
_TEXT = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "-0", "-0.0", "0", "1e400", "8g", "512m", "1.5G", "0g", "", " ",
                     "9" * 5000, "0x10", "1_000", "٣"]),
    st.text(max_size=12),
)


@settings(max_examples=150)
@given(st.sampled_from(sorted(_NUMERIC)), _TEXT)
def test_every_numeric_type_returns_a_value_in_range_or_an_argparse_error(kind, text) -> None:  # type: ignore[no-untyped-def]
    parse, in_range = _NUMERIC[kind]
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as e:
        assert repr(text)[:20] in str(e) or len(text) > 18
        return
    assert in_range(value), (kind, text, value)


_FLAGS = [("build", "cpu", "--size-budget-mb"), ("build", "cpu", "--uid"), ("build", "cpu", "--gid"),
          ("lock", "cpu", "--timeout"), ("run-tasks", "cpu", "--timeout"), ("run-tasks", "cpu", "--shm-size"),
          ("run-bench", "cpu", "--size-budget-mb"), ("dev", "cpu", "--timeout"), ("submit", "cpu", "--nodes"),
          ("submit", "cpu", "--gpus-per-node"), ("submit", "cpu", "--shm-size"), ("submit", "cpu", "--timeout"),
          ("report", "/nonexistent", "--noise-k"), ("report", "/nonexistent", "--min-noise")]


@settings(max_examples=60)
@given(st.sampled_from(_FLAGS), st.sampled_from(["nan", "inf", "-inf", "-1", "0x1", "", "1e999", "abc",
                                                 "9" * 400, "-5g", "1,5"]))
def test_a_bad_number_on_any_flag_is_exit_2_before_docker(flag, text) -> None:  # type: ignore[no-untyped-def]
    command, env, name = flag
    rc, err = _run_err({}, command, env, f"{name}={text}")
    assert rc == 2
    assert name in err and "Traceback" not in err and "Docker engine" not in err


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_good_value_gets_as_far_as_docker() -> None:
    """The values are checked first: valid ones reach the (dead) engine, which is exit 3."""
    assert _run({"TORCHRIG_SIZE_BUDGET_MB": "6000"}, "build", "cpu", "--uid", "0", "--no-cache") == 3
    gc.collect()  # docker-py leaves the refused socket to the collector: let it go here, not in the next test


# -------------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("var", ["TORCHRIG_RESULTS", "TORCHRIG_CACHE"])
@pytest.mark.parametrize("where", ["file", "under-file", "/proc/torchrig", "/dev/null", "/sys/x"])
def test_an_unusable_directory_is_exit_2_naming_it(tmp_path: Path, var: str, where: str) -> None:
    (tmp_path / "f").write_text("x")
    value = {"file": str(tmp_path / "f"), "under-file": str(tmp_path / "f" / "sub")}.get(where, where)
    rc, err = _run_err({var: value}, "tags", "cpu")
    assert rc == 2
    assert var in err and value in err


def test_conflicting_lock_flags_are_exit_2() -> None:
    assert _run({}, "build", "cpu", "--no-lock", "--require-lock") == 2
    rc, err = _run_err({}, "build", "cpu", "--no-lock", "--lock", "locks/cpu.txt")
    assert rc == 2 and "--no-lock contradicts --lock" in err


# ------------------------------------------------------------------------------------------- torchrig.toml


def _checkout(tmp_path: Path) -> Path:
    """A matrix outside the checkout (with the images/ folder its rows name)."""
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    return tmp_path / "matrix.yaml"


_VALID = {"base-image": st.sampled_from(["torchrig-base:bookworm", "python:3.11-slim", "r.example:5000/b@sha256:"
                                         + "a" * 64]),
          "index-url": st.sampled_from(["https://pypi.org/simple", "file:///srv/wheels"]),
          "size-budget-mb": st.integers(1, values.MAX_SIZE_BUDGET_MB),
          "require-lock": st.booleans(), "keep-containers": st.sampled_from([True, False, "yes", "OFF"]),
          "registry": st.sampled_from(["", "localhost:5000", "ghcr.io/me"]),
          "extra-index-url": st.lists(st.sampled_from(["https://a.example/simple", "http://b/simple"]), max_size=3),
          "source-date-epoch": st.integers(values.EPOCH_MIN, values.EPOCH_MAX)}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value) if isinstance(value, int) else '"' + str(value) + '"'


@settings(max_examples=40)
@given(st.dictionaries(st.sampled_from(sorted(_VALID)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: _VALID[k] for k in keys})))
def test_generated_valid_files_set_what_they_say(tmp_path_factory, doc) -> None:  # type: ignore[no-untyped-def]
    matrix = _checkout(tmp_path_factory.mktemp("m"))
    (matrix.parent / "torchrig.toml").write_text("".join(f"{k} = {_toml(v)}\n" for k, v in doc.items()))
    s = Settings.from_environ({}, matrix=matrix)
    for key, value in doc.items():
        setting = by_key(key)
        got = getattr(s, setting.field)
        want = tuple(value) if isinstance(value, list) else values.boolean(value) if isinstance(value, str) and \
            setting.parse is values.boolean else value
        assert got == want and s.sources[key] == "torchrig.toml", key


@settings(max_examples=60)
@given(st.sampled_from(sorted(_VALID)), st.sampled_from(["drop", "swap", "dup", "type", "table", "junk"]),
       st.integers(0, 30))
def test_mutated_files_are_exit_2_naming_the_file(tmp_path_factory, key, how, at) -> None:  # type: ignore[no-untyped-def]
    matrix = _checkout(tmp_path_factory.mktemp("m"))
    i = at % len(key)
    mutated = {"drop": key[:i] + key[i + 1:], "swap": key[:i] + "x" + key[i + 1:], "dup": key + key[-1]}
    value = "true" if by_key(key).parse is values.boolean else '"https://pypi.org/simple"'
    text = {"type": f"{key} = {{a = 1}}\n", "table": f"[{key}]\nx = 1\n", "junk": f"{key} = = \"\n"}.get(
        how, f"{mutated.get(how, key)} = {value}\n")
    (matrix.parent / "torchrig.toml").write_text(text)
    try:
        Settings.from_environ({}, matrix=matrix)
    except (ConfigurationError, UsageError) as e:
        assert "torchrig.toml" in str(e) and e.return_code == 2
        if how in ("drop", "swap", "dup") and mutated[how] != key:
            assert f"did you mean {key!r}" in str(e) or "known:" in str(e) or "not settable" in str(e)
        return
    assert (how in ("drop", "swap", "dup") and mutated[how] == key) or how == "swap"


@settings(max_examples=40)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_a_message_or_settings_never_a_traceback(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    matrix = _checkout(tmp_path_factory.mktemp("m"))
    (matrix.parent / "torchrig.toml").write_bytes(data)
    try:
        Settings.from_environ({}, matrix=matrix)
    except (ConfigurationError, UsageError) as e:
        assert e.return_code == 2


def test_unknown_key_says_did_you_mean_and_main_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = _checkout(tmp_path)
    (tmp_path / "torchrig.toml").write_text('base_image = "torchrig-base:bookworm"\n')
    with mock.patch.dict(os.environ, DEAD_DOCKER):
        assert main(["--matrix", str(matrix), "build", "cpu"]) == 2
    assert "did you mean 'base-image'" in capsys.readouterr().err


def test_pyproject_tool_table_is_read_and_torchrig_toml_wins(tmp_path: Path) -> None:
    matrix = _checkout(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.torchrig]\nsize-budget-mb = 7000\n')
    s = Settings.from_environ({}, matrix=matrix)
    assert (s.size_budget_mb, s.sources["size-budget-mb"]) == (7000, "pyproject.toml")
    (tmp_path / "torchrig.toml").write_text("size-budget-mb = 8000\n")
    assert Settings.from_environ({}, matrix=matrix).size_budget_mb == 8000


def test_relative_paths_in_the_file_are_beside_it(tmp_path: Path) -> None:
    matrix = _checkout(tmp_path)
    (tmp_path / "torchrig.toml").write_text('results = "out"\nca-bundle = "ca.pem"\n')
    s = Settings.from_environ({}, matrix=matrix, cwd=Path("/"))
    assert s.results_dir == tmp_path / "out" and s.ca_bundle == str(tmp_path / "ca.pem")


# ------------------------------------------------------------------------------------------------ precedence

_LAYERS = ("file", "env", "flag")


@given(st.sets(st.sampled_from(_LAYERS)))
def test_precedence_across_every_layer(tmp_path_factory, present) -> None:  # type: ignore[no-untyped-def]
    """defaults -> matrix.yaml -> torchrig.toml -> environment -> flags: the highest layer given wins."""
    from torchrig.cli.config import rows

    matrix = _checkout(tmp_path_factory.mktemp("m"))
    if "file" in present:
        (matrix.parent / "torchrig.toml").write_text('base-image = "from-file:1"\nregistry = "file.example"\n')
    env = {"TORCHRIG_BASE_IMAGE": "from-env:1", "TORCHRIG_REGISTRY": "env.example"} if "env" in present else {}
    flags = {"base-image": "from-flag:1"} if "flag" in present else {}
    s = Settings.from_environ(env, matrix=matrix, flags=flags)
    top = next((layer for layer in reversed(_LAYERS) if layer in present), None)
    assert s.base_image == (f"from-{top}:1" if top else None)
    assert s.sources["base-image"] == {"file": "torchrig.toml", "env": "env TORCHRIG_BASE_IMAGE",
                                       "flag": "flag --base-image", None: "matrix.yaml"}[top]
    shown = {k: (v, src) for k, v, src in rows(s)}
    want_registry = "env.example" if "env" in present else "file.example" if "file" in present else "ghcr.io/torchrig"
    assert shown["registry"][0] == want_registry  # the matrix.yaml layer shows matrix.yaml's own value
    assert shown["registry"][1] == ("env TORCHRIG_REGISTRY" if "env" in present else
                                    "torchrig.toml" if "file" in present else "matrix.yaml")


def test_torchrig_config_prints_every_setting_and_its_source(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    matrix = _checkout(tmp_path)
    (tmp_path / "torchrig.toml").write_text('base-image = "torchrig-base:bookworm"\n')
    with mock.patch.dict(os.environ, {"TORCHRIG_INDEX_URL": "https://pypi.org/simple"}):
        assert main(["--matrix", str(matrix), "config"]) == 0
    out = capsys.readouterr().out
    for s in SETTINGS:
        assert f"\n{s.key} " in out or out.startswith(s.key) or f"\n{s.key:<17}" in out
    assert "torchrig-base:bookworm  # torchrig.toml" in out and "# env TORCHRIG_INDEX_URL" in out


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for s in SETTINGS:
        assert s.key in out and all(f"${v}" in out for v in s.env) and s.accepted.split()[0] in out


# ------------------------------------------------------------------------ one construction path for options


def test_build_and_run_tasks_build_identical_options_for_a_matrix_outside_the_checkout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchrig import run as run_module
    from torchrig.cli import images as cli_images
    from torchrig.errors import DockerUnavailableError
    from torchrig.images import BuildOptions

    matrix = _checkout(tmp_path)
    (tmp_path / "torchrig.toml").write_text('base-image = "torchrig-base:bookworm"\nindex-url = '
                                            '"https://pypi.org/simple"\nsize-budget-mb = 5800\n')
    seen: list[BuildOptions] = []

    def stop(*_a: object, **_k: object) -> None:
        raise DockerUnavailableError("stop here")

    monkeypatch.setattr(cli_images, "connect", stop)
    monkeypatch.setattr(run_module, "run_suite", lambda m, e, options, request: seen.append(options.build))
    monkeypatch.setattr(run_module, "dev", lambda m, e, options, **kw: seen.append(options.build) or 0)
    real = BuildOptions.from_settings.__func__  # type: ignore[attr-defined]

    def record(cls: type[BuildOptions], *a: object, **k: object) -> BuildOptions:
        options: BuildOptions = real(cls, *a, **k)
        seen.append(options)
        return options

    monkeypatch.setattr(BuildOptions, "from_settings", classmethod(record))
    assert main(["--matrix", str(matrix), "build", "cpu"]) == 3
    assert main(["--matrix", str(matrix), "run-tasks", "cpu", "--results", str(tmp_path / "r")]) == 0
    assert main(["--matrix", str(matrix), "dev", "cpu"]) == 0
    built, *others = [o for o in seen]
    assert built.base_image == "torchrig-base:bookworm" and built.size_budget_mb == 5800
    assert built.bases_file == tmp_path / "locks" / "bases.yaml" and built.root is not None
    assert all(o == built for o in others), "run-tasks and dev must compute the image `build` made"


# -------------------------------------------------------------------------------------- base-local's line


@settings(max_examples=30)
@given(st.sampled_from(["torchrig-base:bookworm", "torchrig-base:trixie", 'we"ird:1']),
       st.sampled_from(["", 'index-url = "https://pypi.org/simple"\n', "# note\nbase-image = \"old:1\"\n[x]\n"]))
def test_write_config_sets_the_base_image_and_keeps_the_rest(tmp_path_factory, ref, before) -> None:  # type: ignore[no-untyped-def]
    matrix = _checkout(tmp_path_factory.mktemp("m"))
    path = matrix.parent / "torchrig.toml"
    if "[x]" in before:  # a table that is not torchrig's: refused, the file left as it was
        path.write_text(before)
        with pytest.raises(ConfigurationError):
            write_setting(path, "base-image", ref)
        assert path.read_text() == before
        return
    if before:
        path.write_text(before)
    write_setting(path, "base-image", ref)
    s = Settings.from_environ({}, matrix=matrix)
    assert s.base_image == ref and s.sources["base-image"] == "torchrig.toml"
    if "index-url" in before:
        assert s.index_url == "https://pypi.org/simple"
