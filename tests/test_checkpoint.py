"""nn.checkpoint, the core save/load: the application names the format and its header fields."""

import json

import numpy as np
import pytest

from nn import checkpoint
from nn.checkpoint import ModelFileError
from nn.model import Sequential

SPEC = [{"type": "Flatten"}, {"type": "Linear", "in_features": 6, "out_features": 2}]


@pytest.fixture
def model():
    return Sequential.from_spec(SPEC, np.random.default_rng(0))


def test_round_trip_keeps_the_applications_fields(tmp_path, model):
    path = tmp_path / "m.npz"
    digest = checkpoint.save(path, model, format="toy model", input_shape=(2, 3),
                             fields={"vocab": ["a", "b"], "scale": 2.5})
    for engine in ("fast", "reference"):
        loaded, ckpt = checkpoint.load(path, format="toy model", required=("vocab",), engine=engine)
        assert ckpt.fields == {"vocab": ["a", "b"], "scale": 2.5}
        assert ckpt.input_shape == (2, 3) and ckpt.sha256 == digest
        assert ckpt.version == checkpoint.VERSION
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[k], v)


def test_another_applications_file_is_refused(tmp_path, model):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model, format="toy model", input_shape=(6,))
    with pytest.raises(ModelFileError, match="format is not 'other model'") as e:
        checkpoint.load(path, format="other model")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_required_field_that_is_missing_is_named(tmp_path, model):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model, format="toy model", input_shape=(6,), fields={"a": 1})
    with pytest.raises(ModelFileError, match=r"header lacks \['b'\]"):
        checkpoint.load(path, format="toy model", required=("a", "b"))


def test_fields_cannot_overwrite_the_checkpoints_own_header(tmp_path, model):
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save(tmp_path / "m.npz", model, format="toy", input_shape=(6,),
                        fields={"spec": []})
    assert not (tmp_path / "m.npz").exists()


def test_the_header_is_sorted_json_with_the_fields_at_top_level(tmp_path, model):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model, format="toy", input_shape=(6,), fields={"z": 1})
    with np.load(path, allow_pickle=False) as z:
        text = str(z["header"])
    header = json.loads(text)
    assert list(header) == sorted(header) == ["format", "input_shape", "spec", "version", "z"]


def test_an_unknown_engine_is_the_callers_error(tmp_path, model):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model, format="toy", input_shape=(6,))
    with pytest.raises(ValueError, match="engine must be one of fast, reference, got 'gpu'"):
        checkpoint.load(path, format="toy", engine="gpu")
