"""prepare and synthesize: splits, MNIST-100 layout, balance, disjointness and determinism."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datafakes import fake_mnist, idx_files
from nn.files import load_npz
from nn.mnist.mnist100 import balanced_labels, synthesize
from nn.mnist.split import stratified_split
from stages import prepare, synthesize as synthesize_stage

SIZES = {"train_size": 300, "dev_size": 150, "test_size": 101}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    for name, data in idx_files(fake_mnist(n_train=200, n_test=50)).items():
        (folder / name).write_bytes(data)
    return folder


def write_params(folder, **sections):
    params = {"prepare": {"dev_size": 40, "seed": 1},
              "mnist100": {**SIZES, "seed": 7, "sample_grid": 3}}
    for section, values in sections.items():
        params[section] = {**params[section], **values}
    path = folder / "params.yaml"
    path.write_text(json.dumps(params))
    return path


def run(app, *args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def prepare_into(raw, folder):
    folder.mkdir(parents=True, exist_ok=True)
    p = write_params(folder)
    result = run(prepare.app, "--raw", raw, "--out", folder / "mnist", "--params", p)
    assert result.exit_code == 0, result.output
    return folder / "mnist"


def synthesize_into(mnist, folder, **mnist100):
    folder.mkdir(parents=True, exist_ok=True)
    p = write_params(folder, mnist100=mnist100)
    result = run(synthesize_stage.app, "--mnist", mnist, "--out", folder / "m100",
                 "--samples", folder / "samples.png", "--params", p)
    assert result.exit_code == 0, result.output
    return folder / "m100"


def test_stratified_split_is_exact_disjoint_and_proportional():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 190])
    train, dev = stratified_split(labels, 100, np.random.default_rng(0))
    assert len(dev) == 100 and len(train) == len(labels) - 100
    assert not set(train) & set(dev)
    np.testing.assert_allclose(np.bincount(labels[dev]), np.bincount(labels) / 10, atol=1)


def test_prepare_splits_train_into_disjoint_train_and_dev(raw, tmp_path):
    mnist = prepare_into(raw, tmp_path)
    train = load_npz(mnist / "train.npz", ("images", "labels", "index"))
    dev = load_npz(mnist / "dev.npz", ("images", "labels", "index"))
    test = load_npz(mnist / "test.npz", ("images", "labels", "index"))
    assert len(dev["labels"]) == 40 and len(train["labels"]) == 160 and len(test["labels"]) == 50
    assert sorted([*train["index"], *dev["index"]]) == list(range(200))
    src = fake_mnist(n_train=200, n_test=50)
    np.testing.assert_array_equal(train["images"], src["train"][0][train["index"]])
    np.testing.assert_array_equal(dev["labels"], src["train"][1][dev["index"]])
    assert train["images"].dtype == np.uint8 and train["images"].shape[1:] == (28, 28)


def test_balanced_labels():
    for n in (100, 250, 1001):
        counts = np.bincount(balanced_labels(n, np.random.default_rng(n)), minlength=100)
        assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_pairs_put_the_tens_digit_left_and_the_ones_digit_right():
    images, labels = fake_mnist(n_train=200)["train"]
    data = synthesize(images, labels, 500, np.random.default_rng(3))
    x, y, pairs = data["images"], data["labels"], data["pairs"]
    assert x.shape == (500, 28, 56) and x.dtype == np.uint8 and y.dtype == np.uint8
    np.testing.assert_array_equal(x[:, :, :28], images[pairs[:, 0]])
    np.testing.assert_array_equal(x[:, :, 28:], images[pairs[:, 1]])
    np.testing.assert_array_equal(labels[pairs[:, 0]], y // 10)
    np.testing.assert_array_equal(labels[pairs[:, 1]], y % 10)


def test_stage_output_is_balanced_and_each_split_uses_only_its_own_digits(raw, tmp_path):
    mnist = prepare_into(raw, tmp_path)
    m100 = synthesize_into(mnist, tmp_path)
    for split, n in (("train", 300), ("dev", 150), ("test", 101)):
        src = load_npz(mnist / f"{split}.npz", ("images", "labels", "index"))
        data = load_npz(m100 / f"{split}.npz", ("images", "labels", "pairs"))
        counts = np.bincount(data["labels"], minlength=100)
        assert counts.sum() == n and counts.max() - counts.min() <= 1
        # pairs index the split's own MNIST file; its digits are the ones shown
        np.testing.assert_array_equal(data["images"][:, :, :28], src["images"][data["pairs"][:, 0]])
        np.testing.assert_array_equal(data["images"][:, :, 28:], src["images"][data["pairs"][:, 1]])
    train_idx = load_npz(mnist / "train.npz", ("index",))["index"]
    dev_idx = load_npz(mnist / "dev.npz", ("index",))["index"]
    assert not set(train_idx) & set(dev_idx)
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synthesis_is_byte_identical_for_a_seed_and_differs_for_another(raw, tmp_path):
    mnist = prepare_into(raw, tmp_path / "p")
    outs = [synthesize_into(mnist, tmp_path / name, seed=seed)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    for split in ("train", "dev", "test"):
        a, b, c = ((o / f"{split}.npz").read_bytes() for o in outs)
        assert a == b
        assert a != c
    assert (tmp_path / "a" / "samples.png").read_bytes() == (tmp_path / "b" / "samples.png").read_bytes()


def test_changing_one_split_size_leaves_the_other_splits_alone(raw, tmp_path):
    mnist = prepare_into(raw, tmp_path / "p")
    a = synthesize_into(mnist, tmp_path / "a")
    b = synthesize_into(mnist, tmp_path / "b", train_size=333)
    assert (a / "dev.npz").read_bytes() == (b / "dev.npz").read_bytes()
    assert (a / "train.npz").read_bytes() != (b / "train.npz").read_bytes()


@pytest.mark.parametrize("section, change, message", [
    ("mnist100", {"train_size": 0}, "mnist100.train_size: 0 must be >= 1"),
    ("mnist100", {"seed": "x"}, "mnist100.seed: expected an integer, got 'x'"),
    ("mnist100", {"train_sise": 5}, "mnist100.train_sise: unknown key"),
    ("prepare", {"dev_size": 1.5}, "prepare.dev_size: expected an integer, got 1.5"),
])
def test_bad_params_fail_with_the_key_and_write_nothing(raw, tmp_path, section, change, message):
    p = write_params(tmp_path, **{section: change})
    if section == "prepare":
        result = run(prepare.app, "--raw", raw, "--out", tmp_path / "out", "--params", p)
    else:
        result = run(synthesize_stage.app, "--mnist", tmp_path, "--out", tmp_path / "out",
                     "--samples", tmp_path / "s.png", "--params", p)
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_prepare_with_a_dev_size_too_large_fails_cleanly(raw, tmp_path):
    p = write_params(tmp_path, prepare={"dev_size": 500})
    result = run(prepare.app, "--raw", raw, "--out", tmp_path / "out", "--params", p)
    assert result.exit_code == 1
    assert "prepare: error: prepare.dev_size: 500 must be less than the 200 training images in " in result.output
    assert not (tmp_path / "out").exists()


def test_prepare_rejects_a_corrupt_idx_file(raw, tmp_path):
    bad = tmp_path / "raw"
    bad.mkdir()
    for f in raw.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "train-labels-idx1-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes()[:-3])
    p = write_params(tmp_path)
    result = run(prepare.app, "--raw", bad, "--out", tmp_path / "out", "--params", p)
    assert result.exit_code == 1
    assert "train-labels-idx1-ubyte: IDX shape (200,) needs 208 bytes, file has 205 (truncated)" in result.output
    assert not (tmp_path / "out").exists()
