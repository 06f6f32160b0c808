"""torchrig's benchmark suite: calibration (GEMM, copy bandwidth) and training throughput, on pytest-benchmark.

Run it with ``python -m bench`` (see ``bench/__main__.py`` and docs/bench.md). Importing this package is cheap:
torch is imported by the modules that need it.
"""
