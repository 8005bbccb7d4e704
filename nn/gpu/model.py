"""GpuSequential: the reference Sequential's layers, run by the GPU engine's kernels."""

from nn.gpu.layers import LAYERS
from nn.model import Sequential, engine_backward


class GpuSequential(Sequential):
    """A Sequential of the GPU engine's layers (`nn.gpu.layers`); its parameters live on a CUDA
    device (`model.to(get_device("gpu"))`, which `nn.engine.build` does). In training the
    backward pass stops at the first layer with parameters and skips its dx."""

    LAYERS = LAYERS

    def to(self, device):
        """The engine is CUDA kernels: it runs on the GPU only."""
        if device.name != "gpu":
            raise ValueError(f"the GPU engine runs on device gpu only, not {device.name}")
        return super().to(device)

    def backward(self, dout, input_grad=True):
        return engine_backward(self.layers, range(len(self.layers)), dout, input_grad)
