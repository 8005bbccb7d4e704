"""Sequential on both engines: building from a spec, named live parameters, state dicts,
prediction, summary, the whole-model gradient check."""

import numpy as np
import pytest

from nn.gradcheck import check_gradients
from nn.engine import ENGINES, build
from nn.model import Sequential

CNN_SPEC = [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "BatchNorm2d", "num_features": 4},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": 1, "init": "glorot"},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Linear", "in_features": 2 * 4 * 6, "out_features": 8},
    {"type": "ReLU"},
    {"type": "Dropout", "p": 0.3},
    {"type": "BatchNorm1d", "num_features": 8},
    {"type": "Linear", "in_features": 8, "out_features": 5},
]


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def make(engine, seed=0, spec=CNN_SPEC):
    return build(spec, np.random.default_rng(seed), engine)


def images(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 16, 1)).astype(np.float32)


def test_from_spec_builds_and_round_trips(engine):
    model = make(engine)
    assert [type(layer).__name__ for layer in model.layers] == [d["type"] for d in CNN_SPEC]
    again = Sequential.from_spec(model.spec, np.random.default_rng(0))
    assert again.spec == model.spec
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, again.params[k])  # same seed, same weights
    assert model.spec[0]["padding"] == "same" and model.spec[4]["init"] == "glorot"


@pytest.mark.parametrize("entry,match", [
    ({"type": "Conv3d"}, r"layer 1: unknown type 'Conv3d'"),
    ({"type": "ReLU", "inplace": True}, r"layer 1 \(ReLU\): unknown argument 'inplace'"),
    ({"type": "Linear", "in_features": 3}, r"layer 1 \(Linear\): missing argument 'out_features'"),
    ({"type": "Linear", "in_features": 3, "out_features": -2}, r"layer 1 \(Linear\): out_features"),
    ({"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": "valid"},
     r"layer 1 \(Conv2d\): padding"),
    ({"type": "Linear", "in_features": 3, "out_features": 2, "rng": 5},
     r"layer 1 \(Linear\): unknown argument 'rng'"),
    ({"kind": "ReLU"}, r"layer 1: expected a dict with a 'type' key"),
])
def test_from_spec_errors_name_index_and_key(entry, match):
    with pytest.raises(ValueError, match=match):
        Sequential.from_spec([{"type": "Flatten"}, entry], np.random.default_rng(0))


def test_params_grads_buffers_are_live_and_dotted(engine):
    model = make(engine)
    params = model.params
    assert list(params) == ["0.W", "0.b", "1.gamma", "1.beta", "4.W", "4.b", "8.W", "8.b",
                            "11.gamma", "11.beta", "12.W", "12.b"]
    assert set(model.buffers) == {"1.running_mean", "1.running_var", "11.running_mean", "11.running_var"}
    x = images(6)
    before = model.forward(x, training=False)
    params["12.b"] += 1.0  # in place, as an optimiser does
    np.testing.assert_allclose(model.forward(x, training=False), before + 1.0, rtol=1e-6)
    model.forward(x, training=True)
    model.backward(np.ones((6, 5), np.float32))
    grads = model.grads
    assert grads.keys() == params.keys()
    assert all(grads[k].shape == params[k].shape and grads[k].dtype == np.float32 for k in params)


def test_state_dict_round_trip_and_strictness(engine):
    model, other = make(engine, 0), make(engine, 1)
    x = images(7)
    model.forward(x, training=True)  # moves the running statistics
    state = model.state_dict()
    state["0.W"] += 0  # copies: editing them leaves the model alone
    state["0.W"][...] = 0
    assert model.params["0.W"].any()
    state = model.state_dict()
    live = other.params["0.W"]
    other.load_state_dict(state)
    assert other.params["0.W"] is live  # loaded in place, an optimiser's references stay valid
    np.testing.assert_array_equal(other.forward(x, training=False), model.forward(x, training=False))

    with pytest.raises(ValueError, match="missing key '1.running_var'"):
        other.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})
    with pytest.raises(ValueError, match="unexpected key '99.W'"):
        other.load_state_dict({**state, "99.W": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'8.W' has shape \(48, 9\), expected \(48, 8\)"):
        other.load_state_dict({**state, "8.W": np.zeros((48, 9), np.float32)})


def test_predict_proba_batches_and_inference_mode(engine):
    model = make(engine)
    x = images(23)
    model.forward(x, training=True)  # non-trivial running statistics
    p = model.predict_proba(x, batch_size=5)
    assert p.shape == (23, 5) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(p, model.predict_proba(x, batch_size=1000), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(model.predict(x), p.argmax(axis=1))
    np.testing.assert_array_equal(p, model.predict_proba(x, batch_size=5))  # no dropout, no state change


def test_num_params_and_summary(engine):
    model = make(engine)
    expected = (9 * 4 + 4) + 8 + (36 * 6 + 6) + (48 * 8 + 8) + 16 + (8 * 5 + 5)
    assert model.num_params() == expected
    text = model.summary((8, 16, 1))
    assert "(8, 16, 4)" in text and "(4, 8, 4)" in text and "(2, 4, 6)" in text and "(48,)" in text
    assert f"{expected:,}" in text and "Conv2d" in text
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\)"):
        model.summary((8, 16, 3))
    with pytest.raises(ValueError, match=r"layer 8 \(Linear\)"):
        model.summary((12, 16, 1))


def test_mlp_from_spec_on_images(engine):
    spec = [{"type": "Flatten"}, {"type": "Linear", "in_features": 12, "out_features": 6},
            {"type": "ReLU"}, {"type": "Linear", "in_features": 6, "out_features": 3}]
    model = make(engine, spec=spec)
    x = np.random.default_rng(0).uniform(size=(4, 3, 4, 1)).astype(np.float32)
    assert model.forward(x, training=True).shape == (4, 3)
    assert model.backward(np.ones((4, 3), np.float32), input_grad=False) is None  # dx not wanted
    assert model.backward(np.ones((4, 3), np.float32)).shape == x.shape


def test_model_gradient_check_float64():
    """The whole CNN spec on the reference layers, in float64 (the fast engine's own whole-model
    check against these is in test_fast.py)."""
    model = make("reference", 3)
    for layer in model.layers:
        for store in (layer.params, layer.buffers):
            for k in store:
                store[k] = store[k].astype(np.float64)
    del model.layers[0].params["b"]  # conv bias before BatchNorm: zero gradient, skip
    x = np.random.default_rng(4).standard_normal((4, 8, 16, 1))

    def reseed():
        model.layers[10].rng = np.random.default_rng(9)

    errors = check_gradients(model, x, before_forward=reseed)
    assert max(errors.values()) < 1e-6, errors


def test_every_engine_extends_the_one_layer_registry():
    from nn import layers
    from nn.fast import layers as fast
    from nn.gpu import layers as gpu

    for engine_layers in (fast.LAYERS, gpu.LAYERS):
        assert engine_layers.keys() == layers.LAYERS.keys()
        assert all(issubclass(engine_layers[n], layers.LAYERS[n]) for n in layers.LAYERS)
    assert fast.LAYERS["Conv2d"] is fast.Conv2d and fast.LAYERS["Dropout"] is layers.Dropout
    assert gpu.LAYERS["ReLU"] is gpu.ReLU and gpu.LAYERS["BatchNorm1d"] is layers.BatchNorm1d
    with pytest.raises(TypeError, match="does not subclass"):
        layers.engine_layers(type("Conv2d", (layers.Linear,), {}))


def test_a_layer_and_a_model_read_params_grads_buffers_and_spec_alike(engine):
    model = make(engine)
    model.backward(np.ones_like(model.forward(images(2), training=True)))
    layer = model.layers[0]
    for name in ("params", "grads", "buffers", "spec"):  # attributes, never methods
        assert not callable(getattr(layer, name)) and not callable(getattr(model, name)), name
    assert model.spec[0] == layer.spec and model.params["0.W"] is layer.params["W"]
