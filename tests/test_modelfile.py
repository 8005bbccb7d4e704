import json

import numpy as np
import pytest

from nn import checkpoint
from nn.mnist.modelfile import ModelFileError, load, save

from nn.engine import build

SPEC = [{"type": "Flatten"}, {"type": "Linear", "in_features": 12, "out_features": 8},
        {"type": "ReLU"}, {"type": "Dropout", "p": 0.5},
        {"type": "Linear", "in_features": 8, "out_features": 3}]
INPUT_SHAPE = (3, 4, 1)
NORM = {"mean": 0.1307, "std": 0.3081}


@pytest.fixture
def model():
    return build(SPEC, np.random.default_rng(0))


@pytest.fixture
def saved(tmp_path, model):
    path = tmp_path / "model.npz"
    save(path, model, normalization=NORM, input_shape=INPUT_SHAPE, classes=["a", "b", "c"],
         meta={"dev_acc": np.float32(0.5), "epochs": 3})
    return path


def header_and_state(path):
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        state = {k.removeprefix("state/"): z[k] for k in z.files if k.startswith("state/")}
    return header, state


def test_round_trip_gives_identical_predictions_and_info(tmp_path, model, saved):
    x = np.random.default_rng(1).normal(size=(5, *INPUT_SHAPE)).astype(np.float32)
    loaded, info = load(saved)
    np.testing.assert_array_equal(loaded.forward(x, training=False), model.forward(x, training=False))
    assert loaded.spec == model.spec
    assert info.normalization == NORM and info.input_shape == INPUT_SHAPE
    assert info.classes == ["a", "b", "c"] and info.version == checkpoint.VERSION
    assert info.meta == {"dev_acc": 0.5, "epochs": 3}
    assert len(info.sha256) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]     # no temp file left


def test_cnn_with_batchnorm_round_trips_weights_and_running_statistics(tmp_path):
    spec = [{"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3,
             "padding": "same"},
            {"type": "BatchNorm2d", "num_features": 4}, {"type": "ReLU"},
            {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
            {"type": "Linear", "in_features": 4 * 3 * 5, "out_features": 7}]
    rng = np.random.default_rng(2)
    net = build(spec, rng)
    x = rng.normal(size=(6, 6, 10, 1)).astype(np.float32)
    net.forward(x, training=True)                        # moves BatchNorm's running statistics
    save(tmp_path / "cnn.npz", net, normalization=NORM, input_shape=(6, 10, 1))
    loaded, info = load(tmp_path / "cnn.npz")
    assert info.input_shape == (6, 10, 1) and info.classes is None and info.meta == {}
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    assert not np.all(loaded.buffers["1.running_mean"] == 0)
    np.testing.assert_array_equal(loaded.forward(x, training=False), net.forward(x, training=False))


def test_save_returns_the_hash_and_is_deterministic(tmp_path, model):
    a = save(tmp_path / "a.npz", model, normalization=NORM, input_shape=INPUT_SHAPE)
    b = save(tmp_path / "b.npz", model, normalization=NORM, input_shape=INPUT_SHAPE)
    assert a == b == load(tmp_path / "a.npz")[1].sha256


def assert_model_file_error(path, match):
    with pytest.raises(ModelFileError, match=match) as e:
        load(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    assert_model_file_error(tmp_path / "nope.npz", "no such file")


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:int(len(data) * keep)])
    assert_model_file_error(saved, "truncated or corrupt|not a model file|empty file|not a zip")


def test_not_an_npz(tmp_path):
    text = tmp_path / "model.npz"
    text.write_text("hello, I am not a zip file\n")
    assert_model_file_error(text, "not an .npz archive")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    assert_model_file_error(npy, "a bare .npy array")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    assert_model_file_error(other, "not a model file")


def test_pickled_npz_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.array(["x", None], dtype=object))
    assert_model_file_error(path, "holds pickled Python objects")


def test_flipped_byte_in_weights_is_detected(saved):
    data = bytearray(saved.read_bytes())
    header, state = header_and_state(saved)
    needle = state["1.W"].tobytes()[:16]
    i = bytes(data).index(needle)
    data[i] ^= 0x01
    saved.write_bytes(bytes(data))
    assert_model_file_error(saved, "corrupt|hash mismatch")


def test_tampered_weights_fail_the_hash(saved):
    header, state = header_and_state(saved)
    with np.load(saved, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["state/1.W"] = members["state/1.W"] + 1.0     # a consistent zip with other weights
    np.savez(saved, **members)
    assert_model_file_error(saved, "content hash mismatch")


def test_tampered_header_fails_the_hash(saved):
    with np.load(saved, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["header"] = np.array(str(members["header"]).replace("0.1307", "0.5"))
    np.savez(saved, **members)
    assert_model_file_error(saved, "content hash mismatch")


def test_other_version(saved):
    header, state = header_and_state(saved)
    header["version"] = checkpoint.VERSION + 1
    checkpoint._write(saved, header, state)                   # valid hash, future version
    assert_model_file_error(saved, f"format version {checkpoint.VERSION + 1}, this code reads")
    with np.load(saved, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["sha256"] = np.array("0" * 64)               # a version that hashes differently
    np.savez(saved, **members)
    assert_model_file_error(saved, f"format version {checkpoint.VERSION + 1}, this code reads")


def test_header_that_is_not_ours(saved):
    with np.load(saved, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    for bad, match in [("{not json", "not valid JSON"), ('{"format": "other"}', "format is not"),
                       ("[1, 2]", "format is not")]:
        np.savez(saved, **(members | {"header": np.array(bad)}))
        assert_model_file_error(saved, match)
    np.savez(saved, **(members | {"header": np.frombuffer(b"{}", np.uint8)}))
    assert_model_file_error(saved, "malformed header")
    np.savez(saved, **(members | {"extra": np.zeros(2)}))
    assert_model_file_error(saved, "unexpected member")


def test_weights_of_another_architecture(saved):
    header, state = header_and_state(saved)
    header["spec"][1]["out_features"] = 9               # spec no longer matches the weights
    header["spec"][4]["in_features"] = 9
    checkpoint._write(saved, header, state)
    assert_model_file_error(saved, "weights do not match the architecture")
    header, _ = header_and_state(saved)
    del state["4.b"]
    header["spec"][1]["out_features"] = header["spec"][4]["in_features"] = 8
    checkpoint._write(saved, header, state)
    assert_model_file_error(saved, "weights do not match the architecture")


def test_unknown_layer_type_in_spec(saved):
    header, state = header_and_state(saved)
    header["spec"][2]["type"] = "Softplus"
    checkpoint._write(saved, header, state)
    assert_model_file_error(saved, "bad architecture spec")


def test_input_shape_the_architecture_cannot_take(saved):
    header, state = header_and_state(saved)
    header["input_shape"] = [28, 28, 1]
    checkpoint._write(saved, header, state)
    assert_model_file_error(saved, "does not accept input shape")


def test_header_lacking_fields(saved):
    header, state = header_and_state(saved)
    del header["normalization"]
    checkpoint._write(saved, header, state)
    assert_model_file_error(saved, "header lacks")


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, saved, model, monkeypatch):
    before = saved.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(saved, model, normalization=NORM, input_shape=INPUT_SHAPE)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_unserialisable_meta_fails_before_writing(tmp_path, model):
    with pytest.raises(TypeError, match="object is not JSON"):
        save(tmp_path / "m.npz", model, normalization=NORM, input_shape=INPUT_SHAPE,
             meta={"f": object()})
    assert list(tmp_path.iterdir()) == []
