"""torchrig's correctness tasks: each runnable as ``python -m tasks.<name>``, all of them as ``python -m tasks``.

Each task trains or checks something small with a known right answer, gates the result, and writes a result
record (``torchrig.results.records``) into the results directory. See docs/tasks.md.
"""

TASKS: tuple[str, ...] = ("smoke", "regression", "cifar_cnn", "bert_classifier", "export")
