"""benchmarks/bench.py's arithmetic: FLOP counts, per-round ratios, PyTorch twins' padding (no timing);
benchmarks/pair_errors.py's digits."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench  # noqa: E402

PARAMS = bench.read_params()

# Forward FLOPs per MNIST-100 pair of params.yaml's CNN, 2 per multiply-add, counted by hand.
# Tiles(2) makes each 28x56 pair two 28x28 digits: every layer below runs on 2 rows per pair.
CONV1 = 2 * (2 * 24 * 24) * (5 * 5 * 1 * 32)      # 2 digits x 24x24 outputs (no padding), 5x5x1 -> 32
CONV2 = 2 * (2 * 10 * 10) * (3 * 3 * 32 * 64)     # after the 2x2 pool: 12x12 -> 10x10, 3x3x32 -> 64
FC1 = 2 * 2 * (5 * 5 * 64) * 128                  # 2 digits, 1600 -> 128
FC2 = 2 * 2 * 128 * 10                            # 2 digits, 128 -> 10 (Untile, OuterSum: no matmul)


def test_the_cnn_forward_counts_both_digits_of_a_pair():
    assert CONV2 == 7_372_800
    assert bench.forward_flops(PARAMS["cnn"]["layers"], (28, 56, 1)) == CONV1 + CONV2 + FC1 + FC2 == 10_040_320


def test_the_cnn_training_step_skips_only_the_first_convolutions_input_gradient():
    forward = CONV1 + CONV2 + FC1 + FC2
    # weight gradients: the forward's count again; input gradients: again, but not the first conv's
    assert bench.train_flops(PARAMS["cnn"]["layers"], (28, 56, 1)) == 3 * forward - CONV1 == 28_277_760


def test_the_mlp_counts():
    fc1, fc2, fc3 = 2 * 784 * 512, 2 * 512 * 256, 2 * 256 * 10
    spec = PARAMS["mlp"]["layers"]
    assert bench.forward_flops(spec, (28, 28, 1)) == fc1 + fc2 + fc3 == 1_070_080
    assert bench.train_flops(spec, (28, 28, 1)) == 3 * (fc1 + fc2 + fc3) - fc1 == 2_407_424


def test_rows_follow_what_the_layers_do_to_the_batch():
    """Each example is cut into 3 tiles and the Linear runs on every tile; the first layer with
    parameters is a BatchNorm here, so the Linear's input gradient is counted."""
    spec = [{"type": "Tiles", "parts": 3}, {"type": "Flatten"},
            {"type": "BatchNorm1d", "num_features": 8}, {"type": "Linear", "in_features": 8, "out_features": 5},
            {"type": "Untile", "parts": 3}, {"type": "Linear", "in_features": 15, "out_features": 2}]
    counts = bench.layer_flops(spec, (4, 6, 1))          # tiles of 4x2x1 = 8 features
    assert counts[3] == (3 * 2 * 8 * 5, 2 * 3 * 2 * 8 * 5)
    assert counts[5] == (2 * 15 * 2, 2 * 2 * 15 * 2)
    assert [c for i, c in enumerate(counts) if i not in (3, 5)] == [(0, 0)] * 4


def test_ratios_are_per_round_medians_and_ahead_needs_every_round_below_one():
    fast = [[1.0, 2.0, 9.0], [3.0], [4.0, 4.0]]         # round medians 2, 3, 4
    torch = [[4.0], [2.0, 4.0, 100.0], [5.0]]           # round medians 4, 4, 5
    assert bench.ratios(fast, torch) == [0.5, 0.75, 0.8]
    assert bench.ratio_cell(fast, torch) == "0.75 [0.50-0.80] ahead"
    slower_once = [[1.0], [2.0], [5.5]]
    assert bench.ratio_cell(slower_once, [[4.0], [4.0], [5.0]]) == "0.50 [0.25-1.10]"
    with pytest.raises(ValueError):
        bench.ratios(fast, torch[:2])


def test_the_torch_twin_pads_odd_same_convolutions_explicitly():
    torch = pytest.importorskip("torch")
    convs = [m for m in bench.torch_model(PARAMS["cnn"]["layers"]) if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(0, 0), (0, 0)]   # params.yaml's: unpadded
    same = [{"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": k, "padding": "same"}
            for k in (3, 5)]
    convs = [m for m in bench.torch_model(same) if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(1, 1), (2, 2)]
    assert bench.explicit_padding(5, "same") == 2
    assert bench.explicit_padding([3, 5], "same") == (1, 2)
    assert bench.explicit_padding(4, "same") == "same"   # uneven padding: torch's "same" does it
    assert bench.explicit_padding(3, 0) == 0

    from nn.layers import Conv2d

    rng = np.random.default_rng(0)
    ours = Conv2d(2, 3, 5, padding="same", rng=rng, dtype=np.float64)
    twin = bench.torch_model([{"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 5,
                               "padding": "same"}]).double()
    with torch.no_grad():
        twin[0].weight.copy_(torch.tensor(ours.params["W"].transpose(3, 2, 0, 1)))
        twin[0].bias.zero_()
    x = rng.standard_normal((2, 7, 6, 2))
    out = twin(torch.tensor(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, ours.forward(x, training=False), rtol=1e-10, atol=1e-12)


def test_pair_errors_names_the_digit_misread_on_its_own_side_of_the_pair():
    import pair_errors

    pairs = np.array([[4, 7], [7, 2], [2, 4]])       # source digits: 4 left of 7, 7 left of 2, ...
    labels = np.array([31, 15, 53])
    # right; the right digit (2) read as 6; the left digit (2) read as 8 and the right (4) right
    pred = np.array([31, 16, 83])
    assert pair_errors.misread(pred, labels, pairs).tolist() == [2]
    pred = np.array([21, 15, 54])                    # left of pair 0 (digit 4), right of pair 2 (4)
    assert pair_errors.misread(pred, labels, pairs).tolist() == [4]
    assert pair_errors.misread(labels, labels, pairs).tolist() == []
