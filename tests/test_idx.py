import numpy as np
import pytest

from nn.mnist.idx import IdxError, idx_bytes, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 2)])
def test_round_trip(tmp_path, dtype, shape):
    a = (np.arange(np.prod(shape)) % 100 - 20).astype(dtype).reshape(shape)
    if np.dtype(dtype).kind == "u":
        a = np.abs(a).astype(dtype)
    write_idx(tmp_path / "a", a)
    b = read_idx(tmp_path / "a")
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_canonical_header_bytes():
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert data[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c")
    assert len(data) == 16 + 2 * 28 * 28


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "too short"),
    (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "bad IDX magic"),
    (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00", "bad IDX magic"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"abc", "(truncated)"),
    (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x02" + b"abc", "(trailing bytes)"),
])
def test_bad_headers_are_rejected_with_a_reason(data, message):
    with pytest.raises(IdxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(data, "f")


def test_unwritable_dtype():
    with pytest.raises(IdxError, match="dtype"):
        idx_bytes(np.zeros(3, np.complex64))
