"""The GPU engine: the reference layers' math as CuPy kernels on an NVIDIA GPU (optional extra)."""

from nn.gpu.model import GpuSequential

__all__ = ["GpuSequential"]
