"""The fast CPU engine held to the reference layers: every layer and every fused pattern, forward
outputs and every gradient, on inputs with ties, with and without threads and chunking."""

import numpy as np
import pytest
from layertable import CONV_CASES

from nn import layers as ref
from nn import optim
from nn.engine import build, optimizer
from nn.fast import FastSequential, kernels, threads
from nn.fast import layers as fast
from nn.fast import optim as fast_optim
from nn.gradcheck import check_gradients
from nn.model import Sequential

F64 = np.float64


@pytest.fixture(params=[False, True], ids=["serial", "threads"])
def threaded(request, monkeypatch):
    """Also run every convolution and elementwise pass on all cores, one image per chunk."""
    if request.param:
        monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 0)
        monkeypatch.setattr(kernels, "CHUNK_ROWS", 1)
    return request.param


def tied(rng, *shape):
    """MNIST-like values: mostly exact zeros and repeats, so pooling windows have ties."""
    return rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, -0.25], size=shape)


def pair(make, seed=0):
    """The same layer twice, reference and fast, with the same parameters."""
    a, b = make(ref, np.random.default_rng(seed)), make(fast, np.random.default_rng(seed))
    assert type(b).__name__ == type(a).__name__ and isinstance(b, type(a)) and b.spec == a.spec
    return a, b


def assert_same(a, b, x, dout_seed=1, exact=False):
    """Forward, every gradient and dx of reference layer/model a and fast b agree on x."""
    out_a, out_b = a.forward(x, training=True), b.forward(x, training=True)
    check = np.testing.assert_array_equal if exact else \
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    check(out_b, out_a)
    dout = np.random.default_rng(dout_seed).standard_normal(out_a.shape)
    dx_a, dx_b = a.backward(dout), b.backward(dout)
    check(dx_b, dx_a)
    grads_a = a.grads if callable(a.grads) else a.grads
    grads_b = b.grads if callable(b.grads) else b.grads
    assert set(grads_a) == set(grads_b)
    for k in grads_a:
        check(grads_b[k], grads_a[k])
    return out_a


# ---------------------------------------------------------------- layer by layer

@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias, threaded):
    a, b = pair(lambda m, rng: m.Linear(6, 70, bias, rng=rng, dtype=F64))
    with threads.single_threaded_blas():  # where FastSequential splits matmuls over threads
        assert_same(a, b, np.random.default_rng(2).standard_normal((9, 6)))


@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", CONV_CASES)
def test_conv2d(c_in, c_out, k, s, p, h, w, threaded):
    a, b = pair(lambda m, rng: m.Conv2d(c_in, c_out, k, s, p, rng=rng, dtype=F64))
    a.params["b"][:] = b.params["b"][:] = np.arange(c_out) * 0.1
    assert_same(a, b, np.random.default_rng(3).standard_normal((3, h, w, c_in)))


@pytest.mark.parametrize("c_in,per_chunk", [(2, 4), (8, 3)])  # im2col widths 18 (narrow), 72
def test_conv2d_chunks_with_a_ragged_last_chunk(c_in, per_chunk, monkeypatch):
    monkeypatch.setattr(kernels, "NARROW_CHUNK_FACTOR", 4)
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 3 * 6 * 7 if c_in == 8 else 6 * 7)  # 6x7 images
    assert kernels.images_per_chunk(6 * 7, 7, 9 * c_in) == per_chunk  # of 7
    a, b = pair(lambda m, rng: m.Conv2d(c_in, 3, 3, padding=1, rng=rng, dtype=F64))
    assert_same(a, b, np.random.default_rng(4).standard_normal((7, 6, 7, c_in)))


def test_narrow_convolutions_take_longer_chunks():
    assert kernels.images_per_chunk(100, 1000, kernels.NARROW_K) == kernels.CHUNK_ROWS // 100
    assert kernels.images_per_chunk(100, 1000, kernels.NARROW_K - 1) == \
        kernels.CHUNK_ROWS * kernels.NARROW_CHUNK_FACTOR // 100
    assert kernels.images_per_chunk(10 ** 6, 5, 1) == 1  # at least one image
    assert kernels.images_per_chunk(1, 5, 1000) == 5  # at most all of them


@pytest.mark.parametrize("k,s,h,w", [(2, None, 6, 8), (2, None, 7, 9), (3, 2, 7, 8), (2, 1, 5, 4),
                                     (3, 3, 7, 6)])
def test_maxpool2d_with_ties(k, s, h, w):
    a, b = pair(lambda m, rng: m.MaxPool2d(k, s))
    # the same windows, the same first maxima: exactly equal, gradients included
    assert_same(a, b, tied(np.random.default_rng(5), 2, h, w, 3), exact=s != 1)


@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (6, 4)), ("BatchNorm2d", (3, 5, 7, 4))])
def test_batchnorm(cls, shape, threaded):
    a, b = pair(lambda m, rng: getattr(m, cls)(4, momentum=0.2, dtype=F64))
    rng = np.random.default_rng(6)
    for layer in (a, b):
        layer.params["gamma"][:] = np.arange(1, 5) * 0.5
    x = rng.standard_normal(shape) * 3 + 1
    assert_same(a, b, x)
    for k in a.buffers:
        np.testing.assert_allclose(b.buffers[k], a.buffers[k], rtol=1e-12)
    np.testing.assert_allclose(b.forward(x, training=False), a.forward(x, training=False), rtol=1e-10)


@pytest.mark.parametrize("cls", ["Linear", "Conv2d"])
def test_input_grad_false_skips_dx(cls):
    rng = np.random.default_rng(14)
    layer, x = {"Linear": (fast.Linear(4, 3, rng=rng), np.ones((2, 4), np.float32)),
                "Conv2d": (fast.Conv2d(1, 2, 3, rng=rng), np.ones((2, 5, 5, 1), np.float32))}[cls]
    out = layer.forward(x, training=True)
    assert layer.backward(np.ones_like(out), input_grad=False) is None
    assert set(layer.grads) == set(layer.params)


# ---------------------------------------------------------------- fused patterns in a model

PATTERNS = {  # the runs FastSequential plans specially, each ending in a 2x2 pool
    "conv-relu-pool (fused)": ["conv", "relu", "pool"],
    "conv-pool (fused)": ["conv", "pool"],
    "unpadded conv-relu-pool (fused, dx by col2im)": ["conv0", "relu", "pool"],
    "unpadded conv-bn-relu-pool (pool layout, dx by col2im)": ["conv0", "bn", "relu", "pool"],
    "conv-bn-relu-pool (pool layout)": ["conv", "bn", "relu", "pool"],
    "conv-bn-pool (pool layout)": ["conv", "bn", "pool"],
    "conv-relu-bn-pool (pool layout)": ["conv", "relu", "bn", "pool"],
    "conv-relu-relu-pool (pool layout)": ["conv", "relu", "relu", "pool"],
    "conv(stride 2)-relu-pool (reference conv)": ["conv2", "relu", "pool"],
}


def pattern_spec(names, c_in):
    entry = {"conv": {"type": "Conv2d", "in_channels": c_in, "out_channels": 3, "kernel_size": 3,
                      "padding": "same"},
             "conv0": {"type": "Conv2d", "in_channels": c_in, "out_channels": 3, "kernel_size": 3,
                       "padding": 0},  # 8x12 -> 6x10: still even, still fused
             "conv2": {"type": "Conv2d", "in_channels": c_in, "out_channels": 3, "kernel_size": 3,
                       "stride": 2, "padding": 1},
             "relu": {"type": "ReLU"}, "bn": {"type": "BatchNorm2d", "num_features": 3},
             "pool": {"type": "MaxPool2d", "kernel_size": 2}}
    return [entry[n] for n in names] + [{"type": "Flatten"}]


def float64(model):
    for layer in model.layers:
        for store in (layer.params, layer.buffers):
            for k in store:
                store[k] = store[k].astype(F64)
    return model


@pytest.mark.parametrize("c_in", [2, 6])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_fused_patterns_match_reference_with_ties(pattern, c_in, threaded):
    spec = pattern_spec(PATTERNS[pattern], c_in)
    a = float64(build(spec, np.random.default_rng(9), "reference"))
    b = float64(build(spec, np.random.default_rng(9), "fast"))
    for m in (a, b):
        m.layers[0].params["W"][..., 1] = 0.0  # channel 1 constant: ties in every window
        m.layers[0].params["b"][:] = [0.1, 0.25, -0.3]
    x = tied(np.random.default_rng(10), 5, 8, 12, c_in)
    assert_same(a, b, x)


def test_fused_path_runs_where_planned():
    spec = pattern_spec(["conv", "relu", "pool"], 1)
    model = build(spec, np.random.default_rng(0))
    model.forward(np.zeros((2, 8, 8, 1), np.float32), training=True)
    assert model._trace == [0, 3] and model.layers[0].cache[0] == "pool"
    model = build(pattern_spec(["conv", "bn", "relu", "pool"], 1), np.random.default_rng(0))
    model.forward(np.zeros((2, 8, 8, 1), np.float32), training=True)
    assert model._trace == [0, 1, 3, 2, 4] and model.layers[0].cache[-1] is True  # pool layout


@pytest.mark.parametrize("batchnorm", [False, True])
def test_planned_passes_match_unplanned_in_float32(batchnorm):
    """pool_layout=False runs the same fast layers one by one: the plan changes no bit (no
    BatchNorm) or only BatchNorm's summation order."""
    spec = pattern_spec(["conv", "bn", "relu", "pool"] if batchnorm else ["conv", "relu", "pool"], 1)
    spec[0]["bias"] = not batchnorm  # a bias before BatchNorm has no gradient, only noise
    spec += [{"type": "Linear", "in_features": 4 * 7 * 3, "out_features": 5}]
    model = build(spec, np.random.default_rng(11))
    x = tied(np.random.default_rng(12), 9, 8, 14, 1).astype(np.float32)
    dout = np.random.default_rng(13).standard_normal((9, 5)).astype(np.float32)
    results = []
    for planned in (True, False):
        model.pool_layout = planned
        out = model.forward(x, training=True)
        model.backward(dout)
        assert out.dtype == np.float32
        results.append((out, {k: v.copy() for k, v in model.grads.items()}))
    (out_p, g_p), (out_u, g_u) = results
    if batchnorm:
        np.testing.assert_allclose(out_p, out_u, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(out_p, out_u)
    for k in g_p:
        np.testing.assert_allclose(g_p[k], g_u[k], rtol=1e-4, atol=1e-4 * np.abs(g_u[k]).max())


# ---------------------------------------------------------------- whole models

CNN_SPEC = [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": 1, "bias": False},
    {"type": "BatchNorm2d", "num_features": 6},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Linear", "in_features": 2 * 4 * 6, "out_features": 8, "bias": False},
    {"type": "BatchNorm1d", "num_features": 8},  # (a bias before BatchNorm has no gradient)
    {"type": "ReLU"},
    {"type": "Dropout", "p": 0.3},
    {"type": "Linear", "in_features": 8, "out_features": 5},
]


@pytest.mark.slow
def test_whole_cnn_matches_reference_and_passes_gradcheck(threaded):
    a = float64(build(CNN_SPEC, np.random.default_rng(3), "reference"))
    b = float64(build(CNN_SPEC, np.random.default_rng(3), "fast"))
    assert isinstance(b, FastSequential) and type(a) is Sequential
    x = tied(np.random.default_rng(4), 4, 8, 16, 1)
    for m in (a, b):
        m.layers[11].rng = np.random.default_rng(9)  # the same dropout masks
    assert_same(a, b, x)

    def reseed():
        b.layers[11].rng = np.random.default_rng(9)

    errors = check_gradients(b, np.random.default_rng(5).standard_normal(x.shape), before_forward=reseed)
    assert max(errors.values()) < 1e-6, errors


TILED_SPEC = [  # params.yaml's cnn in miniature: one digit network read twice, OuterSum on top
    {"type": "Tiles", "parts": 2},
    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Linear", "in_features": 4 * 4 * 4, "out_features": 3},
    {"type": "Untile", "parts": 2},
    {"type": "OuterSum"},
]


def test_tiled_model_matches_reference_and_passes_gradcheck(threaded):
    a = float64(build(TILED_SPEC, np.random.default_rng(6), "reference"))
    b = float64(build(TILED_SPEC, np.random.default_rng(6), "fast"))
    x = tied(np.random.default_rng(7), 3, 8, 16, 1)
    assert b.forward(x, training=False).shape == (3, 9)
    assert_same(a, b, x)
    errors = check_gradients(b, np.random.default_rng(8).standard_normal(x.shape))
    assert max(errors.values()) < 1e-6, errors
    # Training skips Tiles' backward (no parameters before the Conv2d) and still fills every grad.
    b.forward(x, training=True)
    b.layers[0].cache = None
    assert b.backward(np.ones((3, 9)), input_grad=False) is None
    assert set(b.grads) == {"1.W", "1.b", "5.W", "5.b"}

def test_training_backward_skips_dx_and_layers_before_the_first_parameters():
    spec = [{"type": "Flatten"}, {"type": "Linear", "in_features": 4, "out_features": 3}]
    model = build(spec, np.random.default_rng(0))
    model.forward(np.ones((2, 2, 2, 1), np.float32), training=True)
    model.layers[0].cache = None  # Flatten's backward would raise: it must not run
    assert model.backward(np.ones((2, 3), np.float32), input_grad=False) is None
    assert set(model.grads) == {"1.W", "1.b"}


def test_threaded_convolution_is_deterministic(monkeypatch):
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 0)
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 1)
    model = build(pattern_spec(["conv", "relu", "pool"], 8), np.random.default_rng(15))
    x = np.random.default_rng(16).standard_normal((9, 6, 8, 8)).astype(np.float32)
    dout = np.random.default_rng(17).standard_normal((9, 3 * 4 * 3)).astype(np.float32)
    runs = []
    for _ in range(3):
        out = model.forward(x, training=True)
        dx = model.backward(dout)
        runs.append((out, dx, model.layers[0].grads["W"].copy(), model.layers[0].grads["b"].copy()))
    for run in runs[1:]:
        for u, v in zip(runs[0], run):
            np.testing.assert_array_equal(u, v)


def test_blas_is_held_at_one_thread_inside_and_restored_after():
    pool = threads._WORKERS.get()
    if pool is None:
        pytest.skip("no OpenBLAS or a single core: the engine runs without its own threads")
    before = [lib.get_num_threads() for lib in threads._WORKERS.blas]
    with threads.single_threaded_blas():
        assert [lib.get_num_threads() for lib in threads._WORKERS.blas] == [1] * len(before)
        assert threads.split_matmuls()
    assert [lib.get_num_threads() for lib in threads._WORKERS.blas] == before
    assert not threads.split_matmuls()


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine must be one of fast, reference"):
        build(CNN_SPEC, np.random.default_rng(0), "turbo")


# ---------------------------------------------------------------- the flat-buffer optimisers

def train_steps(model, opt, steps=4, seed=20):
    """A few training steps of `model` with `opt`, the learning rate changing as a schedule's."""
    rng = np.random.default_rng(seed)
    dtype = next(iter(model.params.values())).dtype
    for i in range(steps):
        x = tied(rng, 4, 8, 16, 1).astype(dtype)
        for layer in model.layers:
            if isinstance(layer, ref.Dropout):
                layer.rng = np.random.default_rng(i)
        out = model.forward(x, training=True)
        model.backward(rng.standard_normal(out.shape).astype(dtype), input_grad=False)
        opt.lr = 1e-2 / (i + 1)
        opt.step(model.params, model.grads)
    return {k: v.copy() for k, v in model.params.items()}


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fast_adam_equals_the_reference_bit_for_bit(name, dtype, threaded):
    """FastAdam(W) on the fast engine's flat buffers, in place, against nn.optim's on the same
    model: the same passes in the same order, so the same bits, threads or not."""
    results = []
    for cls in (getattr(optim, name), getattr(fast_optim, f"Fast{name}")):
        model = build(CNN_SPEC, np.random.default_rng(3), "fast")
        if dtype is F64:
            model = float64(model)
            model._flatten()
        opt = cls(1e-2, weight_decay=0.1)
        params = train_steps(model, opt)
        if cls is not getattr(optim, name):  # the update ran in place on the model's buffers
            assert opt._flat.borrowed_p and opt._flat.borrowed_g == (name == "AdamW")
        results.append((params, opt.state_dict()))
    (p_ref, s_ref), (p_fast, s_fast) = results
    assert p_ref.keys() == p_fast.keys() and s_ref.keys() == s_fast.keys()
    for k in p_ref:
        assert p_fast[k].dtype == dtype
        np.testing.assert_array_equal(p_fast[k], p_ref[k])
    for k in s_ref:
        np.testing.assert_array_equal(s_fast[k], s_ref[k])


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fast_adam_on_separate_arrays_and_after_load_state_dict(name):
    """Params that are not the engine's flat views (the reference engine's) are copied in and
    out; a loaded state, or one left by a reference step, is picked up. All bit-identical."""
    ref_opt, fast_opt = getattr(optim, name)(1e-2, weight_decay=0.1), getattr(fast_optim, f"Fast{name}")(1e-2, weight_decay=0.1)
    rng = np.random.default_rng(0)
    start = {"0.W": rng.standard_normal((5, 3)), "0.b": rng.standard_normal(3),
             "1.W": rng.standard_normal((2, 2, 3, 4)), "1.b": rng.standard_normal(4)}
    p_ref = {k: v.copy() for k, v in start.items()}
    p_fast = {k: v.copy() for k, v in start.items()}
    for i in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in start.items()}
        g_before = {k: v.copy() for k, v in grads.items()}
        ref_opt.step(p_ref, grads)
        if i == 2:  # the reference's state carried over through a state_dict
            fast_opt = getattr(fast_optim, f"Fast{name}")(1e-2, weight_decay=0.1)
            fast_opt.load_state_dict(ref_opt.state_dict())
            p_fast = {k: v.copy() for k, v in p_ref.items()}
            continue
        fast_opt.step(p_fast, grads)
        assert not fast_opt._flat.borrowed_p
        for k in grads:  # the gradients are left alone (Adam's decay works on a copy)
            np.testing.assert_array_equal(grads[k], g_before[k])
        for k in start:
            np.testing.assert_array_equal(p_fast[k], p_ref[k])
    for k, v in ref_opt.state_dict().items():
        np.testing.assert_array_equal(fast_opt.state_dict()[k], v)


def test_fast_adam_takes_the_reference_path_for_mixed_dtypes():
    params = {"0.W": np.ones((2, 2), np.float32), "0.b": np.ones(2, F64)}
    grads = {k: np.full_like(v, 0.5) for k, v in params.items()}
    expected = {k: v.copy() for k, v in params.items()}
    optim.AdamW(0.1).step(expected, grads)
    opt = fast_optim.FastAdamW(0.1)
    opt.step(params, grads)
    assert opt._flat is None
    for k in params:
        np.testing.assert_array_equal(params[k], expected[k])
    with pytest.raises(ValueError, match="different keys"):
        opt.step(params, {"0.W": grads["0.W"]})


def test_the_engine_keeps_params_and_grads_on_flat_buffers():
    model = build(CNN_SPEC, np.random.default_rng(3), "fast")
    reference = build(CNN_SPEC, np.random.default_rng(3), "reference")
    params = model.params
    for k, v in reference.params.items():  # same values as the reference model's
        np.testing.assert_array_equal(params[k], v)
    order = fast_optim.flat_order(params)
    assert order[:3] == ["0.W", "3.W", "8.W"]  # weights that decay first
    base = fast_optim.flat_base([params[k] for k in order])
    assert base is not None and base.size == model.num_params()
    model.forward(tied(np.random.default_rng(1), 4, 8, 16, 1).astype(np.float32), training=True)
    model.backward(np.ones((4, 5), np.float32), input_grad=False)
    grads = model.grads
    assert fast_optim.flat_base([grads[k] for k in order]) is not None
    assert fast_optim.flat_base([params[k] for k in reversed(order)]) is None


def test_the_engine_picks_its_optimisers():
    assert type(optimizer("adamw", "fast", lr=0.1)) is fast_optim.FastAdamW
    assert type(optimizer("adam", "fast", lr=0.1)) is fast_optim.FastAdam
    assert type(optimizer("sgd", "fast", lr=0.1)) is optim.SGD
    assert type(optimizer("adamw", "reference", lr=0.1)) is optim.AdamW
    assert issubclass(fast_optim.FastAdamW, optim.AdamW) and fast_optim.FastAdamW.decoupled
    assert issubclass(fast_optim.FastAdam, optim.Adam) and not fast_optim.FastAdam.decoupled
    assert optimizer("adamw", "fast", lr=0.1).weight_decay == optim.AdamW(0.1).weight_decay


def test_the_weight_average_trains_the_engine_as_the_reference():
    """fit's `ema` swaps the average into the engine's flat parameter buffer and back: the
    engine's run (FastAdamW on that buffer) ends with the reference run's average."""
    from nn.train import fit

    rng = np.random.default_rng(20)
    x = rng.standard_normal((40, 8, 16, 1)).astype(np.float32)
    y = rng.integers(0, 9, 40)
    nets = []
    for engine in ("reference", "fast"):
        net = build(TILED_SPEC, np.random.default_rng(21), engine)
        fit(net, optimizer("adamw", engine, lr=0.01), x, y, x[:10], y[:10], epochs=2,
            batch_size=8, rng=np.random.default_rng(22), ema=0.8)
        nets.append(net)
    for k, v in nets[0].params.items():
        np.testing.assert_allclose(nets[1].params[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
