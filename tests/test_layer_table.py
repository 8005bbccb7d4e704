"""Every layer of nn.layers.LAYERS, one row each in tests/layertable.py, through every check a
layer needs: its float64 gradients, every engine equal to the reference, its spec and its
checkpoint round trips, the layers view and the guide's page."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from layertable import LAYER_TABLE, NAMES, float64_layer, layer_input, model_of, spec_of

from nn import checkpoint
from nn.backend import DeviceError, get_device, to_numpy
from nn.engine import ENGINES, build
from nn.gradcheck import check_gradients
from nn.layers import LAYERS
from nn.model import Sequential

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_layer_has_a_row():
    assert sorted(LAYER_TABLE) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_gradients_in_float64(name):
    layer = float64_layer(name)
    rng = np.random.default_rng(1)
    for key, value in layer.params.items():  # float64, and biases and shifts not at zero
        layer.params[key] = value.astype(np.float64) + 0.1 * rng.standard_normal(value.shape)

    def reseed():  # a Dropout draws the same mask on every evaluation
        layer.rng = np.random.default_rng(7)

    errors = check_gradients(layer, layer_input(name),
                             before_forward=reseed if hasattr(layer, "rng") else None)
    assert max(errors.values()) < 1e-6, errors


def engines():
    """(engine, device name) for each engine other than the reference: the CPU's, and the GPU's
    where there is one."""
    yield from ((e, "cpu") for e in ENGINES if e != "reference")
    yield "fast", "gpu"


@pytest.mark.parametrize("engine, device", list(engines()), ids=lambda v: v)
@pytest.mark.parametrize("name", NAMES)
def test_every_engine_equals_the_reference(name, engine, device):
    if device == "gpu":
        try:
            dev = get_device("gpu")
        except DeviceError as e:
            pytest.skip(str(e))
    else:
        dev = get_device("cpu")
    ref = build([spec_of(name)], np.random.default_rng(0), engine="reference")
    other = build([spec_of(name)], np.random.default_rng(0), engine=engine, device=dev)
    x = layer_input(name, dtype=np.float32)
    out = ref.forward(x, training=True)
    np.testing.assert_allclose(to_numpy(other.forward(dev.asarray(x), training=True)), out,
                               rtol=1e-5, atol=1e-6)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    dx = ref.backward(dout)
    np.testing.assert_allclose(to_numpy(other.backward(dev.asarray(dout))), dx,
                               rtol=1e-5, atol=1e-6)
    assert set(other.grads) == set(ref.grads)
    for key, grad in ref.grads.items():
        np.testing.assert_allclose(to_numpy(other.grads[key]), grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(other.forward(dev.asarray(x), training=False)),
                               ref.forward(x, training=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_spec_round_trip(name):
    net = Sequential.from_spec([spec_of(name)], np.random.default_rng(0))
    spec = json.loads(json.dumps(net.spec))  # plain JSON, as a model file keeps it
    assert spec[0].items() >= spec_of(name).items()  # the arguments given, and any defaults
    again = Sequential.from_spec(spec, np.random.default_rng(0))
    assert again.spec == net.spec
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name, engine, tmp_path):
    spec, shape = model_of(name)
    net = Sequential.from_spec(spec, np.random.default_rng(0))
    x = layer_input(name, dtype=np.float32, shape=shape)
    net.forward(x, training=True)  # moves BatchNorm's running statistics off their start
    path = tmp_path / "layer.npz"
    checkpoint.save(path, net, format="layer table", input_shape=shape[1:])
    loaded, _ = checkpoint.load(path, format="layer table", engine=engine)
    assert loaded.spec == net.spec
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    np.testing.assert_allclose(loaded.forward(x, training=False), net.forward(x, training=False),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_the_layers_view_covers_it(name):
    """nn serve's layers view and nn explain: maps or bars (not the plain list of a layer it
    does not know) and the saliency (backward through a known forward) for every layer."""
    from nn.mnist.explain import trace

    assert issubclass(LAYERS[name], trace.CACHED + trace.SCALED), \
        f"{name}: in neither explain.trace.CACHED nor explain.trace.SCALED: no saliency through it"
    assert name in trace.LAYER_DOCS, f"{name}: no formula and page in explain.trace.LAYER_DOCS"


@pytest.mark.parametrize("name", NAMES)
def test_its_page_in_the_guide_names_it(name):
    from nn.mnist.explain.trace import LAYER_DOCS

    page = DOCS / LAYER_DOCS[name][1]
    assert page.is_file(), f"{name}: {page} is missing"
    assert re.search(rf"\b{name}\b", page.read_text()), f"{name}: {page.name} never names it"
