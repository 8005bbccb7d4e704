"""Device selection on the CPU: `device: gpu` errors without CuPy or a GPU, and the GPU code path
(parameters and batches on the device, checkpoints and metrics back as NumPy) run with a fake
device whose arrays are a NumPy subclass, so the plumbing is tested where CI runs."""

import sys
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_MLP as MLP
from conftest import model_params, run_train
from nn.augment import random_shift, shift_gather
from nn.backend import CPU, Device, DeviceError, get_device, to_numpy
from nn.engine import build, optimizer
from nn.fast import FastSequential
from nn.fast.optim import FastAdamW
from nn.gpu import GpuSequential
from nn.gpu import optim as gpu_optim
from nn.gpu.layers import BLOCK_ROWS, row_blocks, tall_grads
from nn.model import Sequential
from nn.optim import SGD, AdamW
from nn.train import fit
from stages import train as train_stage

SPEC = [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": "same"},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Linear", "in_features": 3 * 4 * 5, "out_features": 8},
    {"type": "BatchNorm1d", "num_features": 8},
    {"type": "ReLU"},
    {"type": "Dropout", "p": 0.25},
    {"type": "Linear", "in_features": 8, "out_features": 5},
]


class DeviceArray(np.ndarray):
    """Stands in for a CuPy array: NumPy math, but not a plain np.ndarray."""


class FakeGPU(Device):
    def asarray(self, x):
        return np.asarray(x).view(DeviceArray)


FAKE = FakeGPU("gpu", np)


def on_device(a) -> bool:
    return isinstance(a, DeviceArray)


def fake_cupy(count=None, error=None) -> types.ModuleType:
    """A module named cupy whose runtime reports `count` devices or raises `error`."""
    class CUDARuntimeError(RuntimeError):
        pass

    def get_device_count():
        if error:
            raise CUDARuntimeError(error)
        return count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count, CUDARuntimeError=CUDARuntimeError)
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    return cupy


def test_cpu_is_numpy_and_unknown_names_are_refused():
    assert get_device("cpu") is CPU and CPU.xp is np
    with pytest.raises(ValueError, match="device must be one of cpu, gpu, got 'tpu'"):
        get_device("tpu")


@pytest.mark.parametrize("cupy, message", [
    (None, "device gpu needs CuPy, which is not importable"),
    (fake_cupy(error="cudaErrorNoDevice: no CUDA-capable device is detected"),
     "device gpu: CuPy is installed but finds no CUDA device (cudaErrorNoDevice"),
    (fake_cupy(count=0), "device gpu: CuPy is installed but finds no CUDA device"),
])
def test_gpu_without_cupy_or_device_is_one_line_saying_which(monkeypatch, cupy, message):
    monkeypatch.setitem(sys.modules, "cupy", cupy)  # None: `import cupy` raises ImportError
    with pytest.raises(DeviceError) as e:
        get_device("gpu")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_gpu_with_a_device_gives_cupy(monkeypatch):
    cupy = fake_cupy(count=1)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    assert get_device("gpu") == Device("gpu", cupy)


def test_the_fast_engine_is_the_engine_of_the_device():
    assert type(build(SPEC, np.random.default_rng(0), "fast")) is FastSequential
    model = build(SPEC, np.random.default_rng(0), "fast", device=FAKE)
    assert type(model) is GpuSequential and all(on_device(v) for v in model.params.values())
    assert [type(m).__module__ for m in model.layers[:3]] == ["nn.gpu.layers"] * 3
    assert type(build(SPEC, np.random.default_rng(0), "reference", device=FAKE)) is Sequential
    with pytest.raises(ValueError, match="fast engine runs on the CPU only"):
        build(SPEC, np.random.default_rng(0), "fast").to(FAKE)
    with pytest.raises(ValueError, match="GPU engine runs on device gpu only"):
        GpuSequential.from_spec(SPEC, np.random.default_rng(0)).to(CPU)
    with pytest.raises(ValueError, match="engine must be one of fast, reference, got 'turbo'"):
        build(SPEC, np.random.default_rng(0), "turbo")


@pytest.mark.parametrize("n, rows, bias", [(512, 1568, True), (7, 30, False), (1, 5, True), (6, 4096, True)])
def test_the_gpu_engines_blocked_weight_gradients_are_the_plain_products(n, rows, bias):
    """nn.gpu.layers.tall_grads is array-module generic: checked here on NumPy, on CuPy in test_gpu."""
    rng = np.random.default_rng(n)
    cols, dout = rng.standard_normal((n * rows, 9)), rng.standard_normal((n * rows, 4))
    g = row_blocks(n, rows)
    assert n % g == 0 and (g * rows <= BLOCK_ROWS or g == 1)
    dw, db = tall_grads(cols, dout, n, bias)
    np.testing.assert_allclose(dw, cols.T @ dout, rtol=1e-10, atol=1e-10)
    assert db is None if not bias else np.allclose(db, dout.sum(axis=0), rtol=1e-10, atol=1e-10)


def test_the_optimizer_is_the_engines_and_the_reference_math_off_the_gpu():
    assert type(optimizer("adamw", "fast", FAKE, lr=0.1)) is gpu_optim.AdamW
    assert type(optimizer("adam", "fast", FAKE, lr=0.1)) is gpu_optim.Adam
    assert type(optimizer("adamw", "fast", CPU, lr=0.1)) is FastAdamW  # nn.fast.optim
    assert type(optimizer("adamw", "reference", FAKE, lr=0.1)) is AdamW
    assert type(optimizer("sgd", "fast", FAKE, lr=0.1, momentum=0.9)) is SGD
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, got 'lion'"):
        optimizer("lion", "fast", CPU, lr=0.1)
    # arrays that are not CuPy's get nn.optim's update, bit for bit
    rng = np.random.default_rng(3)
    p = {"0.W": rng.standard_normal((4, 3)), "0.b": rng.standard_normal(3)}
    q = {k: v.copy() for k, v in p.items()}
    fused, ref = gpu_optim.AdamW(0.01, weight_decay=0.1), AdamW(0.01, weight_decay=0.1)
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
        fused.step(p, g)
        ref.step(q, g)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])


def test_to_numpy_brings_arrays_back_as_plain_numpy():
    a = FAKE.asarray(np.arange(3.0))
    assert type(to_numpy(a)) is np.ndarray and type(to_numpy(a, copy=True)) is np.ndarray
    host = np.arange(3.0)
    assert to_numpy(host) is host and to_numpy(host, copy=True) is not host


def toy_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    x = rng.standard_normal((n, 8, 10, 1)).astype(np.float32)
    x[np.arange(n), y, :, 0] += 2  # learnable
    return x, y


def train(device, transfer="batch", optimizer=None):
    x, y = toy_data()
    rng = np.random.default_rng(7)
    model = build(SPEC, rng, "reference", device=device)
    opt = optimizer or AdamW(0.01, weight_decay=1e-3)
    history = fit(model, opt, x, y, x[:32], y[:32], epochs=2, batch_size=20, rng=rng,
                  augment=lambda xb, g: random_shift(xb, 1, g, fill=-0.5), clip_norm=5.0,
                  device=device, transfer=transfer)
    return model, opt, history


@pytest.mark.parametrize("transfer", ["batch", "once"])
def test_training_on_a_device_keeps_state_there_and_returns_numpy(transfer):
    model, opt, history = train(FAKE, transfer)
    assert all(on_device(v) for v in {**model.params, **model.buffers}.values())
    assert all(on_device(v["m"]) for v in opt.state.values())
    for record in history:
        assert all(isinstance(record[k], float) for k in ("loss", "train_acc", "dev_loss", "dev_acc"))
    for values in (model.state_dict(), opt.state_dict()):
        assert all(type(v) is np.ndarray for v in values.values())
    assert type(model.predict_proba(toy_data()[0][:5])) is np.ndarray


@pytest.mark.parametrize("transfer", ["batch", "once"])
def test_the_device_path_is_the_cpu_math(transfer):
    """Same seed, same batches, shifts and masks: with NumPy behind it, the same weights bit for bit."""
    cpu_model, _, cpu_history = train(CPU)
    model, _, history = train(FAKE, transfer)
    assert history == [{**r, "seconds": h["seconds"]} for r, h in zip(cpu_history, history)]
    for k, v in cpu_model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)


def test_shift_gather_is_the_slice_copies():
    x = np.random.default_rng(1).standard_normal((50, 6, 7, 2)).astype(np.float32)
    for max_shift in (1, 3):
        expected = random_shift(x, max_shift, np.random.default_rng(5), fill=-1.5)
        shifts = np.random.default_rng(5).integers(-max_shift, max_shift + 1, size=(50, 2))
        np.testing.assert_array_equal(shift_gather(x, shifts, -1.5), expected)
        got = random_shift(FAKE.asarray(x), max_shift, np.random.default_rng(5), fill=-1.5)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("engine_name", ["fast", "reference"])
def test_the_stage_stops_at_its_start_without_cupy(tmp_path, data, monkeypatch, engine_name):
    monkeypatch.setitem(sys.modules, "cupy", None)
    params = model_params(MLP, device="gpu", engine=engine_name)
    result, out, history = run_train(tmp_path, data / "missing", "mlp", params, "mnist")
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert result.exit_code == 1 and len(errors) == 1, result.output  # before reading the data
    assert errors[0].startswith("train@mlp: error: device gpu needs CuPy, which is not importable")
    assert not out.exists() and not history.exists()


@pytest.mark.parametrize("transfer", ["batch", "once"])
def test_a_stage_on_the_device_writes_the_cpu_reference_model_file(tmp_path, data, monkeypatch,
                                                                   transfer):
    result, cpu_out, cpu_history = run_train(tmp_path / "cpu", data, "mlp",
                                             model_params(MLP, engine="reference"), "mnist")
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(train_stage, "get_device", lambda name: FAKE if name == "gpu" else CPU)
    params = model_params(MLP, engine="reference", device="gpu", transfer=transfer)
    result, out, history = run_train(tmp_path / "gpu", data, "mlp", params, "mnist")
    assert result.exit_code == 0, result.output
    assert "trained on the reference engine (gpu, " in result.output
    assert out.read_bytes() == cpu_out.read_bytes()
    assert history.read_bytes() == cpu_history.read_bytes()
