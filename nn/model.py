"""Sequential: a list of layers, built from a plain list-of-dicts spec, named with dotted keys."""

import contextlib
import inspect

import numpy as np

from nn import _conv
from nn.layers import LAYERS, BatchNorm2d, Conv2d, Layer, MaxPool2d, ReLU
from nn.losses import softmax

# Constructor arguments that are not part of a spec: passed in by from_spec or left at default.
_NOT_SPEC = {"self", "rng", "dtype"}


class Sequential:
    """Layers applied in order. Parameters are named "<layer index>.<name>" ("0.W", "3.b").

    When a Conv2d feeds a 2x2 stride-2 MaxPool2d through only BatchNorm2d / ReLU layers, the
    convolution emits its output in pool layout (see `nn._conv`) so the pool is three
    `np.maximum` calls, and ReLUs just before the pool run after it (max and ReLU commute, ties
    included, so on a quarter of the data); Conv2d [ReLU] MaxPool2d(2) with stride 1 runs fused,
    a few images at a time (`Conv2d.forward_pool`). Outputs are bit-identical (up to BatchNorm's
    summation order), the spec is unchanged, and `pool_layout = False` turns all this off.
    """

    def __init__(self, layers: list[Layer]):
        self.layers = list(layers)
        self.pool_layout = True
        self._fused: dict[int, int] = {}
        self._trace: list[int] = []
        self._pool_pairs = {}  # conv index -> pool index
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Conv2d):
                j = i + 1
                while j < len(self.layers) and isinstance(self.layers[j], (BatchNorm2d, ReLU)):
                    j += 1
                if j < len(self.layers) and isinstance(self.layers[j], MaxPool2d) and self.layers[j].is_2x2:
                    self._pool_pairs[i] = j

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
            if kind not in LAYERS:
                raise ValueError(f"layer {i}: unknown type {kind!r}; known: {', '.join(LAYERS)}")
            layer_cls = LAYERS[kind]
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
        return [layer.spec() for layer in self.layers]

    def _blas_mode(self):
        """One-threaded BLAS for the whole pass if a convolution runs on our own threads."""
        threaded = any(isinstance(layer, Conv2d) and _conv.uses_threads(layer.params["W"][..., 0].size)
                       for layer in self.layers)
        return _conv.single_threaded_blas() if threaded else contextlib.nullcontext()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """x: (N, ...) -> output of the last layer (logits)."""
        with self._blas_mode():
            return self._forward(x, training)

    def backward(self, dout: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Fill every layer's grads from dL/d(output); return dL/d(input) only if input_grad.

        Without input_grad the backward pass stops at the first layer with parameters, which
        skips its input gradient (for an MLP behind Flatten that is a third of the work).
        """
        with self._blas_mode():
            return self._backward(dout, input_grad)

    def _forward(self, x, training):
        self._trace = []  # layer indices in the order they ran; backward replays it reversed
        self._fused = {}  # first layer index -> one past the last, of layer runs executed as one
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            if self.pool_layout and i in self._pool_pairs and x.ndim == 4:
                j = self._pool_pairs[i]
                between = list(range(i + 1, j))
                n_relu = 0  # trailing ReLUs commute with max pooling: run them on 1/4 of the data
                while n_relu < len(between) and isinstance(self.layers[between[-1 - n_relu]], ReLU):
                    n_relu += 1
                others, relus = between[:len(between) - n_relu], between[len(between) - n_relu:]
                if not others and n_relu <= 1 and layer.can_fuse_pool(x.shape[1:]):
                    # Conv2d [ReLU] MaxPool2d(2) as one chunked pass
                    x = layer.forward_pool(x, training, relu=bool(relus))
                    self._fused[i] = j + 1
                    self._trace.append(i)
                    i = j + 1
                    continue
                ho, wo = layer.output_shape(x.shape[1:])[:2]
                if ho % 2 == 0 and wo % 2 == 0:
                    x = layer.forward(x, training, pool_layout=True)
                    for k in others:
                        x = self.layers[k].forward(x, training)
                    x = self.layers[j].forward(x, training, pool_layout_hw=(ho, wo))
                    for k in relus:
                        x = self.layers[k].forward(x, training)
                    self._trace += [i, *others, j, *relus]
                    i = j + 1
                    continue
            x = layer.forward(x, training)
            self._trace.append(i)
            i += 1
        return x

    def _backward(self, dout, input_grad):
        # Layers before the first one with parameters need no backward unless dx is wanted.
        first = 0 if input_grad else next((i for i, m in enumerate(self.layers) if m.params), 0)
        for i in reversed(self._trace):
            if i < first:
                break
            dout = self.layers[i].backward(dout, input_grad=input_grad or i > first)
        return dout if input_grad else None

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in getattr(layer, attr).items()}

    def params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays: an optimiser updates them in place."""
        return self._named("params")

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the last backward, same keys as params()."""
        return self._named("grads")

    def buffers(self) -> dict[str, np.ndarray]:
        """Live non-trainable state (BatchNorm running statistics)."""
        return self._named("buffers")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of params and buffers, dotted keys."""
        return {k: v.copy() for k, v in {**self.params(), **self.buffers()}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the live arrays; strict about keys and shapes."""
        live = {**self.params(), **self.buffers()}
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
            np.copyto(arr, state[k], casting="same_kind")

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities in inference mode, batch by batch. x: (N, ...) -> (N, K)."""
        chunks = [softmax(self.forward(x[i:i + batch_size], training=False))
                  for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class per example. x: (N, ...) -> (N,) int64."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def num_params(self) -> int:
        return sum(v.size for v in self.params().values())

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
