"""Sequential: a list of layers, built from a plain list-of-dicts spec, named with dotted keys."""

import inspect

import numpy as np

from nn.backend import Device, array_module, to_numpy
from nn.layers import LAYERS, Conv2d, Layer, Linear
from nn.losses import softmax

# Constructor arguments that are not part of a spec: passed in by from_spec or left at default.
_NOT_SPEC = {"self", "rng", "dtype"}


def engine_backward(layers: list[Layer], order, dout, input_grad: bool):
    """Backward through `layers` in the reverse of `order` (the indices as the forward ran
    them), for an engine whose Linear and Conv2d take `backward(dout, input_grad)`: without
    `input_grad`, the layers before the first one with parameters are skipped and that layer's
    dx is not computed (training never uses dL/d(input)). Returns dx, or None."""
    first = 0 if input_grad else next((i for i, m in enumerate(layers) if m.params), 0)
    for i in reversed(order):
        if i < first:
            break
        layer = layers[i]
        if isinstance(layer, (Linear, Conv2d)):
            dout = layer.backward(dout, input_grad=input_grad or i > first)
        else:
            dout = layer.backward(dout)
    return dout if input_grad else None


class Sequential:
    """Layers applied in order; backward runs them in reverse. Parameters are named
    "<layer index>.<name>" ("0.W", "3.b"). This is the reference model: the fast CPU engine's
    `nn.fast.FastSequential` is a subclass that plans fused passes over the same layers.
    """

    LAYERS = LAYERS  # the layer classes `from_spec` builds from

    def __init__(self, layers: list[Layer]):
        self.layers = list(layers)

    @classmethod
    def from_spec(cls, spec: list[dict], rng: np.random.Generator) -> "Sequential":
        """Build from [{"type": "Conv2d", "in_channels": 1, ...}, {"type": "ReLU"}, ...].

        Unknown types, unknown or missing arguments and bad values raise ValueError naming the
        layer index and the key. Layers that need randomness get `rng`.
        """
        if not isinstance(spec, (list, tuple)) or not spec:
            raise ValueError("spec must be a non-empty list of layer dicts")
        layers = []
        for i, entry in enumerate(spec):
            if not isinstance(entry, dict) or "type" not in entry:
                raise ValueError(f"layer {i}: expected a dict with a 'type' key, got {entry!r}")
            kind = entry["type"]
            if kind not in cls.LAYERS:
                raise ValueError(f"layer {i}: unknown type {kind!r}; known: {', '.join(cls.LAYERS)}")
            layer_cls = cls.LAYERS[kind]
            sig = inspect.signature(layer_cls.__init__).parameters
            allowed = [name for name in sig if name not in _NOT_SPEC]
            kwargs = {k: v for k, v in entry.items() if k != "type"}
            for key in kwargs:
                if key not in allowed:
                    raise ValueError(f"layer {i} ({kind}): unknown argument {key!r}; "
                                     f"allowed: {', '.join(allowed) or 'none'}")
            for name in allowed:
                if sig[name].default is inspect.Parameter.empty and name not in kwargs:
                    raise ValueError(f"layer {i} ({kind}): missing argument {name!r}")
            if "rng" in sig:
                kwargs["rng"] = rng
            try:
                layers.append(layer_cls(**kwargs))
            except (ValueError, TypeError) as e:
                raise ValueError(f"layer {i} ({kind}): {e}") from None
        return cls(layers)

    @property
    def spec(self) -> list[dict]:
        return [layer.spec for layer in self.layers]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """x: (N, ...) -> output of the last layer (logits)."""
        for i, layer in enumerate(self.layers):
            try:
                x = layer.forward(x, training)
            except ValueError as e:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {e}") from None
        return x

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill every layer's grads from dL/d(output), last layer first; return dL/d(input).

        `input_grad=False` says the caller has no use for dL/d(input) (training): this model
        then returns None, and the fast engine skips the work.
        """
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout if input_grad else None

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in getattr(layer, attr).items()}

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by dotted name ("0.W"), in a dict made on each read: an
        optimiser updates the arrays in place."""
        return self._named("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the last backward, same keys as `params`."""
        return self._named("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Live non-trainable state (BatchNorm running statistics)."""
        return self._named("buffers")

    def to(self, device: Device) -> "Sequential":
        """Move parameters and buffers to `device` (an nn.backend.Device); returns self.

        Build the optimiser's state after this (it is made like the parameters). Later batches
        must be on the same device: `forward` computes with its input's array module.
        """
        for layer in self.layers:
            layer.params = {k: device.asarray(v) for k, v in layer.params.items()}
            layer.buffers = {k: device.asarray(v) for k, v in layer.buffers.items()}
            layer.grads, layer.cache = {}, None
        return self

    @property
    def device_module(self):
        """The array module the parameters live in (numpy, or cupy after `.to(gpu)`)."""
        return next((array_module(v) for v in self.params.values()), np)

    def state_dict(self) -> dict[str, np.ndarray]:
        """NumPy copies of params and buffers, dotted keys (fetched from the GPU if there)."""
        return {k: to_numpy(v, copy=True) for k, v in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the live arrays, wherever they live; strict about keys and shapes."""
        live = {**self.params, **self.buffers}
        missing = [k for k in live if k not in state]
        if missing:
            raise ValueError(f"state dict is missing key {missing[0]!r}")
        unexpected = [k for k in state if k not in live]
        if unexpected:
            raise ValueError(f"state dict has unexpected key {unexpected[0]!r}")
        for k, arr in live.items():
            value = np.asarray(state[k])
            if value.shape != arr.shape:
                raise ValueError(f"state dict key {k!r} has shape {value.shape}, expected {arr.shape}")
        for k, arr in live.items():
            xp = array_module(arr)
            xp.copyto(arr, xp.asarray(state[k]), casting="same_kind")

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities in inference mode, batch by batch. x: (N, ...) -> (N, K) NumPy,
        wherever the model lives."""
        xp = self.device_module
        chunks = [to_numpy(softmax(self.forward(xp.asarray(x[i:i + batch_size]), training=False)))
                  for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class per example. x: (N, ...) -> (N,) int64."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def num_params(self) -> int:
        return sum(v.size for v in self.params.values())

    def summary(self, input_shape: tuple) -> str:
        """Text table: layer, output shape, parameter count. input_shape excludes the batch axis."""
        rows = [("#", "layer", "output shape", "params")]
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except (ValueError, TypeError) as e:
                raise ValueError(f"layer {i} ({type(layer).__name__}) cannot take input {shape}: {e}") \
                    from None
            n = sum(v.size for v in layer.params.values())
            rows.append((str(i), repr(layer), str(shape), f"{n:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"input {tuple(input_shape)}, total params {self.num_params():,}")
        return "\n".join(lines)

    def __repr__(self):
        return "Sequential(\n" + "".join(f"  ({i}) {layer!r}\n" for i, layer in enumerate(self.layers)) + ")"
