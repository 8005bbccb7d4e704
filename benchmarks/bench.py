"""Time nn/ against PyTorch on the CPU: training steps of the MLP and CNN that params.yaml trains,
on the fast engine and on the reference layers, and CNN inference.

    .venv/bin/python benchmarks/bench.py [--rounds 5] [--block 8] [--no-torch] [--no-reference]
    .venv/bin/python benchmarks/bench.py --profile [--steps 20]   # the fast engine, layer by layer

The architectures and the optimiser are read from params.yaml (mlp.layers, cnn.layers,
*.optimizer), so the benchmark times what the pipeline trains. Rounds alternate a block of
NumPy steps with a block of PyTorch steps, so both see the same machine load; each block starts
with a pause and 3 untimed steps, and each round with one float32 sgemm (n x n, BLAS at its
default threads) that gives the machine's matmul rate in the same run. Milliseconds are the
median of all timed steps; a ratio fast / PyTorch is taken per round (median step of each
block) and given as the median [min-max] over rounds, against PyTorch's default NCHW layout
and, for the CNN, `channels_last`. Data are random and non-zero.

FLOPs count the matrix products of Linear and Conv2d layers, 2 per multiply-add (biases,
activations and the optimiser are not counted), with each layer's real number of rows: one
example runs through the layers, so Tiles' two digits per pair are both counted. A training step
is the forward pass, the weight gradients (as many FLOPs) and the input gradients (as many
again) of every such layer but the first with parameters, whose input gradient neither the step
(`backward(..., input_grad=False)`) nor PyTorch (its input needs no grad) computes.
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
from nn.layers import Conv2d, Linear
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


def layer_flops(spec: list[dict], shape: tuple) -> list[tuple[int, int]]:
    """(forward, backward) FLOPs per example of each layer in a training step, 2 per multiply-add
    of the Linear and Conv2d matrix products, (0, 0) for the other layers.

    One example of `shape` runs through the reference layers, so each layer is counted with the
    rows it really gets: every row of a Linear's or Conv2d's output (an example, or one output
    pixel) is one row times its weight matrix W, whatever Tiles / Untile did to the batch before.
    Backward is the weight gradient (the forward's count) plus the input gradient (the same),
    except for the first layer with parameters: the step skips its dx (`input_grad=False`).
    """
    model = build(spec, np.random.default_rng(0), "reference")
    first = next((i for i, layer in enumerate(model.layers) if layer.params), None)
    x = np.zeros((1, *shape), np.float32)
    counts = []
    for i, layer in enumerate(model.layers):
        x = layer.forward(x, training=False)
        fwd = 0
        if isinstance(layer, (Linear, Conv2d)):
            fwd = 2 * (x.size // x.shape[-1]) * layer.params["W"].size   # rows x (fan-in x fan-out)
        counts.append((fwd, fwd if i == first else 2 * fwd))
    return counts


def forward_flops(spec: list[dict], shape: tuple) -> int:
    """FLOPs of one example's forward pass (inference)."""
    return sum(fwd for fwd, _ in layer_flops(spec, shape))


def train_flops(spec: list[dict], shape: tuple) -> int:
    """FLOPs of one example's training step: forward, weight and input gradients."""
    return sum(fwd + bwd for fwd, bwd in layer_flops(spec, shape))


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
        if entry["type"] == "Conv2d":
            args["padding"] = explicit_padding(args["kernel_size"], args.get("padding", 0))
        layers.append((ours.get(entry["type"]) or getattr(tnn, entry["type"]))(**args))
    return tnn.Sequential(*layers)


def explicit_padding(kernel_size, padding):
    """padding="same" of an odd kernel as the ints a PyTorch user writes (k // 2): torch's
    "same" path measured ~5% slower on the CNN. Even kernels (uneven padding) stay "same"."""
    if padding != "same":
        return padding
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if not all(k % 2 for k in ks):
        return padding
    return kernel_size // 2 if isinstance(kernel_size, int) else tuple(k // 2 for k in ks)


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


def sgemm_gflops(a: np.ndarray, b: np.ndarray) -> float:
    """GFLOP/s of one float32 product a @ b (2 n^3 FLOPs for n x n), BLAS at its default threads,
    after a pause that lets the previous block's threads go idle."""
    time.sleep(0.3)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / timed(lambda: a @ b) / 1e9


def paired(np_fn, torch_fn, rounds: int, block: int, settle: int = 3, probe=None):
    """Seconds per call of np_fn and torch_fn (or None), in interleaved rounds: two lists with one
    list of timed calls per round (the second None without torch_fn).

    A round calls `probe` (the sgemm rate) if given, then runs `block` calls of each framework
    after a 0.3 s pause; the first `settle` calls of a block are not timed. Without this, the
    other framework's idle BLAS / OpenMP threads, still spinning, are charged to whoever runs
    next (measured: up to 10x on the first call).
    """
    t_np, t_torch = [], []
    for _ in range(rounds):
        if probe is not None:
            probe()
        for fn, times in ((np_fn, t_np), (torch_fn, t_torch)):
            if fn is None:
                continue
            time.sleep(0.3)
            for _ in range(settle):
                fn()
            times.append([timed(fn) for _ in range(block - settle)])
    return t_np, (t_torch if torch_fn else None)


def spread(values) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratios(fast_rounds: list[list[float]], torch_rounds: list[list[float]]) -> list[float]:
    """Per round: the median fast call over the median PyTorch call of the same round."""
    return [statistics.median(f) / statistics.median(t) for f, t in zip(fast_rounds, torch_rounds, strict=True)]


def ratio_cell(fast_rounds, torch_rounds) -> str:
    """"median [min-max]" of the per-round ratios, and "ahead" only if every round was < 1."""
    med, lo, hi = spread(ratios(fast_rounds, torch_rounds))
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]" + (" ahead" if hi < 1 else "")


def flat(rounds: list[list[float]]) -> list[float]:
    return [t for r in rounds for t in r]


def profile(spec: list[dict], cfg: dict, x: np.ndarray, y: np.ndarray, steps: int):
    """Seconds per training step of each fast-engine layer method and of the optimiser step, over
    `steps` steps after 3 untimed ones: {(layer index or None, label): seconds}, and the steps'
    total. Each layer's forward / forward_pool / backward (and opt.step) is wrapped on the
    instance, so nothing in nn/ changes; a fused Conv2d.forward_pool includes its ReLU and pool."""
    model = build(spec, np.random.default_rng(0), "fast")
    opt, _ = make_optimizers(cfg, model, engine_name="fast")
    spent = {}

    def wrap(obj, method, key):
        fn = getattr(obj, method)

        def timed_fn(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        setattr(obj, method, timed_fn)

    for i, layer in enumerate(model.layers):
        for method in ("forward", "forward_pool", "backward"):
            if hasattr(layer, method):
                wrap(layer, method, (i, f"{type(layer).__name__}.{method}"))
    wrap(opt, "step", (None, f"{type(opt).__name__}.step"))
    step = functools.partial(numpy_step, model, opt, x, y)
    for _ in range(3):
        step()
    spent.clear()
    total = sum(timed(step) for _ in range(steps))
    return {k: v / steps for k, v in spent.items()}, total / steps


def print_profile(params: dict, steps: int, sgemm: float, rng: np.random.Generator):
    for name, shape, classes in (("cnn", (28, 56, 1), 100), ("mlp", (28, 28, 1), 10)):
        spec, cfg, batch = params[name]["layers"], params[name]["optimizer"], params[name]["batch_size"]
        x = rng.uniform(0.01, 1.0, (batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, batch)
        spent, step = profile(spec, cfg, x, y, steps)
        counts = layer_flops(spec, shape)
        print(f"\n{name.upper()} train step (batch {batch}, fast engine): {step * 1e3:.1f} ms "
              f"(mean of {steps} steps)")
        print(f"{'layer':<5} {'method':<24} {'ms/step':>8} {'% step':>7} {'MFLOP':>8} {'GFLOP/s':>8} {'% sgemm':>8}")
        for (i, label), s in sorted(spent.items(), key=lambda kv: -kv[1]):
            fwd, bwd = counts[i] if i is not None else (0, 0)
            f = (bwd if label.endswith("backward") else fwd) * batch
            rate = f"{f / s / 1e9:>8.1f} {100 * f / s / 1e9 / sgemm:>7.0f}%" if f else f"{'-':>8} {'-':>8}"
            mflop = f"{f / 1e6:>8.1f}" if f else f"{'-':>8}"
            print(f"{'-' if i is None else i:<5} {label:<24} {s * 1e3:>8.2f} {100 * s / step:>6.1f}% {mflop} {rate}")
        other = step - sum(spent.values())  # a fused forward_pool includes its ReLU and MaxPool2d
        print(f"{'':<5} {'other (loss, Python)':<24} {other * 1e3:>8.2f} {100 * other / step:>6.1f}%")


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
    parser.add_argument("--sgemm", type=int, default=2048, help="size n of the n x n sgemm timed each round")
    parser.add_argument("--inference-batch", type=int, default=1000, help="images per CNN inference call")
    parser.add_argument("--predict", type=int, default=10_000,
                        help="images for the predict_proba timing (0: skip it)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: the fast engine's train steps, layer by layer")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model for --profile")
    args = parser.parse_args()
    if args.rounds < 1 or args.block < 4:
        parser.error("--rounds must be >= 1 and --block >= 4 (3 untimed steps, then at least 1 timed)")

    rng = np.random.default_rng(0)
    params = read_params(args.params)
    a, b = (rng.standard_normal((args.sgemm, args.sgemm), np.float32) for _ in range(2))
    rates = []  # GFLOP/s of the sgemm, one per round of every benchmark

    def probe():
        rates.append(sgemm_gflops(a, b))

    if args.profile:
        for _ in range(args.rounds):
            probe()
        med, lo, hi = spread(rates)
        print(f"nn/ profile, {date.today()}, {machine()}, numpy {np.__version__}, "
              f"sgemm {args.sgemm}: {med:.1f} [{lo:.1f}-{hi:.1f}] GFLOP/s")
        print_profile(params, args.steps, med, rng)
        return

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not importable: NumPy timings only")
    if torch is not None:
        torch.set_num_threads(2)
        torch.manual_seed(0)

    engines = ["fast"] + ([] if args.no_reference else ["reference"])
    rows = []  # (case, batch, {column: [[seconds per call] per round]}, flops per call)
    for name, shape, classes in (("mlp", (28, 28, 1), 10), ("cnn", (28, 56, 1), 100)):
        spec, cfg, batch = params[name]["layers"], params[name]["optimizer"], params[name]["batch_size"]
        x = rng.uniform(0.01, 1.0, (batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, batch)
        layouts = ["torch"] + (["torch channels_last"] if name == "cnn" else [])
        times = {}
        for i, engine in enumerate(engines):
            model = build(spec, np.random.default_rng(0), engine)
            opt, _ = make_optimizers(cfg, model, engine_name=engine)
            np_fn = functools.partial(numpy_step, model, opt, x, y)
            # PyTorch runs beside the fast engine; the slow reference alone
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
                t_np, t_torch = paired(np_fn, torch_fn, args.rounds, args.block, probe=probe)
                times.setdefault(engine, []).extend(t_np)
                if layout is not None:
                    times[layout] = t_torch
                    times[f"fast beside {layout}"] = t_np
        rows.append((f"{name.upper()} train step", batch, times, train_flops(spec, shape) * batch))

    spec = params["cnn"]["layers"]
    n = args.inference_batch
    x = rng.uniform(0.01, 1.0, (n, 28, 56, 1)).astype(np.float32)
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
                               args.rounds, 4, 1, probe=probe)
        times[engine] = t_np
        if i == 0 and t_torch is not None:
            times["torch"] = t_torch
            times["fast beside torch"] = t_np
    rows.append(("CNN inference", n, times, forward_flops(spec, (28, 56, 1)) * n))

    t_predict = None
    if args.predict:
        model = build(spec, np.random.default_rng(0))
        x_predict = rng.uniform(0.01, 1.0, (args.predict, 28, 56, 1)).astype(np.float32)
        t_predict = min(timed(lambda: model.predict_proba(x_predict)) for _ in range(3))

    sgemm, lo, hi = spread(rates)
    print(f"nn/ benchmark, {date.today()}, {machine()}, numpy {np.__version__}"
          + (f", torch {torch.__version__} (2 threads)" if torch else "")
          + f", sgemm {args.sgemm}: {sgemm:.1f} [{lo:.1f}-{hi:.1f}] GFLOP/s ({len(rates)} products, one per round)")
    print("ms: median of all timed calls; GFLOP/s: Linear and Conv2d matmul FLOPs / median ms, "
          "% of the sgemm's median; ratio fast / torch: median [min-max] over rounds, 'ahead' if all < 1")
    columns = [c for c in ("fast", "reference", "torch", "torch channels_last")
               if any(c in r[2] for r in rows)]
    ratio_columns = [c for c in ("torch", "torch channels_last") if c in columns]
    table = [["case", "batch", *(f"{c} ms" for c in columns), "fast GFLOP/s", "% sgemm"]
             + (["torch GFLOP/s", "torch %"] if "torch" in columns else [])
             + [f"ratio {'NCHW' if c == 'torch' else 'NHWC'}" for c in ratio_columns]]
    for name, batch, times, flops in rows:
        ms = {c: statistics.median(flat(times[c])) for c in columns if c in times}
        line = [name, str(batch), *(f"{ms[c] * 1e3:.1f}" if c in ms else "-" for c in columns)]
        for c in ["fast"] + (["torch"] if "torch" in columns else []):
            rate = flops / ms[c] / 1e9 if c in ms else None
            line += [f"{rate:.1f}", f"{100 * rate / sgemm:.0f}%"] if rate else ["-", "-"]
        line += [ratio_cell(times[f"fast beside {c}"], times[c]) if c in times else "-" for c in ratio_columns]
        table.append(line)
    widths = [max(len(r[j]) for r in table) for j in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(r, widths))))
    if t_predict is not None:
        print(f"predict_proba on {args.predict:,} MNIST-100 images (fast): {t_predict:.2f} s")


if __name__ == "__main__":
    main()
