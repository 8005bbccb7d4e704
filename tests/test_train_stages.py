"""train / evaluate / report stages on tiny data: params validation, outputs, divergence."""

import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import INF, NAN, TINY_CNN, TINY_MLP, model_params, run_train
from nn.files import save_npz
from nn.mnist.params import read_yaml
from nn.mnist.modelfile import load
from nn.mnist.params import validate
from nn.mnist.training import TrainParams, load_split, subset, train_model
from stages import evaluate, report, train

CNN, MLP = TINY_CNN, TINY_MLP


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "mlp.epochs: 0 must be >= 1"),
    ({"batch_size": 0}, "mlp.batch_size: 0 must be >= 1"),
    ({"optimizer": {"name": "adam", "lr": -0.1}}, "mlp.optimizer.lr: -0.1 must be > 0"),
    ({"optimizer": {"name": "rmsprop", "lr": 0.1}}, "mlp.optimizer.name: 'rmsprop' is not one of"),
    ({"optimizer": {"name": "sgd", "lr": 0.1, "momentun": 0.9}}, "mlp.optimizer.momentun: unknown key"),
    ({"epochs": "ten"}, "mlp.epochs: expected an integer, got 'ten'"),
    ({"label_smoothing": 1.0}, "mlp.label_smoothing: 1.0 must be < 1"),
    ({"learning_rate": 0.1}, "mlp.learning_rate: unknown key"),
    ({"layers": [{"type": "Dropout", "p": 1.0}]}, "mlp.layers[0].p: 1.0 must be in [0, 1)"),
    ({"layers": [{"type": "Dense"}]}, "mlp.layers[0]: unknown type 'Dense'"),
    ({"schedule": {"name": "cosine", "args": {"warmup": 1}}}, "mlp.schedule: schedule 'cosine' got unknown argument"),
    ({"optimizer": {"name": "adam", "lr": True}}, "mlp.optimizer.lr: expected a number, got True"),
    ({"engine": "gpu"}, "mlp.engine: 'gpu' is not one of 'fast', 'reference'"),
    ({"layers": [{"type": "Flatten"}, "ReLU"]}, "mlp.layers[1]: expected a mapping, got str"),
    ({"optimizer": "adam"}, "mlp.optimizer: expected a mapping, got str"),
    ({"clip_norm": 0}, "mlp.clip_norm: 0.0 must be > 0"),
    ({"ema": 1}, "mlp.ema: 1.0 must be < 1"),
])
def test_bad_params_name_the_key_and_write_nothing(tmp_path, data, change, message):
    result, out, history = run_train(tmp_path, data, "mlp", model_params(MLP, **change), "mnist")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not out.exists() and not history.exists()


@pytest.mark.parametrize("change, message", [
    ({"optimizer": {"name": "adam", "lr": NAN}}, "mlp.optimizer.lr: nan is not a finite number"),
    ({"clip_norm": INF}, "mlp.clip_norm: inf is not a finite number"),
    ({"schedule": {"name": "onecycle", "args": {"pct_start": NAN}}},
     "mlp.schedule.args.pct_start: nan is not a finite number"),
    ({"layers": [{"type": "Flatten"}, {"type": "Dropout", "p": NAN}]},
     "mlp.layers[1].p: nan is not a finite number"),
])
def test_nan_and_infinity_are_refused_everywhere(tmp_path, data, change, message):
    result, out, history = run_train(tmp_path, data, "mlp", model_params(MLP, **change), "mnist")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not out.exists() and not history.exists()


def test_the_reference_engine_trains_end_to_end(tmp_path, data):
    result, out, history = run_train(tmp_path, data, "mlp", model_params(MLP, engine="reference"),
                                     "mnist")
    assert result.exit_code == 0, result.output
    assert "train@mlp: trained on the reference engine" in result.output
    assert load(out, engine="reference")[1].classes == [str(i) for i in range(10)]


def test_the_dev_metrics_are_the_best_epoch_and_train_size_subsets(tmp_path, data):
    result, _, history = run_train(tmp_path, data, "mlp", model_params(MLP, epochs=3, train_size=50),
                                   "mnist")
    assert result.exit_code == 0, result.output
    assert "50 train / 200 dev images" in result.output
    rows = pd.read_csv(history)
    metrics = json.loads((tmp_path / "reports" / "mlp" / "train.json").read_text())
    best = int(rows["dev_acc"].idxmax())
    assert metrics == {"dev_acc": pytest.approx(rows["dev_acc"][best], abs=1e-6),
                       "best_epoch": best + 1, "epochs_run": 3}
    assert train.dev_metrics(rows.to_dict("records")) == metrics   # history.csv holds it all
    x, y = subset(np.arange(200), np.arange(200), 50, seed=0)
    assert len(set(x)) == 50 and (np.diff(x) > 0).all() and (x == y).all()
    assert subset(np.arange(10), np.arange(10), None, seed=0)[0].tolist() == list(range(10))


def test_a_missing_params_section_is_an_error(tmp_path, data):
    result, out, _ = run_train(tmp_path, data, "mlp", model_params(MLP), "mnist")
    assert result.exit_code == 0
    path = tmp_path / "params.yaml"
    result = CliRunner().invoke(train.app, ["--model", "cnn", "--data", str(data / "mnist100"),
                                            "--out", str(tmp_path / "x.npz"),
                                            "--history", str(tmp_path / "h.csv"),
                                            "--metrics", str(tmp_path / "m.json"),
                                            "--params", str(path)])
    assert result.exit_code == 1 and "no section 'cnn'" in result.output


def test_divergence_is_a_clear_error_and_leaves_no_model(tmp_path, data):
    params = model_params(MLP, optimizer={"name": "sgd", "lr": 1e9, "momentum": 0.9},
                          schedule={"name": "constant"})
    result, out, history = run_train(tmp_path, data, "mlp", params, "mnist")
    assert result.exit_code == 1
    line = [ln for ln in result.output.splitlines() if "error" in ln]
    assert len(line) == 1 and "diverged" in line[0].lower()
    assert not out.exists() and not history.exists()


def test_training_is_deterministic_and_writes_history(tmp_path, data):
    a = run_train(tmp_path / "a", data, "mlp", model_params(MLP), "mnist")
    b = run_train(tmp_path / "b", data, "mlp", model_params(MLP), "mnist")
    assert a[0].exit_code == 0, a[0].output
    assert a[1].read_bytes() == b[1].read_bytes()
    assert a[2].read_bytes() == b[2].read_bytes()
    # not a terminal: no progress bar, one plain line per epoch
    assert "\r" not in a[0].output
    assert len([ln for ln in a[0].output.splitlines() if ": epoch " in ln]) == 2, a[0].output
    history = pd.read_csv(a[2])
    assert list(history.columns) == ["epoch", "loss", "train_acc", "dev_acc", "averaged", "lr"]
    assert list(history["epoch"]) == [1, 2]
    model, info = load(a[1])
    assert info.classes == [str(i) for i in range(10)] and info.input_shape == (28, 28, 1)


def test_the_stage_saves_what_train_model_returns(tmp_path, data):
    result, out, history = run_train(tmp_path, data, "mlp", model_params(MLP), "mnist")
    assert result.exit_code == 0, result.output
    p = validate(TrainParams, model_params(MLP), "mlp")
    trained = train_model(p, *load_split(data / "mnist", "train"),
                          *load_split(data / "mnist", "dev"), name="mlp")
    model, info = load(out, engine="reference")
    assert info.normalization == trained.normalization and info.classes == trained.classes
    assert info.input_shape == trained.input_shape == (28, 28, 1)
    saved, fresh = model.params, trained.net.params
    assert saved.keys() == fresh.keys()
    assert all(np.array_equal(saved[k], fresh[k]) for k in saved)
    assert train.history_csv(trained.history) == history.read_bytes()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("eval")
    outs = {}
    for name, layers, dataset in (("mlp", MLP, "mnist"), ("cnn", CNN, "mnist100")):
        result, model, history = run_train(tmp, data, name, model_params(layers), dataset)
        assert result.exit_code == 0, result.output
        out = tmp / "reports" / name
        result = CliRunner().invoke(evaluate.app, ["--model", str(model), "--data",
                                                   str(data / dataset), "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs[name] = out
    return tmp, outs


def test_evaluate_writes_every_report_in_its_format(evaluated):
    _, outs = evaluated
    for name, k, width in (("mlp", 10, 1), ("cnn", 100, 2)):
        out = outs[name]
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics) == {"accuracy", "loss", "macro_f1", "samples", "params", "tta_views"}
        tta = read_yaml(Path(__file__).resolve().parents[1] / "params.yaml")["evaluate"]
        views = ((2 * tta["tta_shift"] + 1) ** 2 * (3 if tta["tta_rotate"] else 1)
                 * (3 if tta["tta_scale"] else 1))
        assert metrics["tta_views"] == views  # params.yaml's evaluate section
        assert metrics["samples"] == (200 if k == 10 else 300) and 0 <= metrics["accuracy"] <= 1
        per_class = pd.read_csv(out / "per_class.csv", dtype={"class": str})
        assert list(per_class.columns) == ["class", "support", "precision", "recall", "f1"]
        assert len(per_class) == k and per_class["support"].sum() == metrics["samples"]
        confusion = pd.read_csv(out / "confusion.csv", dtype=str)
        assert list(confusion.columns) == ["actual", "predicted"]
        assert len(confusion) == metrics["samples"]
        assert confusion["actual"].str.len().eq(width).all()       # "07", "42": sorts right
        assert sorted(confusion["actual"].unique()) == [f"{i:0{width}d}" for i in range(k)]
        accuracy = (confusion["actual"] == confusion["predicted"]).mean()
        assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
        w, h = png_size(out / "confusion.png")
        assert w >= 10 * k // (1 if k == 10 else 2) and h >= w * 0.8
        png_size(out / "errors.png")
    assert json.loads((outs["mlp"] / "metrics.json").read_text())["accuracy"] > 0.8  # learnable (chance: 0.1)


def test_evaluate_rejects_a_corrupt_model(tmp_path, data):
    bad = tmp_path / "m.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    result = CliRunner().invoke(evaluate.app, ["--model", str(bad), "--data", str(data / "mnist"),
                                               "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and str(bad) in result.output
    assert not (tmp_path / "r").exists()


def test_report_page_lists_both_models(evaluated, data):
    tmp, outs = evaluated
    params = tmp / "p.yaml"
    params.write_text(json.dumps({"mlp": {**model_params(MLP), "rotate": 8, "scale": 0.08,
                                          "elastic": 15, "elastic_sigma": 4},
                                  "cnn": {**model_params(CNN), "ema": 0.999, "early_stopping_patience": 2}}))
    page = tmp / "reports" / "README.md"
    result = CliRunner().invoke(report.app, [
        "--data", str(data), "--reports", str(tmp / "reports"), "--out", str(page),
        "--params", str(params), "--mlp", "mnist", "--cnn", "mnist100"])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    for needle in ("| mlp | mnist |", "| cnn | mnist100 |", "## Hardest classes",
                   "(mlp/confusion.png)", "(cnn/errors.png)", "| mnist100 | 300 | 300 | 300 |",
                   "shift augmentation ±1 px, then warps: rotate ±8°, scale ±8%, elastic 15 (σ 4 px)\n"):
        assert needle in text
    assert text.count("then warps") == 1  # the CNN's params have none
    assert ("±1 px; dev scored with a moving average of the weights (decay 0.999); the best dev "
            "epoch kept (patience 2)\n") in text
    assert text.count("moving average") == 1


TIMING = re.compile(r"second|time|elapsed|duration|date|host", re.IGNORECASE)


def test_tracked_outputs_hold_no_wall_clock_time(evaluated, data, tmp_path):
    """What DVC and git track is the same on every run: no timing field, byte-identical reruns."""
    tmp, outs = evaluated
    for name, dataset in (("mlp", "mnist"), ("cnn", "mnist100")):
        history = pd.read_csv(tmp / "reports" / name / "history.csv")
        assert not [c for c in history.columns if TIMING.search(c)], list(history.columns)
        metrics = json.loads((outs[name] / "metrics.json").read_text())
        assert not [k for k in metrics if TIMING.search(k)], metrics
        again = tmp_path / name
        result = CliRunner().invoke(evaluate.app, ["--model", str(tmp / "models" / f"{name}.npz"),
                                                   "--data", str(data / dataset),
                                                   "--out", str(again)])
        assert result.exit_code == 0, result.output
        for f in again.iterdir():
            assert f.read_bytes() == (outs[name] / f.name).read_bytes(), (name, f.name)
    params = tmp_path / "p.yaml"
    params.write_text(json.dumps({"mlp": model_params(MLP), "cnn": model_params(CNN)}))
    pages = [tmp_path / "a.md", tmp_path / "b.md"]
    for page in pages:
        result = CliRunner().invoke(report.app, [
            "--data", str(data), "--reports", str(tmp / "reports"), "--out", str(page),
            "--params", str(params), "--mlp", "mnist", "--cnn", "mnist100"])
        assert result.exit_code == 0, result.output
    assert pages[0].read_bytes() == pages[1].read_bytes()
    results = pages[0].read_text().split("## Params")[0]  # the params part may say "warmup"
    assert "| mlp | mnist |" in results and not TIMING.search(results)


@pytest.mark.parametrize("models, message", [
    ([], "expected --<model> <dataset> pairs, got none"),
    (["--mlp"], "expected --<model> <dataset> pairs, got --mlp"),
    (["mlp", "mnist"], "expected --<model> <dataset>, got mlp mnist"),
])
def test_report_needs_model_dataset_pairs(tmp_path, data, models, message):
    page = tmp_path / "README.md"
    result = CliRunner().invoke(report.app, ["--data", str(data), "--reports", str(tmp_path),
                                             "--out", str(page), *models])
    assert result.exit_code == 1
    assert f"report: error: {message}" in result.output and not page.exists()


def test_the_normalization_from_pixel_counts_is_numpys_mean_and_std():
    """normalization_of counts the 256 values of uint8 images (a chunk of 2^22 pixels at a time)
    instead of numpy's float64 passes over every pixel: the same numbers."""
    from nn.mnist.training import normalization_of

    images = np.random.default_rng(0).integers(0, 256, (5_400, 28, 28), dtype=np.uint8)  # 2 chunks
    images[:2_000] //= 7  # a skewed histogram, as MNIST's
    norm = normalization_of(images, "train.npz")
    expected = {"mean": images.mean(dtype=np.float64) / 255, "std": images.std(dtype=np.float64) / 255}
    assert norm["mean"] == pytest.approx(expected["mean"], rel=1e-12)
    assert norm["std"] == pytest.approx(expected["std"], rel=1e-12)
    with pytest.raises(ValueError, match="every training image pixel is the same"):
        normalization_of(np.full((3, 4, 4), 9, np.uint8), "train.npz")


@pytest.mark.slow
def test_dvclive_logs_each_epoch_and_a_failed_run_leaves_no_log(tmp_path, data, monkeypatch):
    """--live: DVCLive's metrics.json (the last epoch, its step) and a row per epoch, numbered
    as history.csv's; a run that fails removes them with its other outputs."""
    monkeypatch.chdir(tmp_path)  # outside any git or DVC repository
    live = tmp_path / "dvclive" / "mlp"
    result, out, history = run_train(tmp_path, data, "mlp", model_params(MLP, epochs=3), "mnist",
                                     "--live", str(live))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(history)
    last = json.loads((live / "metrics.json").read_text())
    assert last["step"] == 3 and last["dev_acc"] == pytest.approx(table["dev_acc"].iloc[-1], rel=1e-5)
    rows = pd.read_csv(live / "plots" / "metrics" / "loss.tsv", sep="\t")
    assert rows["step"].tolist() == table["epoch"].tolist() == [1, 2, 3]

    params = model_params(MLP, optimizer={"name": "sgd", "lr": 1e9, "momentum": 0.9},
                          schedule={"name": "constant"})
    result, out, history = run_train(tmp_path, data, "mlp", params, "mnist", "--live", str(live))
    assert result.exit_code == 1 and "diverged" in result.output
    assert not live.exists()  # DVCLive empties it as a run starts; the failed run's log goes
    assert out.exists()  # the stage's other outputs stay as they were (DVC removes them first)


def evaluate_mlp_with(evaluate_section: str, evaluated, data, tmp_path):
    """The evaluate stage on the fixture's MLP with this evaluate section -> (model path,
    metrics.json, the stage's output)."""
    tmp, _ = evaluated
    params = tmp_path / "params.yaml"
    params.write_text('{"evaluate": %s}' % evaluate_section)
    model = tmp / "models" / "mlp.npz"
    result = CliRunner().invoke(evaluate.app, ["--model", str(model), "--data", str(data / "mnist"),
                                               "--out", str(tmp_path / "out"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    return model, json.loads((tmp_path / "out" / "metrics.json").read_text()), result.output


def test_test_time_augmentation_scores_the_mean_of_the_shifted_copies(evaluated, data, tmp_path):
    """evaluate.tta_shift: 1 scores each image as the mean of its 9 copies moved by up to 1 px;
    the stage's accuracy is that of those mean probabilities, computed here by hand."""
    from nn.mnist.modelfile import load, normalize

    model, metrics, output = evaluate_mlp_with('{"tta_shift": 1}', evaluated, data, tmp_path)
    assert metrics["tta_views"] == 9 and "(9 views each" in output
    net, info = load(model)
    test = np.load(data / "mnist" / "test.npz")
    images, labels = test["images"], test["labels"]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    proba = sum(net.predict_proba(normalize(padded[:, 1 - dy:29 - dy, 1 - dx:29 - dx], info.normalization))
                for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    assert metrics["accuracy"] == round(float((proba.argmax(axis=1) == labels).mean()), 6)


def test_rotated_and_scaled_views_are_counted_and_scored_as_predict_proba_scores_them(evaluated, data,
                                                                                       tmp_path):
    """evaluate.tta_rotate / tta_scale add views to each shift: 9 shifts x 3 rotations x 3 sizes,
    and the stage's accuracy is that of nn.mnist.modelfile.predict_proba with the same views."""
    from nn.mnist.modelfile import load, predict_proba

    model, metrics, output = evaluate_mlp_with('{"tta_shift": 1, "tta_rotate": 6, "tta_scale": 0.05}',
                                               evaluated, data, tmp_path)
    assert metrics["tta_views"] == 81 and "(81 views each" in output
    net, info = load(model)
    test = np.load(data / "mnist" / "test.npz")
    proba = predict_proba(net, test["images"], info.normalization, 1, 6, 0.05)
    assert metrics["accuracy"] == round(float((proba.argmax(axis=1) == test["labels"]).mean()), 6)
    plain = predict_proba(net, test["images"], info.normalization, 1)
    assert not np.allclose(proba, plain)  # the warped views count
