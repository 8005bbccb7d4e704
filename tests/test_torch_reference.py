"""Layers against torch.nn on the same weights and inputs, float64 (skipped without torch).

Our tensors are NHWC and torch's NCHW; Linear.W is torch's weight transposed and Conv2d.W
(kh, kw, C_in, C_out) is torch's (C_out, C_in, kh, kw) transposed.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU
from nn.model import Sequential

TOL = {"rtol": 1e-10, "atol": 1e-12}


def nchw(a):
    return torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), requires_grad=True)


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_linear_matches_torch():
    rng = np.random.default_rng(0)
    layer = Linear(7, 5, rng=rng, dtype=np.float64)
    layer.params["b"] = rng.standard_normal(5)
    ref = torch.nn.Linear(7, 5).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.params["W"].T))
        ref.bias.copy_(torch.tensor(layer.params["b"]))
    x = rng.standard_normal((4, 7))
    dout = rng.standard_normal((4, 5))
    tx = torch.tensor(x, requires_grad=True)
    out = ref(tx)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(layer.forward(x, training=True), out.detach().numpy(), **TOL)
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(layer.grads["W"], ref.weight.grad.numpy().T, **TOL)
    np.testing.assert_allclose(layer.grads["b"], ref.bias.grad.numpy(), **TOL)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("k,s,p,h,w", [(3, 1, 0, 6, 9), (3, 1, 1, 7, 6), (5, 1, "same", 8, 7),
                                       (4, 1, "same", 6, 7), (3, 2, 1, 9, 8)])
def test_conv2d_matches_torch(k, s, p, h, w):
    rng = np.random.default_rng(1)
    layer = Conv2d(3, 4, k, s, p, rng=rng, dtype=np.float64)
    layer.params["b"] = rng.standard_normal(4)
    ref = torch.nn.Conv2d(3, 4, k, s, p).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.params["W"].transpose(3, 2, 0, 1)))
        ref.bias.copy_(torch.tensor(layer.params["b"]))
    x = rng.standard_normal((2, h, w, 3))
    tx = nchw(x)
    out = ref(tx)
    ours = layer.forward(x, training=True)
    np.testing.assert_allclose(ours, nhwc(out), **TOL)
    dout = rng.standard_normal(ours.shape)
    out.backward(torch.tensor(dout.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(layer.backward(dout), nhwc(tx.grad), **TOL)
    np.testing.assert_allclose(layer.grads["W"], ref.weight.grad.numpy().transpose(2, 3, 1, 0), **TOL)
    np.testing.assert_allclose(layer.grads["b"], ref.bias.grad.numpy(), **TOL)


@pytest.mark.parametrize("k,s", [(2, None), (3, 2), (2, 1)])
def test_maxpool_with_ties_matches_torch(k, s):
    """Mostly exact zeros and repeated values: torch sends each gradient to one maximum."""
    rng = np.random.default_rng(2)
    x = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0], size=(2, 7, 9, 3))
    layer = MaxPool2d(k, s)
    tx = nchw(x)
    out = torch.nn.MaxPool2d(k, s)(tx)
    ours = layer.forward(x, training=True)
    np.testing.assert_array_equal(ours, nhwc(out))
    dout = rng.standard_normal(ours.shape)
    out.backward(torch.tensor(dout.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(layer.backward(dout), nhwc(tx.grad), rtol=0, atol=1e-14)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_conv_relu_pool_block_with_ties_matches_torch(batchnorm):
    """The fused / pool-layout fast path of Sequential, on MNIST-like input (zero background)."""
    rng = np.random.default_rng(3)
    conv = Conv2d(1, 4, 3, padding="same", rng=rng, dtype=np.float64)
    conv.params["W"][..., 0] = 0.0  # a constant channel: every window tied
    layers = [conv] + ([BatchNorm2d(4, dtype=np.float64)] if batchnorm else []) + [ReLU(), MaxPool2d(2)]
    model = Sequential(layers)
    ref_layers = [torch.nn.Conv2d(1, 4, 3, padding="same")]
    if batchnorm:
        ref_layers.append(torch.nn.BatchNorm2d(4))
    ref = torch.nn.Sequential(*ref_layers, torch.nn.ReLU(), torch.nn.MaxPool2d(2)).double()
    with torch.no_grad():
        ref[0].weight.copy_(torch.tensor(conv.params["W"].transpose(3, 2, 0, 1)))
        ref[0].bias.copy_(torch.tensor(conv.params["b"]))
    x = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0], size=(3, 8, 12, 1))
    tx = nchw(x)
    out = ref(tx)
    ours = model.forward(x, training=True)
    np.testing.assert_allclose(ours, nhwc(out), **TOL)
    dout = rng.standard_normal(ours.shape)
    out.backward(torch.tensor(dout.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(model.backward(dout, input_grad=True), nhwc(tx.grad), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], ref[0].weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(conv.grads["b"], ref[0].bias.grad.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("ours_cls,ref_cls,shape", [(BatchNorm1d, torch.nn.BatchNorm1d, (6, 4)),
                                                    (BatchNorm2d, torch.nn.BatchNorm2d, (3, 5, 7, 4))])
def test_batchnorm_matches_torch(ours_cls, ref_cls, shape):
    rng = np.random.default_rng(4)
    layer = ours_cls(4, eps=1e-3, momentum=0.2, dtype=np.float64)
    layer.params["gamma"] = rng.standard_normal(4)
    layer.params["beta"] = rng.standard_normal(4)
    ref = ref_cls(4, eps=1e-3, momentum=0.2).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.params["gamma"]))
        ref.bias.copy_(torch.tensor(layer.params["beta"]))
    to_torch = nchw if len(shape) == 4 else (lambda a: torch.tensor(a, requires_grad=True))
    from_torch = nhwc if len(shape) == 4 else (lambda t: t.detach().numpy())
    for step in range(2):  # two steps: running statistics compound
        x = rng.standard_normal(shape) * 2 + 1
        tx = to_torch(x)
        out = ref(tx)
        ours = layer.forward(x, training=True)
        np.testing.assert_allclose(ours, from_torch(out), **TOL)
        dout = rng.standard_normal(shape)
        out.backward(to_torch(dout).detach())
        np.testing.assert_allclose(layer.backward(dout), from_torch(tx.grad), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(layer.grads["gamma"], ref.weight.grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(layer.grads["beta"], ref.bias.grad.numpy(), rtol=1e-9)
        ref.zero_grad()
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy(), **TOL)
    x = rng.standard_normal(shape)
    ref.eval()
    np.testing.assert_allclose(layer.forward(x, training=False), from_torch(ref(to_torch(x))), **TOL)


def test_the_benchmarks_torch_twins_of_our_own_layers_compute_the_same():
    """benchmarks/bench.py times PyTorch on params.yaml's architectures; Tiles, Untile and
    OuterSum have no torch.nn class, so it brings its own. They must do what ours do."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench import torch_model

    from nn.layers import OuterSum, Tiles, Untile

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6, 2))
    twin = torch_model([{"type": "Tiles", "parts": 2}])
    np.testing.assert_array_equal(nhwc(twin(nchw(x))), Tiles(2).forward(x, training=False))
    scores = rng.standard_normal((6, 5))
    twin = torch_model([{"type": "Untile", "parts": 2}, {"type": "OuterSum"}])
    ours = Sequential([Untile(2), OuterSum()]).forward(scores, training=False)
    np.testing.assert_array_equal(twin(torch.tensor(scores)).numpy(), ours)
