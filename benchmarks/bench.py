"""Time nn/ against PyTorch on the CPU: training steps of the MLP and CNN that params.yaml trains,
on the fast engine and on the reference layers, and CNN inference.

    .venv/bin/python benchmarks/bench.py [--rounds 5] [--block 8] [--no-torch] [--no-reference]

The architectures and the optimiser are read from params.yaml (mlp.layers, cnn.layers,
*.optimizer), so the benchmark times what the pipeline trains. Rounds alternate a block of
NumPy steps with a block of PyTorch steps, so both see the same machine load; each block starts
with a pause and 3 untimed steps. The table gives the median step (5 rounds x 5 timed steps = 25
by default) and the ratio NumPy / PyTorch, against PyTorch's default NCHW layout and, for the
CNN, `channels_last`. Data are random and non-zero. GFLOP/s counts the multiply-adds of Linear
and Conv2d layers (2 FLOPs each) in the forward pass, times 3 for a training step (forward,
input and weight gradients).
"""

import argparse
import functools
import os
import platform
import statistics
import time
from datetime import date

import numpy as np

from nn.engine import build, optimizer
from nn.losses import softmax_cross_entropy

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read_params(path: str = os.path.join(ROOT, "params.yaml")) -> dict:
    try:
        from ruamel.yaml import YAML  # DVC's parser, as the stages read params.yaml
    except ImportError:  # bench_gpu.py on a machine with PyYAML only
        import yaml

        with open(path) as f:
            return yaml.safe_load(f)
    with open(path) as f:
        return YAML(typ="safe").load(f)


def forward_flops(spec: list[dict], shape: tuple) -> int:
    """FLOPs of one example's forward pass through the Linear and Conv2d layers."""
    model = build(spec, np.random.default_rng(0), "reference")
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

    class OuterSum(tnn.Module):  # nn.layers.OuterSum: (N, 2k) -> (N, k*k), u_a + v_b
        def forward(self, x):
            k = x.shape[1] // 2
            return (x[:, :k, None] + x[:, None, k:]).reshape(len(x), k * k)

    class Tiles(tnn.Module):  # nn.layers.Tiles, in NCHW: (N, C, H, p*W) -> (p*N, C, H, W)
        def __init__(self, parts):
            super().__init__()
            self.parts = parts

        def forward(self, x):
            n, c, h, w = x.shape
            x = x.reshape(n, c, h, self.parts, w // self.parts).permute(0, 3, 1, 2, 4)
            return x.reshape(n * self.parts, c, h, w // self.parts)

    class Untile(Tiles):  # nn.layers.Untile: (p*N, F) -> (N, p*F)
        def forward(self, x):
            return x.reshape(len(x) // self.parts, self.parts * x.shape[1])

    ours = {"OuterSum": OuterSum, "Tiles": Tiles, "Untile": Untile}
    layers = []
    for entry in spec:
        args = {k: v for k, v in entry.items() if k not in ("type", "init")}
        layers.append((ours.get(entry["type"]) or getattr(tnn, entry["type"]))(**args))
    return tnn.Sequential(*layers)


def make_optimizers(cfg: dict, model, tmodel=None, engine_name: str = "reference"):
    """nn's optimiser from params.yaml's optimizer section for a model on `engine_name` (the
    CPU engine's flat-buffer Adam/AdamW there: nn.engine.optimizer), and PyTorch's same one."""
    name, lr, wd = cfg["name"], cfg["lr"], cfg.get("weight_decay", 0.0)
    if name not in ("adam", "adamw"):
        raise SystemExit(f"bench.py times Adam and AdamW, params.yaml has {name!r}")
    ours = optimizer(name, engine_name, lr=lr, weight_decay=wd)
    if tmodel is None:
        return ours, None
    import torch

    theirs = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(tmodel.parameters(), lr=lr,
                                                                        weight_decay=wd)
    return ours, theirs


def numpy_step(model, opt, x, y):
    logits = model.forward(x, training=True)
    _, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits, input_grad=False)
    opt.step(model.params, model.grads)


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
    parser.add_argument("--no-reference", action="store_true", help="skip the reference layers")
    parser.add_argument("--params", default=os.path.join(ROOT, "params.yaml"),
                        help="the params file whose mlp and cnn sections to time (an experiment's)")
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

    params = read_params(args.params)
    engines = ["fast"] + ([] if args.no_reference else ["reference"])
    rng = np.random.default_rng(0)
    batch = 128
    rows = []  # (case, batch, {column: seconds}, flops)
    for name, shape, classes in (("mlp", (28, 28, 1), 10), ("cnn", (28, 56, 1), 100)):
        spec, cfg = params[name]["layers"], params[name]["optimizer"]
        x = rng.uniform(0.01, 1.0, (batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, batch)
        layouts = ["torch"] + (["torch channels_last"] if name == "cnn" else [])
        times = {}
        for i, engine in enumerate(engines):
            model = build(spec, np.random.default_rng(0), engine)
            opt, _ = make_optimizers(cfg, model, engine_name=engine)
            np_fn = functools.partial(numpy_step, model, opt, x, y)
            # PyTorch runs beside the fast engine; the slow reference alone (its ratio is info)
            for layout in layouts if (torch is not None and i == 0) else [None]:
                torch_fn = None
                if layout is not None:
                    tmodel = torch_model(spec).train()
                    _, topt = make_optimizers(cfg, model, tmodel)
                    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
                    if layout == "torch channels_last":
                        tmodel = tmodel.to(memory_format=torch.channels_last)
                        tx = tx.contiguous(memory_format=torch.channels_last)
                    torch_fn = functools.partial(torch_step, tmodel, topt, tx, torch.from_numpy(y))
                t_np, t_torch = paired(np_fn, torch_fn, args.rounds, args.block)
                times.setdefault(engine, []).append(t_np)
                if layout is not None:
                    times[layout] = t_torch
        times = {k: statistics.median(v) if isinstance(v, list) else v for k, v in times.items()}
        rows.append((f"{name.upper()} train step", batch, times, 3 * forward_flops(spec, shape) * batch))

    spec = params["cnn"]["layers"]
    x = rng.uniform(0.01, 1.0, (1000, 28, 56, 1)).astype(np.float32)
    times = {}
    torch_fn = None
    if torch is not None:
        tmodel = torch_model(spec).eval()
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

        def torch_fn():
            with torch.no_grad():
                tmodel(tx)
    for i, engine in enumerate(engines):
        model = build(spec, np.random.default_rng(0), engine)
        t_np, t_torch = paired(lambda: model.forward(x, training=False), torch_fn if i == 0 else None,
                               args.rounds, 4, 1)
        times[engine] = t_np
        if i == 0 and t_torch is not None:
            times["torch"] = t_torch
    rows.append(("CNN inference", 1000, times, forward_flops(spec, (28, 56, 1)) * 1000))

    model = build(spec, np.random.default_rng(0))
    x10k = rng.uniform(0.01, 1.0, (10_000, 28, 56, 1)).astype(np.float32)
    t10k = min(timed(lambda: model.predict_proba(x10k)) for _ in range(3))

    print(f"nn/ benchmark, {date.today()}, {machine()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__} (2 threads)" if torch else ""))
    print("ms per call (median); ratio = fast / torch; GFLOP/s of the fast engine")
    columns = [c for c in ("fast", "reference", "torch", "torch channels_last")
               if any(c in r[2] for r in rows)]
    head = f"{'case':<16} {'batch':>5} " + " ".join(f"{c:>12}" for c in columns) + f" {'GFLOP/s':>7}"
    ratios = [c for c in ("torch", "torch channels_last") if c in columns]
    head += "".join(f" {'ratio ' + ('NCHW' if c == 'torch' else 'NHWC'):>10}" for c in ratios)
    print(head)
    for name, b, times, flops in rows:
        line = f"{name:<16} {b:>5} " + " ".join(
            f"{times[c] * 1e3:>12.1f}" if c in times else f"{'-':>12}" for c in columns)
        line += f" {flops / times['fast'] / 1e9:>7.1f}"
        line += "".join(f" {times['fast'] / times[c]:>10.2f}" if c in times else f" {'-':>10}" for c in ratios)
        print(line)
    print(f"predict_proba on 10,000 MNIST-100 images (fast): {t10k:.2f} s")


if __name__ == "__main__":
    main()
