"""The exercises' checker (exercises/check.py): it fails every untouched skeleton, passes the
reference layers put in the skeleton's place, and names the gradient a typical mistake breaks."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import nn.layers
import nn.losses

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the exercises live beside nn/, not in the installed package

from exercises.check import EXERCISES, HERE, check, load, main, reference, stubs  # noqa: E402


@pytest.mark.parametrize("name", EXERCISES)
def test_every_check_fails_on_the_skeleton_and_passes_with_the_reference(name):
    skeleton = HERE / f"{name}.py"
    results = check(name, load(skeleton))
    assert results and not any(r.ok for r in results), [str(r) for r in results]
    assert "is still a stub" in results[0].line, results[0]
    assert stubs(skeleton), "the skeleton has no function left to write"
    answers = check(name, reference(name))
    assert len(answers) == len(results)  # the same checks, all passing
    assert all(r.ok for r in answers), [str(r) for r in answers if not r.ok]


def _lines(results):
    return {r.what: r for r in results}


class TransposedWeightGradient(nn.layers.Linear):
    def backward(self, dout):
        x = self.cache
        self.grads["W"] = dout.T @ x                    # (out, in): the transpose of dW
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T


class WrongSumAxis(nn.layers.Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = dout.sum(axis=1)              # over the features, not the batch
        return dx


class TransposedSquare(nn.layers.Conv2d):
    """A 1x1 convolution with C_in = C_out: a transposed dW has the right shape, wrong values."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"].transpose(0, 1, 3, 2)
        return dx


def missing_one_over_n(logits, labels):
    loss, dlogits = nn.losses.softmax_cross_entropy(logits, labels)
    return loss, dlogits * len(logits)                  # the gradient of the sum, not the mean


def test_a_transposed_weight_gradient_is_named():
    r = _lines(check("linear", SimpleNamespace(Linear=TransposedWeightGradient)))
    assert r["forward"].ok and r["dx"].ok and r["db"].ok
    assert not r["dW"].ok and "has shape (3, 5), expected (5, 3): transposed" in r["dW"].line


def test_a_transposed_square_weight_gradient_is_named():
    from exercises.check import check_layer
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4))
    ref = nn.layers.Conv2d(4, 4, 1, rng=np.random.default_rng(1), dtype=np.float64)
    ours = TransposedSquare(4, 4, 1, rng=np.random.default_rng(1), dtype=np.float64)
    r = _lines(check_layer(ours, ref, x, {"forward": "", "x": "", "W": "dW = colsᵀ · dout", "b": ""}))
    assert r["dx"].ok and not r["dW"].ok
    assert "dW = colsᵀ · dout" in r["dW"].line


def test_a_sum_over_the_wrong_axis_is_named():
    r = _lines(check("linear", SimpleNamespace(Linear=WrongSumAxis)))
    assert r["dW"].ok and not r["db"].ok
    assert "self.grads['b'] has shape (4,), expected (3,): a sum over the wrong axis" in r["db"].line


def test_a_missing_one_over_n_is_named():
    r = _lines(check("softmax_cross_entropy", SimpleNamespace(softmax_cross_entropy=missing_one_over_n)))
    assert r["loss"].ok and not r["dlogits"].ok
    assert "5 times too large, exactly the batch size" in r["dlogits"].line
    assert "1/N" in r["dlogits"].line


class ForgetsTheMeanPath(nn.layers.BatchNorm2d):
    def backward(self, dout):
        dx = super().backward(dout)
        x_hat, inv_std = self.cache
        g = dout.reshape(x_hat.shape) * self.params["gamma"]
        return (dx + inv_std * g.mean(axis=0)).reshape(dout.shape)   # the path through μ left out


def test_a_wrong_batchnorm_dx_names_dx_and_the_usual_cause():
    r = _lines(check("batchnorm", SimpleNamespace(BatchNorm2d=ForgetsTheMeanPath)))
    assert r["forward"].ok and r["dgamma"].ok and r["dbeta"].ok and not r["dx"].ok
    assert "the paths through the mean and the variance" in r["dx"].line


class Raises(nn.layers.ReLU):
    def backward(self, dout):
        return dout * self.cache[5]


class WrongShape(nn.layers.ReLU):
    def forward(self, x, training):
        return super().forward(x, training)[:, :3]


class NaNs(nn.layers.ReLU):
    def backward(self, dout):
        return dout * np.nan


@pytest.mark.parametrize("cls, what, message", [
    (Raises, "dx", "Raises.backward (test_exercises.py:"),
    (WrongShape, "forward", "forward's output has shape (4, 3), expected (4, 6)"),
    (NaNs, "dx", "backward's dx holds NaN or inf (24 of 24 values)"),
])
def test_a_version_that_raises_or_returns_a_wrong_shape_or_nan_gets_one_line(cls, what, message):
    r = _lines(check("relu", SimpleNamespace(ReLU=cls)))
    assert not r[what].ok and message in r[what].line and "\n" not in r[what].line, r[what]


class LoopConv2d(nn.layers.Conv2d):
    """A learner's answer to conv2d_loops, not the reference: loops over pixels and channels."""
    def forward(self, x, training):
        t, b_, l, r = self.pads
        xp = np.pad(x, ((0, 0), (t, b_), (l, r), (0, 0)))
        W, b = self.params["W"], self.params["b"]
        kh, kw, cin, cout = W.shape
        n, hp, wp, _ = xp.shape
        ho, wo = (hp - kh) // self.sh + 1, (wp - kw) // self.sw + 1
        out = np.zeros((n, ho, wo, cout))
        for i in range(ho):
            for j in range(wo):
                win = xp[:, i * self.sh:i * self.sh + kh, j * self.sw:j * self.sw + kw, :]
                for o in range(cout):
                    out[:, i, j, o] = (win * W[:, :, :, o]).sum(axis=(1, 2, 3)) + b[o]
        self.cache = (x.shape, xp)
        return out

    def backward(self, dout):
        x_shape, xp = self.cache
        W = self.params["W"]
        kh, kw, cin, cout = W.shape
        dW, dxp = np.zeros_like(W), np.zeros_like(xp)
        n, ho, wo, _ = dout.shape
        for i in range(ho):
            for j in range(wo):
                si, sj = i * self.sh, j * self.sw
                win = xp[:, si:si + kh, sj:sj + kw, :]
                for o in range(cout):
                    g = dout[:, i, j, o][:, None, None, None]
                    dW[:, :, :, o] += (win * g).sum(axis=0)
                    dxp[:, si:si + kh, sj:sj + kw, :] += W[:, :, :, o] * g
        self.grads["W"] = dW
        self.grads["b"] = dout.sum(axis=(0, 1, 2))
        t, b_, l, r = self.pads
        return dxp[:, t:t + x_shape[1], l:l + x_shape[2]]


class OverwritingLoopConv2d(LoopConv2d):
    def backward(self, dout):
        dx = super().backward(dout)
        x_shape, xp = self.cache
        kh, kw = self.params["W"].shape[:2]
        dxp = np.zeros_like(xp)
        for i in range(dout.shape[1]):
            for j in range(dout.shape[2]):
                si, sj = i * self.sh, j * self.sw
                for o in range(dout.shape[3]):
                    g = dout[:, i, j, o][:, None, None, None]
                    dxp[:, si:si + kh, sj:sj + kw, :] = self.params["W"][:, :, :, o] * g  # = not +=
        t, _, left, _ = self.pads
        return dxp[:, t:t + x_shape[1], left:left + x_shape[2]] + 0 * dx


def test_a_loop_answer_passes_and_overwriting_instead_of_adding_fails_dx():
    assert all(r.ok for r in check("conv2d_loops", SimpleNamespace(Conv2d=LoopConv2d)))
    r = _lines(check("conv2d_loops", SimpleNamespace(Conv2d=OverwritingLoopConv2d)))
    bad = [w for w, res in r.items() if not res.ok]
    assert bad == ["stride 1, padding 1: dx", "stride 2: dx"], bad
    assert "add, do not overwrite" in r["stride 2: dx"].line


def test_adam_without_bias_correction_fails_at_the_first_step():
    class NoBiasCorrection(nn.optim.Adam):
        def _update(self, name, p, g, state):
            state.setdefault("m", np.zeros_like(p))
            state.setdefault("v", np.zeros_like(p))
            b1, b2 = self.betas
            state["m"] = b1 * state["m"] + (1 - b1) * g
            state["v"] = b2 * state["v"] + (1 - b2) * g * g
            p -= self.lr * state["m"] / (np.sqrt(state["v"]) + self.eps)

    r = check("adam", SimpleNamespace(Adam=NoBiasCorrection))
    assert not r[0].ok and r[0].what == "step 1" and "1 - b1**t" in r[0].line


def test_the_command_prints_one_line_per_check_and_its_exit_code(tmp_path, capsys):
    assert main(["check", "linear"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "still stubs in linear.py: Linear.forward, Linear.backward"
    assert out[-1] == "linear: 0 of 4 checks pass"
    answer = tmp_path / "linear.py"
    answer.write_text("from nn.layers import Linear\n")
    assert main(["check", "linear", str(answer)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "linear: 4 of 4 checks pass. Well done."
    broken = tmp_path / "broken.py"
    broken.write_text("def softmax_cross_entropy(:\n")
    assert main(["check", "softmax_cross_entropy", str(broken)]) == 1
    assert capsys.readouterr().out == "FAIL  broken.py does not import: invalid syntax (line 1)\n"
    assert main(["check", "conv3d"]) == 2
    assert "no exercise 'conv3d'" in capsys.readouterr().err


def test_python_dash_m_exercises_runs_from_the_repository_root():
    proc = subprocess.run([sys.executable, "-m", "exercises", "check", "relu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "ReLU.forward (relu.py:" in proc.stdout and "is still a stub" in proc.stdout
