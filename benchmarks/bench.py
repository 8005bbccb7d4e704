"""Time nn/ against PyTorch on the CPU: training steps of the default MLP and CNN, CNN inference.

    .venv/bin/python benchmarks/bench.py [--rounds 5] [--block 8] [--no-torch]

Rounds alternate a block of NumPy steps with a block of PyTorch steps, so both see the same
machine load; each block starts with a pause and 3 untimed steps. The table gives the median
step (5 rounds x 5 timed steps = 25 by default) and the ratio NumPy / PyTorch. Data are random
and non-zero. GFLOP/s counts the multiply-adds of Linear and Conv2d layers (2 FLOPs each) in the
forward pass, times 3 for a training step (forward, input and weight gradients).
"""

import argparse
import functools
import os
import platform
import statistics
import time
from datetime import date

import numpy as np

from nn.losses import softmax_cross_entropy
from nn.model import Sequential
from nn.optim import Adam

MLP = [
    {"type": "Flatten"},
    {"type": "Linear", "in_features": 784, "out_features": 512}, {"type": "ReLU"},
    {"type": "Linear", "in_features": 512, "out_features": 256}, {"type": "ReLU"},
    {"type": "Linear", "in_features": 256, "out_features": 10},
]


def cnn_spec(batchnorm: bool) -> list[dict]:
    def block(c_in, c_out):
        bn = [{"type": "BatchNorm2d", "num_features": c_out}] if batchnorm else []
        return [{"type": "Conv2d", "in_channels": c_in, "out_channels": c_out, "kernel_size": 3,
                 "padding": "same"}, *bn, {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}]

    return [*block(1, 32), *block(32, 64), {"type": "Flatten"},
            {"type": "Linear", "in_features": 7 * 14 * 64, "out_features": 128}, {"type": "ReLU"},
            {"type": "Dropout", "p": 0.3},
            {"type": "Linear", "in_features": 128, "out_features": 100}]


def forward_flops(spec: list[dict], shape: tuple) -> int:
    """FLOPs of one example's forward pass through the Linear and Conv2d layers."""
    model = Sequential.from_spec(spec, np.random.default_rng(0))
    flops = 0
    for layer, entry in zip(model.layers, spec):
        out = layer.output_shape(shape)
        if entry["type"] == "Linear":
            flops += 2 * entry["in_features"] * entry["out_features"]
        elif entry["type"] == "Conv2d":
            flops += 2 * int(np.prod(out)) * entry["in_channels"] * entry["kernel_size"] ** 2
        shape = out
    return flops


def torch_model(spec: list[dict]):
    """The same architecture in torch.nn, default NCHW layout; Flatten there is (C, H, W) order."""
    import torch.nn as tnn

    layers = []
    for entry in spec:
        args = {k: v for k, v in entry.items() if k != "type"}
        layers.append(getattr(tnn, entry["type"])(**args))
    return tnn.Sequential(*layers)


def numpy_step(model, opt, x, y):
    logits = model.forward(x, training=True)
    _, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    opt.step(model.params(), model.grads())


def torch_step(model, opt, x, y):
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(np_fn, torch_fn, rounds: int, block: int, settle: int = 3) -> tuple[float, float | None]:
    """Median seconds per call of np_fn and torch_fn (or None), in interleaved rounds.

    A round runs `block` calls of each framework after a 0.3 s pause; the first `settle` calls
    of a block are not timed. Without this, the other framework's idle BLAS / OpenMP threads,
    still spinning, are charged to whoever runs next (measured: up to 10x on the first call).
    """
    t_np, t_torch = [], []
    for _ in range(rounds):
        for fn, times in ((np_fn, t_np), (torch_fn, t_torch)):
            if fn is None:
                continue
            time.sleep(0.3)
            for _ in range(settle):
                fn()
            times.extend(timed(fn) for _ in range(block - settle))
    return statistics.median(t_np), (statistics.median(t_torch) if torch_fn else None)


def machine() -> str:
    """CPU model and core count, for the table header."""
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per benchmark")
    parser.add_argument("--block", type=int, default=8,
                        help="steps per framework per round; the first 3 are not timed")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = parser.parse_args()

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not importable: NumPy timings only")
    if torch is not None:
        torch.set_num_threads(2)
        torch.manual_seed(0)

    rng = np.random.default_rng(0)
    batch = 128
    cases = [("MLP train step", MLP, (28, 28, 1), 10),
             ("CNN train step", cnn_spec(False), (28, 56, 1), 100),
             ("CNN+BN train step", cnn_spec(True), (28, 56, 1), 100)]
    rows = []
    for name, spec, shape, classes in cases:
        model = Sequential.from_spec(spec, rng)
        opt = Adam(lr=1e-3)
        x = rng.uniform(0.01, 1.0, (batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, batch)
        torch_fn = None
        if torch is not None:
            tmodel = torch_model(spec).train()
            topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
            tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            ty = torch.from_numpy(y)
            torch_fn = functools.partial(torch_step, tmodel, topt, tx, ty)
        t_np, t_torch = paired(functools.partial(numpy_step, model, opt, x, y), torch_fn, args.rounds,
                               args.block)
        rows.append((name, batch, t_np, t_torch, 3 * forward_flops(spec, shape) * batch))

    model = Sequential.from_spec(cnn_spec(False), rng)
    x = rng.uniform(0.01, 1.0, (1000, 28, 56, 1)).astype(np.float32)
    torch_fn = None
    if torch is not None:
        tmodel = torch_model(cnn_spec(False)).eval()
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

        def torch_fn():
            with torch.no_grad():
                tmodel(tx)
    t_np, t_torch = paired(lambda: model.forward(x, training=False), torch_fn, args.rounds, 4, 1)
    rows.append(("CNN inference", 1000, t_np, t_torch, forward_flops(cnn_spec(False), (28, 56, 1)) * 1000))

    x10k = rng.uniform(0.01, 1.0, (10_000, 28, 56, 1)).astype(np.float32)
    t10k = min(timed(lambda: model.predict_proba(x10k)) for _ in range(3))

    print(f"nn/ benchmark, {date.today()}, {machine()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__} (2 threads)" if torch else ""))
    head = f"{'case':<18} {'batch':>5} {'numpy ms':>9} {'samples/s':>9} {'GFLOP/s':>7}"
    if torch is not None:
        head += f" {'torch ms':>9} {'ratio':>6}"
    print(head)
    for name, b, t_np, t_torch, flops in rows:
        line = f"{name:<18} {b:>5} {t_np * 1e3:>9.1f} {b / t_np:>9.0f} {flops / t_np / 1e9:>7.1f}"
        if t_torch is not None:
            line += f" {t_torch * 1e3:>9.1f} {t_np / t_torch:>6.2f}"
        print(line)
    print(f"predict_proba on 10,000 MNIST-100 images: {t10k:.2f} s (target < 3 s)")
    print("targets (ratio numpy/torch): MLP step <= 0.8, CNN step <= 1.0, CNN inference <= 0.5")


if __name__ == "__main__":
    main()
