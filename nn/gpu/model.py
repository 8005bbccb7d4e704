"""GpuSequential: the reference Sequential's layers, run by the GPU engine's kernels."""

from nn.gpu.layers import LAYERS, Conv2d, Linear
from nn.model import Sequential


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
        first = 0 if input_grad else next((i for i, m in enumerate(self.layers) if m.params), 0)
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer = self.layers[i]
            if isinstance(layer, (Linear, Conv2d)):
                dout = layer.backward(dout, input_grad=input_grad or i > first)
            else:
                dout = layer.backward(dout)
        return dout if input_grad else None
