"""torchrig: reproducible, containerized PyTorch 2.x environments and a GPU benchmark suite."""

__version__ = "0.1.0"
