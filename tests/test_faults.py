"""Fault injection: every bad input ends in one line and a non-zero exit, never a traceback, and
the previous outputs are left byte for byte as they were.

Each class of fault runs through the real stage entry points (typer apps, in-process with
CliRunner or as `python -m stages.<name>` subprocesses) and the real `nn` command; the faults
of `nn predict`'s images are in test_predict.py.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ENV, REPO, TINY_MLP, check_one_line, digit_png, nn_predict
from datafakes import fake_mnist, http_server, idx_files, md5s_of, write_mirror
from nn import checkpoint
from nn.files import _TEMP, Outputs, save_npz
from nn.mnist import modelfile
from nn.model import Sequential
from stages import download, evaluate, synthesize, train


MLP = TINY_MLP
PARAMS = {
    "prepare": {"dev_size": 20, "seed": 0},
    "mnist100": {"train_size": 300, "dev_size": 100, "test_size": 100, "seed": 1,
                 "sample_grid": 3},
    "mlp": {"seed": 0, "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01},
            "schedule": {"name": "constant"}, "layers": MLP},
    "evaluate": {"tta_shift": 0},
}


# --- helpers -------------------------------------------------------------------------------

def write_params(root: Path, params: dict) -> None:
    text = json.dumps(params)  # JSON is YAML; NaN and infinity become YAML's .nan and .inf
    (root / "params.yaml").write_text(text.replace("NaN", ".nan").replace("Infinity", ".inf"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under data/, models/, reports/: what a failed run must leave untouched.

    A killed writer's temporaries (.NAME.PID.RANDOM.tmp) are left out, as .dvcignore leaves
    them out of DVC's hashes; the next write beside them removes them.
    """
    return {str(p.relative_to(root)): p.read_bytes()
            for d in ("data", "models", "reports") if (root / d).exists()
            for p in sorted((root / d).rglob("*")) if p.is_file() and not _TEMP.match(p.name)}


def one_line_error(result, code=1) -> str:
    """The run failed with `code`, one line on stderr, no traceback; returns that line."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    err = result.stderr
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
    return err.strip()


def mnist_split(n: int, seed: int, width: int = 28, k: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % k).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, width), dtype=np.uint8)
    images[np.arange(n), 2 + 2 * (labels % 10), :] = 255  # a learnable bar per label
    return {"images": images, "labels": labels}


def make_project(root: Path) -> Path:
    """A pipeline folder: dvc.yaml (for its models map), tiny params, MNIST splits."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    write_params(root, PARAMS)
    for i, (split, n) in enumerate((("train", 200), ("dev", 50), ("test", 50))):
        save_npz(root / "data" / "mnist" / f"{split}.npz", **mnist_split(n, i))
    return root


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project")


def run_train(root: Path, data="data/mnist"):
    with contextlib.chdir(root):
        return CliRunner().invoke(train.app, ["--model", "mlp", "--data", data, "--out",
                                              "models/mlp.npz", "--history",
                                              "reports/mlp/history.csv", "--metrics",
                                              "reports/mlp/train.json"])


def run_evaluate(root: Path, model="models/mlp.npz", data="data/mnist"):
    with contextlib.chdir(root):
        return CliRunner().invoke(evaluate.app, ["--model", model, "--data", data,
                                                 "--out", "reports/mlp"])


def run_synthesize(root: Path):
    with contextlib.chdir(root):
        return CliRunner().invoke(synthesize.app, ["--mnist", "data/mnist", "--out",
                                                   "data/mnist100", "--samples",
                                                   "reports/mnist100_samples.png"])


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("trained") / "project")
    assert run_train(root).exit_code == 0
    assert run_evaluate(root).exit_code == 0
    return root


@pytest.fixture
def trained(trained_once, tmp_path):
    """A project with the outputs of a first successful train + evaluate of the MLP."""
    return shutil.copytree(trained_once, tmp_path / "trained")


# --- every way a data file can be wrong -------------------------------------------------------

def stored_npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def corrupt(path: Path, kind: str) -> None:
    good = dict(np.load(path))
    if kind == "missing":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "bad-crc":
        np.savez(path, **good)  # stored, not deflated: one flipped byte is a CRC error
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "not-a-zip":
        path.write_text("images,labels\n1,2\n")
    elif kind == "npy-renamed":
        with open(path, "wb") as f:
            np.save(f, good["images"])
    elif kind == "pickled":
        np.savez(path, images=np.array([good["images"], None], dtype=object), labels=good["labels"])
    elif kind == "missing-key":
        np.savez(path, images=good["images"])
    elif kind == "flattened":
        np.savez(path, images=good["images"].reshape(len(good["images"]), -1), labels=good["labels"])
    elif kind == "float-images":
        np.savez(path, images=good["images"] / np.float32(255), labels=good["labels"])
    elif kind == "float-labels":
        np.savez(path, images=good["images"], labels=good["labels"].astype(np.float64))
    elif kind == "nan-labels":
        np.savez(path, images=good["images"], labels=np.full(len(good["labels"]), np.nan))
    elif kind == "label-range":
        labels = good["labels"].copy()
        labels[0] = 200
        np.savez(path, images=good["images"], labels=labels)
    elif kind == "count-mismatch":
        np.savez(path, images=good["images"], labels=good["labels"][:-1])
    elif kind == "no-samples":
        np.savez(path, images=good["images"][:0], labels=good["labels"][:0])
    elif kind == "terabytes":  # a header claiming 10^12 images, a few bytes of data
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                                   "shape": (10**12, 28, 28)})
        stored_npz(path, {"images.npy": buf.getvalue() + b"\0" * 64,
                          "labels.npy": b""})
    else:
        raise ValueError(kind)


DATA_FAULTS = {
    "missing": "no such file",
    "directory": "is a folder, not a file",
    "empty": "empty file",
    "truncated": "truncated or corrupt .npz",
    "bad-crc": "truncated or corrupt .npz (Bad CRC-32",
    "not-a-zip": "not an .npz archive",
    "npy-renamed": "a bare .npy array, not an .npz archive",
    "pickled": "array 'images' holds pickled Python objects (refused)",
    "missing-key": "missing array(s) labels",
    "flattened": "array 'images' has shape (200, 784), expected 3 dimensions",
    "float-images": "array 'images' has dtype float32, expected uint8",
    "float-labels": "array 'labels' has dtype float64, expected iu",
    "nan-labels": "array 'labels' holds NaN or infinity",
    "label-range": "the data has 201 classes",
    "count-mismatch": "array 'labels' has shape (199,), expected (200)",
    "no-samples": "array 'images' is empty",
    "terabytes": "array 'images' declares shape (1000000000000, 28, 28) (784,000,000,000,000 bytes)",
}


@pytest.mark.parametrize("kind", DATA_FAULTS)
def test_bad_training_data_is_one_line_and_keeps_the_model(trained, kind):
    before = snapshot(trained)
    target = trained / "data" / "mnist" / "train.npz"
    corrupt(target, kind)
    before = {k: v for k, v in before.items() if k != "data/mnist/train.npz"}
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: ") and DATA_FAULTS[kind] in line, line
    if kind != "label-range":
        assert str(Path("data/mnist/train.npz")) in line
    after = snapshot(trained)
    after.pop("data/mnist/train.npz", None)
    assert after == before


@pytest.mark.parametrize("kind", ["truncated", "npy-renamed", "flattened", "float-images",
                                  "label-range", "terabytes", "directory"])
def test_bad_test_data_in_evaluate(trained, kind):
    corrupt(trained / "data" / "mnist" / "test.npz", kind)
    before = snapshot(trained)
    line = one_line_error(run_evaluate(trained))
    assert line.startswith("evaluate models/mlp.npz: error: data/mnist/test.npz: "), line
    assert snapshot(trained) == before


@pytest.mark.parametrize("kind", ["truncated", "bad-crc", "pickled", "float-labels",
                                  "label-range", "flattened"])
def test_bad_source_digits_in_synthesize(project, kind):
    assert run_synthesize(project).exit_code == 0
    corrupt(project / "data" / "mnist" / "test.npz", kind)
    before = snapshot(project)
    line = one_line_error(run_synthesize(project))
    assert line.startswith("synthesize: error: data/mnist/test.npz: "), line
    if kind == "label-range":
        assert "array 'labels' has value 200 above 9" in line
    assert snapshot(project) == before


# --- every way a model file can be wrong ------------------------------------------------------

def tiny_net(rng=None) -> Sequential:
    return Sequential.from_spec([{"type": "Flatten"},
                                 {"type": "Linear", "in_features": 784, "out_features": 10}],
                                rng or np.random.default_rng(0))


def craft_model(path: Path, kind: str) -> None:
    """A model file whose hash is valid but whose contents are not."""
    net = tiny_net()
    header = {"format": modelfile.FORMAT, "version": checkpoint.VERSION, "spec": net.spec,
              "input_shape": [28, 28, 1], "normalization": {"mean": 0.1, "std": 0.3},
              "classes": [str(i) for i in range(10)], "meta": {}}
    state = net.state_dict()
    if kind == "nan-weight":
        state["1.W"][3, 4] = np.nan
    elif kind == "short-classes":
        header["classes"] = ["0", "1"]
    elif kind == "zero-std":
        header["normalization"] = {"mean": 0.1, "std": 0.0}
    elif kind == "bad-input-shape":
        header["input_shape"] = "28x28"
    elif kind == "int-weights":
        state["1.b"] = state["1.b"].astype(np.int64)
    elif kind == "meta-list":
        header["meta"] = [1, 2]
    checkpoint._write(path, header, state)


MODEL_FAULTS = {
    "nan-weight": "weights '1.W' hold NaN or infinity",
    "short-classes": "classes lists 2 names, the network has 10 outputs",
    "zero-std": "is not a finite mean and a positive std",
    "bad-input-shape": "input_shape '28x28' is not a list of positive sizes",
    "int-weights": "weights '1.b' have dtype int64, not float",
    "meta-list": "meta is list, not a mapping",
    "directory": "is a folder, not a file",
    "npy-renamed": "a bare .npy array, not an .npz archive",
    "terabytes": "declares shape (1000000000000, 28, 28)",
}


def bad_model(root: Path, kind: str) -> Path:
    path = root / "models" / "bad.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "directory":
        path.mkdir()
    elif kind == "npy-renamed":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "terabytes":
        save_npz(path, images=np.zeros((1, 28, 28), np.uint8), labels=np.zeros(1, np.uint8))
        corrupt(path, "terabytes")
    else:
        craft_model(path, kind)
    return path


@pytest.mark.parametrize("kind", MODEL_FAULTS)
def test_bad_model_file_in_evaluate(trained, kind):
    model = bad_model(trained, kind)
    before = snapshot(trained)
    line = one_line_error(run_evaluate(trained, model="models/bad.npz"))
    assert line.startswith("evaluate models/bad.npz: error: models/bad.npz: "), line
    assert MODEL_FAULTS[kind] in line, line
    assert snapshot(trained) == before and model.exists()


@pytest.mark.parametrize("kind", ["nan-weight", "short-classes", "directory", "terabytes"])
def test_bad_model_file_in_predict(tmp_path, kind):
    model = bad_model(tmp_path, kind)
    proc = nn_predict(digit_png(tmp_path / "a.png"), "--model", model, cwd=tmp_path)
    line = check_one_line(proc, 2)
    assert line.startswith(f"error: {model}: ") and MODEL_FAULTS[kind] in line, line
    assert proc.stdout == b""


# --- params ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"mlp": {"optimizer": {"name": "sgd", "lr": float("inf")}}},
     "mlp.optimizer.lr: inf is not a finite number"),
    ({"mlp": {"optimizer": {"name": "adamw", "lr": 0.1, "weight_decay": float("nan")}}},
     "mlp.optimizer.weight_decay: nan is not a finite number"),
    ({"mlp": {"clip_norm": float("nan")}}, "mlp.clip_norm: nan is not a finite number"),
    ({"mlp": {"label_smoothing": float("-inf")}}, "mlp.label_smoothing: -inf is not a finite"),
    ({"mlp": {"layers": [*MLP[:3], {"type": "Dropout", "p": "0.1"}, MLP[4]]}},
     "mlp.layers[3] (Dropout): p must be a probability in [0, 1], got '0.1'"),
    ({"mlp": {"layers": [*MLP[:3], {"type": "Dropout", "p": float("nan")}, MLP[4]]}},
     "mlp.layers[3].p: nan is not a finite number"),
    ({"mlp": {"layers": [MLP[0], {"type": "Linear", "in_features": 700, "out_features": 16},
                         *MLP[2:]]}},
     "mlp.layers[1] (Linear) cannot take input (784,)"),
    ({"mlp": {"layers": [*MLP[:4], {"type": "Linear", "in_features": 32, "out_features": 100}]}},
     "mlp.layers: the network has 100 outputs (100,), the data has 10 classes (labels 0..9)"),
    ({"mlp": {"batch_size": 500}}, "mlp.batch_size: 500 is more than the 200 training images"),
    ({"mlp": {"rotate": 90}}, "mlp.rotate: 90.0 must be <= 45"),
    ({"mlp": {"scale": 1.0}}, "mlp.scale: 1.0 must be < 1"),
    ({"mlp": {"shear": float("nan")}}, "mlp.shear: nan is not a finite number"),
    ({"mlpp": PARAMS["mlp"]}, "params.yaml: unknown section 'mlpp' (known: download, prepare, "
                              "mnist100, mlp, cnn, evaluate, tune)"),
])
def test_bad_params_are_one_line_naming_the_key(trained, change, message):
    params = json.loads(json.dumps(PARAMS))
    for section, values in change.items():
        params[section] = {**params.get(section, {}), **values}
    write_params(trained, params)
    before = snapshot(trained)
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: ") and message in line, line
    assert snapshot(trained) == before


def test_download_timeout_nan_is_refused(tmp_path):
    files = idx_files(fake_mnist(20, 10))
    p = {"sources": ["url"], "pypi": {"requirement": "x==1", "sha256": "0" * 64},
         "urls": ["http://127.0.0.1:9/"], "timeout": float("nan"), "md5": md5s_of(files)}
    write_params(tmp_path, {"download": p})
    with contextlib.chdir(tmp_path):
        result = CliRunner().invoke(download.app, ["--out", "raw"])
    assert one_line_error(result) == "download: error: download.timeout: nan is not a finite number"


# --- divergence --------------------------------------------------------------------------------

def test_an_absurd_loss_is_divergence_not_a_model(trained):
    params = json.loads(json.dumps(PARAMS))
    params["mlp"]["optimizer"] = {"name": "sgd", "lr": 1e6, "momentum": 0.0}
    write_params(trained, params)
    before = snapshot(trained)
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: training diverged: loss became "), line
    assert snapshot(trained) == before


# --- no silent garbage ------------------------------------------------------------------------

def test_a_model_at_chance_on_dev_is_an_error_not_a_model(trained):
    """Dev labels that do not match the training ones (here: shifted by one) give a model that
    learned its training set and scores dev at chance: an error, and no model is written."""
    dev = dict(np.load(trained / "data" / "mnist" / "dev.npz"))
    dev["labels"] = (dev["labels"] + 1) % 10
    save_npz(trained / "data" / "mnist" / "dev.npz", **dev)
    params = json.loads(json.dumps(PARAMS))
    params["mlp"]["epochs"] = 6
    write_params(trained, params)
    before = snapshot(trained)
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: training gave a useless model: dev accuracy "), line
    assert "likely cause: dev data that do not match the training data" in line
    assert snapshot(trained) == before


def test_a_short_run_with_the_weight_average_says_so_and_still_learns(trained):
    """ema 0.999 forgets over 1,000 steps; this run takes 35. The average is corrected for its
    start instead of staying at the initial weights (which scored chance before), and an epoch
    whose average scores worse than the trained weights keeps the trained weights."""
    params = json.loads(json.dumps(PARAMS))
    params["mlp"].update(epochs=5, ema=0.999)
    write_params(trained, params)
    result = run_train(trained)
    assert result.exit_code == 0, result.output
    assert ("train@mlp: note: mlp.ema 0.999 forgets over 1,000 steps and this run takes 35: "
            "it averages nearly the whole run") in result.stdout
    assert json.loads((trained / "reports/mlp/train.json").read_text())["dev_acc"] >= 0.8


@pytest.mark.parametrize("target", ["models/mlp.npz", "reports/mlp/history.csv",
                                    "reports/mlp/train.json"])
def test_an_output_that_is_a_folder_stops_training_before_it_starts(trained, target):
    (trained / target).unlink()
    (trained / target).mkdir()
    before = snapshot(trained)
    line = one_line_error(run_train(trained))
    assert line == f"train@mlp: error: {target}: is a folder, not a file that can be replaced"
    assert snapshot(trained) == before and not list(trained.rglob("*.tmp"))


def test_write_together_checks_every_target_before_the_first_rename(tmp_path):
    from nn.files import write_together

    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(IsADirectoryError, match="b.txt: is a folder"):
        with write_together() as outputs:
            outputs.write_bytes(tmp_path / "a.txt", b"new a")
            outputs.write_bytes(tmp_path / "b.txt", b"new b")
    assert (tmp_path / "a.txt").read_text() == "old a"         # not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporaries


def test_lr_find_with_out_a_file_stops_before_the_range_test(trained):
    (trained / "taken").write_text("a file")
    proc = subprocess.run([sys.executable, "-m", "nn.mnist.cli", "lr-find", "mlp", "--out",
                           "taken"], cwd=trained, env=ENV, capture_output=True, timeout=120)
    assert check_one_line(proc, 1) == "error: taken/mlp.csv: taken is a file, not a folder"
    assert (trained / "taken").read_text() == "a file" and proc.stdout == b""


def test_a_model_file_without_class_names_is_evaluated(trained):
    net, info = modelfile.load(trained / "models" / "mlp.npz")
    modelfile.save(trained / "models" / "nameless.npz", net, normalization=info.normalization,
                   input_shape=info.input_shape, classes=None)
    result = run_evaluate(trained, model="models/nameless.npz")
    assert result.exit_code == 0, result.output
    table = (trained / "reports" / "mlp" / "per_class.csv").read_text().splitlines()
    assert table[0].startswith("class,") and [r.split(",")[0] for r in table[1:]] == \
        [str(c) for c in range(10)]


def test_yaml_errors_give_line_column_and_reason(trained):
    (trained / "params.yaml").write_text("mlp:\n  seed: 1\n  seed: 2\n")
    line = one_line_error(run_train(trained))
    assert line == ('train@mlp: error: params.yaml: invalid YAML at line 3, column 3: found '
                    'duplicate key "seed" with value "2" (original value: "1")'), line
    (trained / "params.yaml").write_text("mlp: [1, 2\nprepare: 3\n")
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: params.yaml: invalid YAML at line 2, column 8: "
                           "expected ',' or ']'"), line


# --- all-or-nothing outputs: a failure or Ctrl-C at each write --------------------------------

@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("stage", ["synthesize", "train", "evaluate"])
def test_a_failure_at_any_write_leaves_the_old_outputs(trained, monkeypatch, stage, error):
    assert run_synthesize(trained).exit_code == 0
    params = json.loads(json.dumps(PARAMS))
    params["mnist100"]["seed"] = 7  # new outputs would differ from the old ones
    params["mlp"]["seed"] = 7
    write_params(trained, params)
    run = {"synthesize": run_synthesize, "train": run_train, "evaluate": run_evaluate}[stage]
    writes = {"synthesize": 4, "train": 2, "evaluate": 5}[stage]
    real_open = Outputs.open
    for k in range(writes):
        before = snapshot(trained)
        calls = []

        def failing_open(self, path, k=k):
            calls.append(path)
            if len(calls) > k:
                raise error
            return real_open(self, path)

        monkeypatch.setattr(Outputs, "open", failing_open)
        result = run(trained)
        line = one_line_error(result, 130 if isinstance(error, KeyboardInterrupt) else 1)
        assert ("interrupted" if isinstance(error, KeyboardInterrupt) else "No space") in line
        assert snapshot(trained) == before, f"write {k + 1} of {writes}"
        assert not list(trained.rglob("*.tmp"))
        monkeypatch.setattr(Outputs, "open", real_open)


def stage_cmd(stage: str) -> list[str]:
    args = {"synthesize": ["--mnist", "data/mnist", "--out", "data/mnist100",
                           "--samples", "reports/mnist100_samples.png"],
            "train": ["--model", "mlp", "--data", "data/mnist", "--out", "models/mlp.npz",
                      "--history", "reports/mlp/history.csv",
                      "--metrics", "reports/mlp/train.json"]}[stage]
    return [sys.executable, "-m", f"stages.{stage}", *args]


def big_params(seed: int) -> dict:
    """Params that make synthesize and train run for a second or two."""
    params = json.loads(json.dumps(PARAMS))
    params["mnist100"].update(train_size=10_000, seed=seed)
    params["mlp"].update(epochs=2, seed=seed, batch_size=25,
                         layers=[MLP[0], {"type": "Linear", "in_features": 784, "out_features": 64},
                                 MLP[2], MLP[3],
                                 {"type": "Linear", "in_features": 64, "out_features": 10}])
    return params


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["synthesize", "train"])
def test_sigint_and_sigkill_at_any_moment_leave_old_or_new_outputs(project, stage):
    save_npz(project / "data" / "mnist" / "train.npz", **mnist_split(1000, 0))
    write_params(project, big_params(seed=1))
    t0 = time.perf_counter()
    subprocess.run(stage_cmd(stage), cwd=project, env=ENV, check=True, capture_output=True)
    duration = time.perf_counter() - t0
    old = snapshot(project)
    write_params(project, big_params(seed=2))
    fresh = project.parent / "fresh"
    shutil.copytree(project, fresh)
    subprocess.run(stage_cmd(stage), cwd=fresh, env=ENV, check=True, capture_output=True)
    new = snapshot(fresh)
    outputs = [k for k in new if new[k] != old.get(k)]
    assert outputs and all(k in old for k in outputs)  # the run rewrites every output

    # Ctrl-C while starting; then, at the stage's milestones (lines on stdout, so that the moment
    # is the same on a loaded machine): SIGKILL and Ctrl-C while working and writing. A SIGKILL
    # cannot be held back, so one landing inside the final renames (a few syscalls) could split
    # them: that moment is the one not tried (see nn.files.write_together).
    first, second = {"synthesize": ("synthesize: train:", "synthesize: dev:"),
                     "train": ("train@mlp: 1,000 train", "train@mlp: epoch   1/2")}[stage]
    for sig, milestone in ((signal.SIGINT, None), (signal.SIGKILL, first), (signal.SIGINT, second),
                           (signal.SIGKILL, second)):
        proc = subprocess.Popen(stage_cmd(stage), cwd=project, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if milestone is None:
            time.sleep(duration * 0.2)
        else:
            for line in proc.stdout:
                if line.decode().startswith(milestone):
                    break
            else:
                pytest.fail(f"{stage} ended without printing {milestone!r}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        now = snapshot(project)
        state = "old" if now == old else "new" if now == new else "mixed"
        assert state != "mixed", (sig, milestone, [k for k in now if now[k] != old.get(k)])
        err = err.decode()
        assert "Traceback" not in err, err
        if sig == signal.SIGINT and proc.returncode == -signal.SIGINT:
            # Ctrl-C before the interpreter installed its handler: the OS ended it before any
            # of our code ran, so nothing can have been written
            assert state == "old" and not err.strip(), err
        elif sig == signal.SIGINT and proc.returncode != 0:
            assert proc.returncode == 130, err
            assert [line for line in err.splitlines() if "interrupted" in line] in (
                [f"{stage}: interrupted while starting; nothing was written"],
                [f"{'train@mlp' if stage == 'train' else stage}: interrupted; outputs left "
                 f"as they were"]), err
            # its own temporaries are gone (a killed run's before it wait for the next write)
            assert not list(project.rglob(f"*.{proc.pid}.*.tmp"))
        if state == "new":  # the next round starts from the old outputs again
            shutil.rmtree(project / "data")
            shutil.rmtree(project / "reports", ignore_errors=True)
            shutil.rmtree(project / "models", ignore_errors=True)
            for name, data in old.items():
                (project / name).parent.mkdir(parents=True, exist_ok=True)
                (project / name).write_bytes(data)
    # a killed writer's temporaries are removed by the next run that writes beside them
    subprocess.run(stage_cmd(stage), cwd=project, env=ENV, check=True, capture_output=True)
    assert snapshot(project) == new and not list(project.rglob("*.tmp"))


# --- download: bad URLs, a mirror that drips bytes, every source listed --------------------------

class _Drip(http.server.BaseHTTPRequestHandler):
    """Promises 100 kB, then sends one byte every 50 ms."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(100000):
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def drip_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_download(root: Path, urls: list[str], **extra):
    files = idx_files(fake_mnist(20, 10))
    p = {"sources": ["url"], "pypi": {"requirement": "x==1", "sha256": "0" * 64},
         "urls": urls, "timeout": 1, "deadline": 0.5, "md5": md5s_of(files), **extra}
    write_params(root, {"download": p})
    with contextlib.chdir(root):
        return CliRunner().invoke(download.app, ["--out", "raw"]), files


@pytest.mark.slow
def test_bad_urls_and_a_dripping_mirror_are_skipped_for_a_good_one(tmp_path):
    files = idx_files(fake_mnist(20, 10))
    write_mirror(tmp_path / "good", files)
    start = time.perf_counter()
    with drip_server() as drip, http_server(tmp_path) as base:
        result, files = run_download(tmp_path, ["not a url", "ftp://example.org/mnist/",
                                                "http://host:port/", drip, f"{base}/good/"])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()} == files
    assert time.perf_counter() - start < 10  # four files, each past the drip's 0.5 s deadline


def test_every_source_failing_lists_each_with_its_reason(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "keep").write_bytes(b"old")
    start = time.perf_counter()
    with drip_server() as drip:
        result, _ = run_download(tmp_path, ["not a url", drip, "http://127.0.0.1:9/"])
    line = one_line_error(result)
    assert time.perf_counter() - start < 5
    assert line.startswith("download: error: every source failed: url: ")
    assert "'not a url': not an http(s) URL, skipped" in line
    assert f"{drip}train-images-idx3-ubyte.gz: not done within the 0.5 s deadline" in line
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz: " in line
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["keep"]


# --- a bug is not bad input -------------------------------------------------------------------

def _raise(error: Exception):
    def fail(*args, **kwargs):
        raise error
    return fail


BUG = "unexpected error (a bug, not a problem with your input)"


@pytest.mark.parametrize("stage, where, error", [
    ("train", "train_model", ValueError("operands could not be broadcast together")),
    ("train", "dev_metrics", KeyError("dev_acc")),
    ("evaluate", "evaluate", ValueError("shapes (3,) and (4,) not aligned")),
    ("evaluate", "per_class", KeyError("f1")),
])
def test_a_bug_below_a_stage_says_so_and_keeps_the_outputs(trained, monkeypatch, stage, where,
                                                            error):
    """A ValueError or KeyError from the code a stage calls is a bug, not the tidy line of a
    bad input: one line saying so and how to see the traceback; NN_DEBUG=1 gives the traceback."""
    before = snapshot(trained)
    monkeypatch.setattr(globals()[stage], where, _raise(error))
    run = run_train if stage == "train" else run_evaluate
    line = one_line_error(run(trained))
    label = "train@mlp" if stage == "train" else "evaluate models/mlp.npz"
    assert line == f"{label}: {BUG}: {type(error).__name__}: {error}; run with NN_DEBUG=1 for " \
                   f"the traceback", line
    assert snapshot(trained) == before
    monkeypatch.setenv("NN_DEBUG", "1")
    result = run(trained)
    assert result.exit_code != 0 and result.exception is error  # raised: the traceback
    assert snapshot(trained) == before


def test_bad_input_is_still_one_tidy_line_not_a_bug(trained):
    (trained / "data" / "mnist" / "dev.npz").write_bytes(b"not a zip")
    line = one_line_error(run_train(trained))
    assert line.startswith("train@mlp: error: data/mnist/dev.npz: ") and "bug" not in line, line


def test_a_bug_under_nn_says_so_and_nn_debug_shows_the_traceback(trained, monkeypatch, capsys):
    from nn.mnist import classify, cli

    monkeypatch.setattr(classify, "load_classifier", _raise(KeyError("meta")))
    digit = digit_png(trained / "digit.png")
    monkeypatch.setattr(sys, "argv", ["nn", "predict", str(digit), "--model",
                                      str(trained / "models" / "mlp.npz")])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == f"nn: {BUG}: KeyError: 'meta'; run with NN_DEBUG=1 for the traceback\n", err
    monkeypatch.setenv("NN_DEBUG", "1")
    with pytest.raises(KeyError, match="meta"):
        cli.run()


def test_report_reads_its_inputs_strictly(trained, tmp_path):
    """The report's inputs are checked: a metrics.json without a field or a per_class.csv
    without its class column is one line naming the file, not a KeyError."""
    from stages import report

    root = trained
    (root / "data" / "mnist100").mkdir()
    for split in ("train", "dev", "test"):
        shutil.copy(root / "data" / "mnist" / f"{split}.npz", root / "data" / "mnist100")

    def run_report(*models):
        with contextlib.chdir(root):
            return CliRunner().invoke(report.app, ["--data", "data", "--reports", "reports",
                                                   "--out", "reports/README.md", *models])

    metrics = root / "reports" / "mlp" / "metrics.json"
    good = metrics.read_text()
    metrics.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "loss"}))
    assert one_line_error(run_report("--mlp", "mnist")) == \
        "report: error: reports/mlp/metrics.json: no 'loss'"
    metrics.write_text("{")
    assert one_line_error(run_report("--mlp", "mnist")).startswith(
        "report: error: reports/mlp/metrics.json: not JSON")
    metrics.write_text(good)
    table = root / "reports" / "mlp" / "per_class.csv"
    table.write_text(table.read_text().replace("class,", "klass,", 1))
    assert one_line_error(run_report("--mlp", "mnist")) == \
        "report: error: reports/mlp/per_class.csv: no column 'class'"
    assert one_line_error(run_report("--cnn", "mnist")) == \
        "report: error: params.yaml: cnn.epochs: missing"
    assert not (root / "reports" / "README.md").exists()


def test_a_bad_thread_budget_is_one_line(trained, monkeypatch):
    """NN_THREADS (one job's share of the cores, docs/team.md) is a setting: one line."""
    monkeypatch.setenv("NN_THREADS", "two")
    before = snapshot(trained)
    assert one_line_error(run_train(trained)) == \
        "train@mlp: error: NN_THREADS='two': expected a whole number of threads >= 1"
    assert one_line_error(run_evaluate(trained)) == "evaluate models/mlp.npz: error: " \
        "NN_THREADS='two': expected a whole number of threads >= 1"
    assert snapshot(trained) == before
