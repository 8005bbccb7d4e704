"""The reference layers, losses and optimisers on CuPy arrays, and the GPU engine (nn.gpu: its
kernels, layers and fused optimisers), against the reference on NumPy; short trainings on the
GPU, on both engines; a GPU-trained model file loaded and predicted on the CPU.

Skipped without CuPy and a CUDA device (CI); run on a GPU machine with
`python3 -m pytest -q tests/test_gpu.py`. Imports nothing beyond nn/, NumPy and CuPy.
"""

import copy

import numpy as np
import pytest

from nn import engine
from nn.augment import random_shift, random_warp
from nn.backend import CPU, DeviceError, get_device, to_numpy
from nn.engine import build
from nn.gpu import layers as gpu_layers
from nn.gpu import optim as gpu_optim
from nn.gpu.model import GpuSequential
from nn.layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                       OuterSum, ReLU, Tiles, Untile)
from nn.losses import softmax_cross_entropy
from nn.mnist.modelfile import load, save
from nn.model import Sequential
from nn.optim import SGD, Adam, AdamW, clip_grad_norm
from nn.train import evaluate, fit

try:
    GPU = get_device("gpu")
except DeviceError as e:
    pytest.skip(f"no GPU: {e}", allow_module_level=True)

F64 = dict(rtol=1e-9, atol=1e-10)


def layers(rng):
    """(layer, input shape) for every layer type, float64 (Dropout: float32 masks are drawn)."""
    d = np.float64
    return [
        (Linear(6, 4, rng=rng, dtype=d), (5, 6)),
        (Conv2d(3, 4, 3, padding="same", rng=rng, dtype=d), (2, 7, 9, 3)),
        (Conv2d(2, 3, (3, 2), stride=2, padding=1, rng=rng, dtype=d), (2, 8, 7, 2)),
        (Conv2d(2, 5, 4, padding="same", rng=rng, dtype=d), (3, 6, 5, 2)),      # uneven padding
        (Conv2d(1, 6, (2, 3), stride=(1, 2), bias=False, rng=rng, dtype=d), (2, 5, 9, 1)),
        (MaxPool2d(2), (2, 6, 8, 3)),
        (MaxPool2d(2), (2, 7, 9, 3)),                                            # floor: a row and a column left out
        (MaxPool2d(3, stride=2), (2, 7, 9, 2)),                                  # overlapping windows
        (MaxPool2d((2, 3), stride=(1, 2)), (2, 5, 8, 2)),
        (ReLU(), (4, 5)),
        (Dropout(0.4, rng=np.random.default_rng(3)), (6, 7)),
        (Flatten(), (2, 3, 4, 2)),
        (BatchNorm1d(5, dtype=d), (8, 5)),
        (BatchNorm2d(3, dtype=d), (2, 4, 5, 3)),
        (OuterSum(), (4, 8)),
        (Tiles(2), (3, 4, 6, 2)),
        (Untile(2), (6, 5)),
    ]


def on_engine(layer, name: str):
    """A copy of a reference layer (same weights; Dropout: its Generator in the same state) as
    the engine's class: "reference" keeps the class, "gpu" swaps in nn.gpu.layers'."""
    twin = copy.deepcopy(layer)
    if name == "gpu":
        twin.__class__ = gpu_layers.LAYERS[type(layer).__name__]
    return twin


ENGINES = ["reference", "gpu"]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("index", range(17))
def test_every_layer_forward_and_gradients_match_the_cpu(index, name):
    rng = np.random.default_rng(index)
    cpu, shape = layers(np.random.default_rng(0))[index]
    gpu = on_engine(cpu, name)
    Sequential([gpu]).to(GPU)
    x = rng.standard_normal(shape)
    x[x.size // 2:] = np.round(x[x.size // 2:])  # ties for MaxPool's first-maximum rule
    out = cpu.forward(x, training=True)
    out_gpu = gpu.forward(GPU.asarray(x), training=True)
    np.testing.assert_allclose(to_numpy(out_gpu), out, **F64)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(to_numpy(gpu.backward(GPU.asarray(dout))), cpu.backward(dout), **F64)
    for k, g in cpu.grads.items():
        np.testing.assert_allclose(to_numpy(gpu.grads[k]), g, **F64, err_msg=k)
    for k, b in cpu.buffers.items():
        np.testing.assert_allclose(to_numpy(gpu.buffers[k]), b, **F64, err_msg=k)
    np.testing.assert_allclose(to_numpy(gpu.forward(GPU.asarray(x), training=False)),
                               cpu.forward(x, training=False), **F64)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_the_engine_skips_dx_of_a_first_layer_but_not_its_weight_gradients(index):
    cpu, shape = layers(np.random.default_rng(0))[index]
    gpu = on_engine(cpu, "gpu")
    Sequential([gpu]).to(GPU)
    x = np.random.default_rng(1).standard_normal(shape)
    out = cpu.forward(x, training=True)
    gpu.forward(GPU.asarray(x), training=True)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    cpu.backward(dout)
    assert gpu.backward(GPU.asarray(dout), input_grad=False) is None
    for k, g in cpu.grads.items():
        np.testing.assert_allclose(to_numpy(gpu.grads[k]), g, **F64, err_msg=k)


def test_the_kernels_match_the_reference_at_the_default_cnns_size_in_float32():
    """conv2 and its pool at batch 64 of 14x28x32 float32: index arithmetic at scale, bit-equal
    where the reference's sums run in the same order (col2im, pooling)."""
    rng = np.random.default_rng(5)
    conv = Conv2d(32, 64, 3, padding="same", rng=rng)
    x = np.maximum(rng.standard_normal((64, 14, 28, 32)).astype(np.float32), 0)  # ties at 0
    gconv = on_engine(conv, "gpu")
    Sequential([gconv]).to(GPU)
    out, gout = conv.forward(x, True), gconv.forward(GPU.asarray(x), True)
    np.testing.assert_allclose(to_numpy(gout), out, rtol=1e-4, atol=1e-4)
    pool, gpool = MaxPool2d(2), gpu_layers.MaxPool2d(2)
    p, gp = pool.forward(out, True), gpool.forward(GPU.asarray(out), True)
    np.testing.assert_array_equal(to_numpy(gp), p)
    d = rng.standard_normal(p.shape).astype(np.float32)
    dx_pool = pool.backward(d)
    np.testing.assert_array_equal(to_numpy(gpool.backward(GPU.asarray(d))), dx_pool)
    conv.backward(dx_pool)
    gdx = gconv.backward(GPU.asarray(dx_pool))
    from nn.layers import col2im
    dcols = (dx_pool.reshape(-1, 64) @ conv.params["W"].reshape(-1, 64).T).reshape(64, 14, 28, 3, 3, 32)
    np.testing.assert_allclose(to_numpy(gdx), col2im(dcols, x.shape, conv.pads, 1, 1), rtol=1e-4, atol=1e-4)
    for k, g in conv.grads.items():
        np.testing.assert_allclose(to_numpy(gconv.grads[k]), g, rtol=1e-3, atol=1e-3, err_msg=k)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_matches_the_cpu(smoothing):
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((7, 5)) * 4, rng.integers(0, 5, 7)
    loss, d = softmax_cross_entropy(logits, labels, smoothing)
    loss_gpu, d_gpu = softmax_cross_entropy(GPU.asarray(logits), GPU.asarray(labels), smoothing)
    assert loss_gpu == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(to_numpy(d_gpu), d, **F64)


@pytest.mark.parametrize("make", [lambda: Adam(0.01, weight_decay=0.1), lambda: AdamW(0.01, weight_decay=0.1),
                                  lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda: gpu_optim.Adam(0.01, weight_decay=0.1),
                                  lambda: gpu_optim.AdamW(0.01, weight_decay=0.1)])
def test_optimizers_and_clipping_match_the_cpu_and_keep_state_on_the_gpu(make):
    rng = np.random.default_rng(2)
    params = {"0.W": rng.standard_normal((4, 3)), "0.b": rng.standard_normal(3)}
    on_gpu = {k: GPU.asarray(v) for k, v in params.items()}
    opt, opt_gpu = make(), make()
    if isinstance(opt, gpu_optim._Fused):  # the fused kernel on the GPU against the reference update
        opt = {gpu_optim.Adam: Adam, gpu_optim.AdamW: AdamW}[type(opt)](0.01, weight_decay=0.1)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        grads_gpu = {k: GPU.asarray(v) for k, v in grads.items()}
        assert clip_grad_norm(grads_gpu, 1.0) == pytest.approx(clip_grad_norm(grads, 1.0), rel=1e-12)
        opt.step(params, grads)
        opt_gpu.step(on_gpu, grads_gpu)
    for k, v in params.items():
        np.testing.assert_allclose(to_numpy(on_gpu[k]), v, **F64, err_msg=k)
    state = opt_gpu.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    resumed = make()
    resumed.load_state_dict(state)  # NumPy state, moved to the GPU by the next step
    resumed.step(on_gpu, {k: GPU.asarray(np.ones_like(v)) for k, v in params.items()})
    assert all(type(a).__module__.startswith("cupy") for st in resumed.state.values()
               for k, a in st.items() if k != "t")


def test_random_warp_on_the_gpu_is_the_cpu_warp():
    x = np.random.default_rng(5).standard_normal((16, 28, 56, 1)).astype(np.float32)
    kw = dict(rotate=10, scale=0.1, shear=8, fill=-0.4, elastic=20, elastic_sigma=4)
    expected = random_warp(x, np.random.default_rng(9), **kw)
    got = random_warp(GPU.asarray(x), np.random.default_rng(9), **kw)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_random_shift_on_the_gpu_is_the_cpu_shift():
    x = np.random.default_rng(4).standard_normal((64, 28, 56, 1)).astype(np.float32)
    expected = random_shift(x, 2, np.random.default_rng(9), fill=-0.4)
    got = random_shift(GPU.asarray(x), 2, np.random.default_rng(9), fill=-0.4)
    np.testing.assert_array_equal(to_numpy(got), expected)


SPEC = [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": "same"},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    # no bias before BatchNorm: its gradient is 0 up to rounding, which Adam's normalised steps
    # turn into a random walk that differs between devices (a bias there is never learnt)
    {"type": "Linear", "in_features": 8 * 7 * 7, "out_features": 32, "bias": False},
    {"type": "BatchNorm1d", "num_features": 32},
    {"type": "ReLU"},
    {"type": "Dropout", "p": 0.2},
    {"type": "Linear", "in_features": 32, "out_features": 10},
]


def toy_digits(n=1200, seed=0):
    """14x14 images with a bright bar whose row is the label: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0, 0.3, (n, 14, 14, 1)).astype(np.float32)
    x[np.arange(n), 2 + y, :, 0] += 2
    return x, y


def train(device, transfer="batch", engine_name="reference"):
    x, y = toy_digits()
    rng = np.random.default_rng(5)
    model = build(SPEC, rng, engine_name, device=device)
    opt = engine.optimizer("adamw", engine_name, device, lr=0.003, weight_decay=1e-4)
    history = fit(model, opt, x[:1000], y[:1000], x[1000:], y[1000:],
                  epochs=3, batch_size=64, rng=rng, device=device, transfer=transfer)
    return model, history


def test_the_fast_engine_on_the_gpu_is_the_gpu_engine():
    model = build(SPEC, np.random.default_rng(0), "fast", device=GPU)
    assert type(model) is GpuSequential
    assert type(engine.optimizer("adamw", "fast", GPU, lr=0.1)) is gpu_optim.AdamW
    assert all(type(v).__module__.startswith("cupy") for v in model.params.values())


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
def test_the_same_seed_gives_the_same_weights_on_the_gpu(engine_name):
    a, b = train(GPU, engine_name=engine_name)[0], train(GPU, engine_name=engine_name)[0]
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)


@pytest.mark.parametrize("engine_name, transfer", [("reference", "batch"), ("reference", "once"),
                                                   ("fast", "batch"), ("fast", "once")])
def test_a_short_training_on_the_gpu_learns_and_follows_the_cpu(engine_name, transfer):
    model, history = train(GPU, transfer, engine_name)
    cpu_model, cpu_history = train(CPU)
    assert history[-1]["dev_acc"] >= 0.9, history
    for r, c in zip(history, cpu_history):  # same batches and masks; rounding differs
        assert r["loss"] == pytest.approx(c["loss"], rel=1e-3)
    state = model.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    for k, v in cpu_model.state_dict().items():
        np.testing.assert_allclose(state[k], v, rtol=1e-2, atol=1e-3, err_msg=k)


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
def test_a_gpu_trained_model_file_loads_and_predicts_on_the_cpu(tmp_path, engine_name):
    model, _ = train(GPU, engine_name=engine_name)
    x, y = toy_digits(seed=1)
    path = tmp_path / "gpu.npz"
    save(path, model, normalization={"mean": 0.0, "std": 1.0}, input_shape=(14, 14, 1),
         classes=[str(c) for c in range(10)], meta={"device": "gpu"})
    for engine in ("fast", "reference"):
        cpu_model, info = load(path, engine=engine)
        assert info.meta == {"device": "gpu"}
        np.testing.assert_allclose(cpu_model.predict_proba(x), model.predict_proba(x), rtol=1e-4, atol=1e-5)
        assert evaluate(cpu_model, x, y)[1] == pytest.approx(evaluate(model, x, y, device=GPU)[1], abs=0.002)
