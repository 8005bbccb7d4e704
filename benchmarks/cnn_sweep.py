"""Dev accuracy of CNN variants on MNIST-100 (the README's table under "Why these models").

    python3 benchmarks/cnn_sweep.py --data data/mnist [--only t8w t16we] [--seed 3] [--out F]

Trains each variant with params.yaml's cnn optimiser, schedule, batch and seed (--seed to
change it), on the engine of --device (gpu: CuPy; 8 epochs take about 30 s on an H200), one
after another until --budget seconds have passed, and prints each epoch's dev accuracy. It
synthesises MNIST-100 from the prepare stage's data as bench_gpu.py does, and needs neither
pydantic nor DVC, so it runs on a bare GPU machine. --device cpu --train-size 1024
--epochs-scale 0.1 is a quick dry run."""
import argparse, json, os, sys, time, traceback
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from bench import read_params
from bench_gpu import mnist100
from nn import engine
from nn.augment import random_shift, random_warp
from nn.backend import get_device
from nn.mnist.modelfile import normalize
from nn.schedules import make_schedule
from nn.train import fit



def trunk(c1, c2, bn2d=False):
    """conv3x3 1->c1, ReLU, pool 2, conv3x3 c1->c2, ReLU, pool 2, Flatten (BatchNorm2d after each conv)."""
    conv = lambda i, o: [{"type": "Conv2d", "in_channels": i, "out_channels": o, "kernel_size": 3, "padding": "same"}]
    bn = lambda c: [{"type": "BatchNorm2d", "num_features": c}] if bn2d else []
    return (conv(1, c1) + bn(c1) + [{"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}]
            + conv(c1, c2) + bn(c2) + [{"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"}])


def tiles(c1=32, c2=64, hidden=128, p=0.3, bn2d=False):
    """params.yaml's two-digit CNN (Tiles ... Untile, OuterSum), its widths as given."""
    return ([{"type": "Tiles", "parts": 2}] + trunk(c1, c2, bn2d) + [
        {"type": "Linear", "in_features": 49 * c2, "out_features": hidden},
        {"type": "BatchNorm1d", "num_features": hidden}, {"type": "ReLU"}, {"type": "Dropout", "p": p},
        {"type": "Linear", "in_features": hidden, "out_features": 10},
        {"type": "Untile", "parts": 2}, {"type": "OuterSum"}])


def joint(c1=32, c2=64, hidden=128, p=0.3):
    """The CNN that read the whole pair (the params before 2026-11-26's two-digit one)."""
    return trunk(c1, c2) + [
        {"type": "Linear", "in_features": 98 * c2, "out_features": hidden},
        {"type": "BatchNorm1d", "num_features": hidden}, {"type": "ReLU"}, {"type": "Dropout", "p": p},
        {"type": "Linear", "in_features": hidden, "out_features": 100}]


WARPS = {"rotate": 8, "scale": 0.08, "shear": 8}
ELASTIC = {**WARPS, "elastic": 15}
# name: (layers, epochs, augmentation beyond params.yaml's +-2 px shifts). t: the two-digit CNN
# of params.yaml, s: the same with 16/32 channels, j: the CNN that read the whole pair.
CONFIGS = {
    "t8": (tiles(), 8, {}), "t8w": (tiles(), 8, WARPS), "t16w": (tiles(), 16, WARPS),
    "t16": (tiles(), 16, {}), "s16w": (tiles(16, 32), 16, WARPS), "t16we": (tiles(), 16, ELASTIC),
    "t12w": (tiles(), 12, WARPS), "s24w": (tiles(16, 32), 24, WARPS), "t24w": (tiles(), 24, WARPS),
    "j8": (joint(), 8, {}), "t8we": (tiles(), 8, ELASTIC), "t12we": (tiles(), 12, ELASTIC),
    "t6w": (tiles(), 6, WARPS),
}


def train_one(name, spec, epochs, aug, data, p, device, transfer, seed):
    """Train one variant; returns its summary dict. data: (x_train, y_train, x_dev, y_dev, fill)."""
    x_tr, y_tr, x_dv, y_dv, fill = data
    aug = {"rotate": 0, "scale": 0, "shear": 0, "elastic": 0, **aug}

    def augment(xb, g):
        xb = random_shift(xb, p["max_shift"], g, fill=fill)
        return random_warp(xb, g, aug["rotate"], aug["scale"], aug["shear"], fill=fill,
                           elastic=aug["elastic"], elastic_sigma=4)

    def on_epoch(r):
        print(f"  {name} epoch {r['epoch']:2d} loss {r['loss']:.4f} train {r['train_acc']:.4f} "
              f"dev {r['dev_acc']:.4f} {r['seconds']:.1f} s", flush=True)

    rng = np.random.default_rng(seed)
    model = engine.build(spec, rng, "fast", device=device)
    opt = engine.optimizer(p["optimizer"]["name"], "fast", device, lr=p["optimizer"]["lr"],
                           weight_decay=p["optimizer"].get("weight_decay", 0.0))
    steps = -(-len(y_tr) // p["batch_size"])
    sched = make_schedule(p["schedule"]["name"], p["optimizer"]["lr"], epochs * steps, steps,
                          **p["schedule"].get("args", {}))
    t0 = time.perf_counter()
    hist = fit(model, opt, x_tr, y_tr, x_dv, y_dv, epochs=epochs, batch_size=p["batch_size"],
               rng=rng, schedule=sched, augment=augment, device=device, transfer=transfer,
               on_epoch=on_epoch)
    return {"epochs": epochs, "aug": aug, "final_dev": hist[-1]["dev_acc"],
            "best_dev": max(r["dev_acc"] for r in hist), "train": hist[-1]["train_acc"],
            "seconds": time.perf_counter() - t0, "params": model.num_params()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/mnist", help="the prepare stage's MNIST splits")
    ap.add_argument("--budget", type=float, default=400, help="start no variant after this many s")
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), help="these variants, in order")
    ap.add_argument("--seed", type=int, help="instead of params.yaml's cnn.seed")
    ap.add_argument("--device", default="gpu", choices=["cpu", "gpu"])
    ap.add_argument("--transfer", default="once", choices=["batch", "once"])
    ap.add_argument("--train-size", type=int, help="the first N training pairs only (dry runs)")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count")
    ap.add_argument("--out", help="also write the results as JSON here")
    a = ap.parse_args()
    params = read_params()
    p = params["cnn"]
    splits = mnist100(a.data, params["mnist100"])
    (tr_i, y_tr), (dv_i, y_dv) = splits["train"], splits["dev"]
    if a.train_size:
        tr_i, y_tr = tr_i[:a.train_size], y_tr[:a.train_size]
    norm = {"mean": float(tr_i.mean(dtype=np.float64) / 255),
            "std": float(tr_i.std(dtype=np.float64) / 255)}
    data = (normalize(tr_i, norm), y_tr, normalize(dv_i, norm), y_dv,
            np.float32(-norm["mean"] / norm["std"]))
    device = get_device(a.device)
    seed = p["seed"] if a.seed is None else a.seed
    results, start = {}, time.perf_counter()
    for name in a.only or CONFIGS:
        if time.perf_counter() - start > a.budget:
            print(f"{name}: skipped (budget)")
            continue
        spec, epochs, aug = CONFIGS[name]
        epochs = max(1, round(epochs * a.epochs_scale))
        try:
            r = results[name] = train_one(name, spec, epochs, aug, data, p, device, a.transfer, seed)
        except Exception as e:  # one failed variant does not end the sweep
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
            continue
        print(f"{name}: final dev {r['final_dev'] * 100:.2f} best {r['best_dev'] * 100:.2f} "
              f"train {r['train'] * 100:.2f} in {r['seconds']:.1f} s", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
