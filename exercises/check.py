"""Grade a learner's exercise against the reference layers: `python -m exercises check NAME`.

Each exercise (a file of this folder, see exercises/README.md) is checked in order: the shapes,
the forward pass against the reference in nn/ (the answer key), then every gradient against
centred finite differences of the learner's own forward, in float64. A failed check prints one
line with a hint: which output or gradient, by how much, and the usual cause. A function still
left as written (`raise NotImplementedError`) is named as a stub; a version that raises,
returns the wrong shape or NaN gets one line naming it, not a traceback.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np

import nn.layers as ref_layers
import nn.losses as ref_losses
import nn.optim as ref_optim
from nn.gradcheck import numerical_gradient, rel_error

HERE = Path(__file__).resolve().parent
TOL = 1e-6  # a correct float64 gradient agrees to ~1e-9; a wrong one is off by ~1e-1 or more


@dataclass
class Result:
    ok: bool
    what: str   # the check: "forward", "dW", "stride 2: dx", ...
    line: str   # one line: the measure when it passed, the hint when it failed

    def __str__(self):
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.line}"


class Failed(Exception):
    """A learner's function could not be checked further; the message is the one line."""


def _call(fn, *args):
    """fn(*args), turning a stub or an exception into one line naming the function."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise Failed(f"{_where(sys.exc_info()[2])} is still a stub: write its body") from None
    except Exception as e:  # a learner's bug: one line with where it happened, not a traceback
        raise Failed(f"{_where(sys.exc_info()[2])} raised {type(e).__name__}: {e}") from None


def _where(tb) -> str:
    """The learner's function (and line) where an exception came from: the last frame in exercises/."""
    library = [Path(np.__file__).parent, Path(ref_layers.__file__).parent, HERE / "check.py"]
    frames = [f for f in traceback.extract_tb(tb)
              if not any(Path(f.filename).resolve().is_relative_to(d) for d in library)]
    frame = frames[-1] if frames else traceback.extract_tb(tb)[-1]
    name = getattr(frame, "name", "?")
    qual = _qualname(tb, frame) or name
    return f"{qual} ({Path(frame.filename).name}:{frame.lineno})"


def _qualname(tb, frame) -> str | None:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == frame.filename and tb.tb_lineno == frame.lineno:
            return tb.tb_frame.f_code.co_qualname
        tb = tb.tb_next
    return None


def _array(name: str, value, shape: tuple) -> np.ndarray:
    """The learner's output as an array of the expected shape, without NaN, or Failed."""
    if not isinstance(value, np.ndarray) and not np.isscalar(value):
        raise Failed(f"{name} is a {type(value).__name__}, expected an array of shape {shape}")
    value = np.asarray(value)
    if value.shape != shape:
        raise Failed(f"{name} has shape {value.shape}, expected {shape}{_shape_cause(value.shape, shape)}")
    if not np.all(np.isfinite(value)):
        raise Failed(f"{name} holds NaN or inf ({int(np.sum(~np.isfinite(value)))} of {value.size} values)")
    return value


def _shape_cause(got: tuple, want: tuple) -> str:
    if len(got) == len(want) == 2 and got == want[::-1]:
        return ": transposed (swap the operands of the product, or transpose the other one)"
    if len(got) != len(want) or np.prod(got) != np.prod(want):
        return ": a sum over the wrong axis, or a missing reshape?"
    return ": a missing reshape?"


def _compare(name: str, got: np.ndarray, want: np.ndarray, cause: str, *, batch: int) -> Result:
    """got against want (the reference, or finite differences), with a diagnosis when they differ."""
    err = rel_error(got, want)
    if err < TOL:
        return Result(True, name, f"relative error {err:.1e}")
    how = f"relative error {err:.2g}"
    flat_w = want.reshape(-1)
    scale = float(got.reshape(-1) @ flat_w / (flat_w @ flat_w)) if flat_w.any() else 0.0
    if flat_w.any() and rel_error(got, scale * want) < 1e-6:
        if batch > 1 and abs(scale - batch) < 1e-6 * batch:
            return Result(False, name, f"{how}: {batch} times too large, exactly the batch size: the loss "
                                       f"is a mean over the batch, so it and its gradient carry a 1/N "
                                       f"(N = {batch})")
        if batch > 1 and abs(scale * batch - 1) < 1e-6:
            return Result(False, name, f"{how}: {batch} times too small: divided by N = {batch} once too often")
        if abs(scale + 1) < 1e-6:
            return Result(False, name, f"{how}: the sign is flipped")
        return Result(False, name, f"{how}: {scale:.4g} times the right gradient; {cause}")
    if got.ndim == 2 and got.shape[0] == got.shape[1] and rel_error(got, want.T) < 1e-6:
        return Result(False, name, f"{how}: it is the right gradient transposed; {cause}")
    i = np.unravel_index(int(np.argmax(np.abs(got - want))), got.shape)
    return Result(False, name, f"{how}, worst at index {tuple(int(k) for k in i)} "
                               f"({got[i]:.4g}, expected {want[i]:.4g}); {cause}")


# ------------------------------------------------------------------------------- layer checks

def check_layer(ours, ref, x: np.ndarray, causes: dict[str, str], *, prefix: str = "",
                before_forward=None) -> list[Result]:
    """Forward against `ref` (same parameters), then dx and every parameter's gradient against
    finite differences of `ours`. `causes` names the usual mistake behind each wrong result."""
    for k, p in ref.params.items():  # the same parameters: the learner's layer may build its own
        ours.params[k] = p.copy()
    for k, b in ref.buffers.items():
        ours.buffers[k] = b.copy()
    names = ["forward", "x", *ref.params]
    label = {n: prefix + (n if n == "forward" else f"d{n}") for n in names}
    results = []

    def fail_rest(start: int, why: str):
        results.extend(Result(False, label[n], why) for n in names[start:])
        return results

    if before_forward:
        before_forward(ref)
    want = ref.forward(x.copy(), True)
    try:
        if before_forward:
            before_forward(ours)
        out = _array("forward's output", _call(ours.forward, x.copy(), True), want.shape)
    except Failed as e:
        results.append(Result(False, label["forward"], str(e)))
        return fail_rest(1, "not checked: the forward pass fails first")
    results.append(_compare(label["forward"], out, want, causes["forward"], batch=len(x)))
    if not results[-1].ok:
        return fail_rest(1, "not checked: the forward pass is wrong first")

    r = np.random.default_rng(1).standard_normal(want.shape)
    try:
        dx = _array("backward's dx", _call(ours.backward, r), x.shape)
    except Failed as e:
        return fail_rest(1, str(e))
    grads = {}
    for n in ref.params:
        got = ours.grads.get(n)
        try:
            if got is None:
                raise Failed(f"backward left self.grads[{n!r}] unset")
            grads[n] = _array(f"self.grads[{n!r}]", got, ref.params[n].shape).copy()
        except Failed as e:
            grads[n] = e

    xs = x.copy()

    def loss():
        if before_forward:
            before_forward(ours)
        return float(np.sum(ours.forward(xs, True) * r))

    results.append(_compare(label["x"], dx, numerical_gradient(loss, xs), causes["x"], batch=len(x)))
    for n in ref.params:
        if isinstance(grads[n], Failed):
            results.append(Result(False, label[n], str(grads[n])))
        else:
            num = numerical_gradient(loss, ours.params[n])
            results.append(_compare(label[n], grads[n], num, causes[n], batch=len(x)))
    return results


def _rng(seed=0):
    return np.random.default_rng(seed)


def check_linear(m) -> list[Result]:
    x = _rng().standard_normal((4, 5))
    causes = {"forward": "y = x @ W + b, with W of shape (in, out)",
              "x": "dx = dout @ W.T: (N, out) @ (out, in)",
              "W": "dW = x.T @ dout: (in, N) @ (N, out)",
              "b": "db = dout summed over the batch axis (axis=0)"}
    ref = ref_layers.Linear(5, 3, rng=_rng(1), dtype=np.float64)
    return check_layer(_build(m.Linear, 5, 3, rng=_rng(1), dtype=np.float64), ref, x, causes)


def check_relu(m) -> list[Result]:
    x = _rng().standard_normal((4, 6))
    causes = {"forward": "max(x, 0), element by element",
              "x": "dx = dout where the input was > 0, else 0 (the gate is the forward's, not dout's)"}
    return check_layer(_build(m.ReLU), ref_layers.ReLU(), x, causes)


CONV_CAUSES = {
    "forward": "out[n, i, j, o] = b[o] + sum over (a, c, k) of x_pad[n, i*s + a, j*s + c, k] * W[a, c, k, o]",
    "x": "each input pixel collects dout * W from every window it was in (add, do not overwrite; "
         "un-pad at the end)",
    "W": "dW[a, c, k, o] = sum over (n, i, j) of x_pad[n, i*s + a, j*s + c, k] * dout[n, i, j, o]",
    "b": "db = dout summed over every axis but the channels (N, H_out, W_out)"}


def check_conv(m) -> list[Result]:
    results = []
    for prefix, kw in (("stride 1, padding 1: ", {"stride": 1, "padding": 1}),
                       ("stride 2: ", {"stride": 2, "padding": 0})):
        x = _rng().standard_normal((2, 5, 5, 3))
        ref = ref_layers.Conv2d(3, 2, 3, **kw, rng=_rng(1), dtype=np.float64)
        ours = _build(m.Conv2d, 3, 2, 3, **kw, rng=_rng(1), dtype=np.float64)
        results += check_layer(ours, ref, x, CONV_CAUSES, prefix=prefix)
    return results


def check_conv_im2col(m) -> list[Result]:
    x_pad = _rng().standard_normal((2, 6, 7, 3))
    results = []
    for kh, kw, s in ((3, 3, 1), (2, 3, 2)):
        what = f"im2col {kh}x{kw} stride {s}"
        want = ref_layers.im2col(x_pad, kh, kw, s, s)
        try:
            got = _array("im2col's output", _call(m.im2col, x_pad, kh, kw, s, s), want.shape)
            results.append(_compare(what, got, want, "window (i, j) starts at row i*stride, column "
                                    "j*stride; the axes are (N, H_out, W_out, kh, kw, C)", batch=1))
        except Failed as e:
            results.append(Result(False, what, str(e)))
        what = f"col2im {kh}x{kw} stride {s}"
        d = _rng(2).standard_normal(want.shape)
        pads = (1, 0, 0, 1)
        x_shape = (2, 6 - 1, 7 - 1, 3)
        want_dx = ref_layers.col2im(d, x_shape, pads, s, s)
        try:
            got = _array("col2im's output", _call(m.col2im, d, x_shape, pads, s, s), x_shape)
            results.append(_compare(what, got, want_dx, "add (+=) each window's gradient where it "
                                    "came from, then cut the padding off", batch=1))
        except Failed as e:
            results.append(Result(False, what, str(e)))
    return results + check_conv(m)


def check_maxpool(m) -> list[Result]:
    results = []
    causes = {"forward": "the maximum of each kernel x kernel window, window (i, j) at (i*s, j*s)",
              "x": "the whole dout of a window goes to the position of its maximum, 0 elsewhere; "
                   "overlapping windows add"}
    for prefix, k, s in (("2x2 stride 2: ", 2, 2), ("3x3 stride 2, overlapping: ", 3, 2)):
        x = _rng().permutation(2 * 5 * 5 * 3).reshape(2, 5, 5, 3) / 10.0  # distinct values, no ties
        results += check_layer(_build(m.MaxPool2d, k, s), ref_layers.MaxPool2d(k, s), x, causes,
                               prefix=prefix)
    what = "ties go to the first maximum"
    x = np.zeros((1, 4, 4, 1))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0                                   # a tie in window (0, 0)
    ref = ref_layers.MaxPool2d(2)
    ref.forward(x, True)
    dout = np.ones((1, 2, 2, 1))
    want = ref.backward(dout)
    try:
        ours = _build(m.MaxPool2d, 2)
        _call(ours.forward, x.copy(), True)
        got = _array("backward's dx", _call(ours.backward, dout), x.shape)
        results.append(_compare(what, got, want, "with several maxima, only the first in row-major "
                                "order gets the gradient (argmax does that)", batch=1))
    except Failed as e:
        results.append(Result(False, what, str(e)))
    return results


def check_batchnorm(m) -> list[Result]:
    x = 2 + 3 * _rng().standard_normal((4, 3, 2, 5))
    causes = {"forward": "x̂ = (x - mean) / sqrt(var + eps) per channel over N, H, W (the biased "
                         "variance); y = gamma * x̂ + beta",
              "x": "dx = (1/σ)(g - mean(g) - x̂ mean(g x̂)) with g = gamma * dout: the paths through "
                   "the mean and the variance are easy to forget",
              "gamma": "dgamma = (dout * x̂) summed over every axis but the channels",
              "beta": "dbeta = dout summed over every axis but the channels"}
    ref = ref_layers.BatchNorm2d(5, dtype=np.float64)
    g = _rng(3)
    ref.params["gamma"][...] = 1 + 0.5 * g.standard_normal(5)
    ref.params["beta"][...] = g.standard_normal(5)
    ours = _build(m.BatchNorm2d, 5, dtype=np.float64)
    results = check_layer(ours, ref, x, causes)
    what = "running statistics and inference"
    if not results[0].ok:
        return results + [Result(False, what, "not checked: the forward pass fails first")]
    ref2, ours2 = ref_layers.BatchNorm2d(5, dtype=np.float64), _build(m.BatchNorm2d, 5, dtype=np.float64)
    try:
        for _ in range(2):
            ref2.forward(x, True)
            _call(ours2.forward, x.copy(), True)
        for k in ("running_mean", "running_var"):
            r = _compare(f"{what}: {k}", np.asarray(ours2.buffers[k]), ref2.buffers[k],
                         "running = (1 - momentum) * running + momentum * batch statistic, the "
                         "variance unbiased: self._update_running(mean, var, m) does it", batch=1)
            if not r.ok:
                return results + [r]
        want = ref2.forward(x + 1, False)
        got = _array("the inference output", _call(ours2.forward, x + 1, False), want.shape)
        results.append(_compare(what, got, want, "with training=False normalise with the running "
                                "statistics, not the batch's", batch=1))
    except Failed as e:
        results.append(Result(False, what, str(e)))
    return results


def check_dropout(m) -> list[Result]:
    results = []
    p = 0.3
    x = 1 + _rng().random((200, 50))
    what = "inference is the identity"
    try:
        ours = _build(m.Dropout, p, rng=_rng(5))
    except Failed as e:
        return [Result(False, w, str(e)) for w in (what, "training", "dx")]
    try:
        got = _array("the inference output", _call(ours.forward, x.copy(), False), x.shape)
        results.append(_compare(what, got, x, "with training=False return x unchanged", batch=1))
    except Failed as e:
        results.append(Result(False, what, str(e)))
    what = "training"
    try:
        out = _array("the training output", _call(ours.forward, x.copy(), True), x.shape)
        kept = out != 0
        if not np.allclose(out[kept], x[kept] / (1 - p)):
            scale = float(np.median(out[kept] / x[kept]))
            results.append(Result(False, what, f"kept values are {scale:.4g} x, expected "
                                  f"{1 / (1 - p):.4g} x: inverted dropout scales by 1 / (1 - p)"))
        elif abs((1 - kept.mean()) - p) > 4 * np.sqrt(p * (1 - p) / x.size):
            results.append(Result(False, what, f"{1 - kept.mean():.3f} of the values are zero, "
                                  f"expected about p = {p}: keep where rng.random(x.shape) >= p"))
        else:
            results.append(Result(True, what, f"each output 0 or x / (1 - p), {1 - kept.mean():.3f} dropped, p = {p}"))
    except Failed as e:
        results.append(Result(False, what, str(e)))
    # the mask is the learner's own draw: dx is checked against finite differences of its forward,
    # reseeded before every evaluation so that each one draws the same mask
    def reseed(layer):
        layer.rng = _rng(7)

    if not results[-1].ok:
        return results + [Result(False, "dx", "not checked: the training forward fails first")]
    return results + [_check_dropout_dx(ours, 1 + _rng().random((4, 6)), reseed)]


def _check_dropout_dx(ours, x, reseed) -> Result:
    reseed(ours)
    out = ours.forward(x.copy(), True)
    r = _rng(1).standard_normal(out.shape)
    try:
        dx = _array("backward's dx", _call(ours.backward, r), x.shape)
    except Failed as e:
        return Result(False, "dx", str(e))
    xs = x.copy()

    def loss():
        reseed(ours)
        return float(np.sum(ours.forward(xs, True) * r))

    return _compare("dx", dx, numerical_gradient(loss, xs), "dx = dout * the forward's mask", batch=len(x))


def check_softmax_cross_entropy(m) -> list[Result]:
    results = []
    logits = 2 * _rng().standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    n = len(logits)
    ref_loss, _ = ref_losses.softmax_cross_entropy(logits, labels)
    try:
        out = _call(m.softmax_cross_entropy, logits.copy(), labels)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise Failed("softmax_cross_entropy must return (loss, dlogits)")
        loss = float(_array("the loss", np.asarray(out[0], dtype=np.float64), ()))
        dlogits = _array("dlogits", out[1], logits.shape)
    except Failed as e:
        return [Result(False, w, str(e) if i == 0 else "not checked: the loss fails first")
                for i, w in enumerate(("loss", "large logits", "dlogits"))]
    results.append(_compare("loss", np.array(loss), np.array(ref_loss),
                            "the mean over the batch of -log softmax(logits)[label]", batch=n))
    big = logits + np.array([[1000.0], [-1000.0], [0], [500], [0]])
    want, _ = ref_losses.softmax_cross_entropy(big, labels)
    try:
        got = float(_array("the loss of large logits", np.asarray(_call(m.softmax_cross_entropy, big, labels)[0],
                                                                   dtype=np.float64), ()))
        results.append(_compare("large logits", np.array(got), np.array(want), "", batch=n))
    except Failed as e:
        results.append(Result(False, "large logits", f"{e}: subtract each row's maximum before exp "
                                                     f"(log-sum-exp)"))
    if not results[0].ok:
        return results + [Result(False, "dlogits", "not checked: the loss is wrong first")]
    x = logits.copy()
    num = numerical_gradient(lambda: float(m.softmax_cross_entropy(x, labels)[0]), x)
    results.append(_compare("dlogits", dlogits, num, "dlogits = (softmax(logits) - one_hot(labels)) / N",
                            batch=n))
    return results


def check_adam(m) -> list[Result]:
    g = _rng()
    p0 = g.standard_normal((3, 4))
    grads = [g.standard_normal((3, 4)) for _ in range(3)]
    ref, ref_p = ref_optim.Adam(lr=0.1), {"w": p0.copy()}
    try:
        ours = _build(m.Adam, lr=0.1)
    except Failed as e:
        return [Result(False, f"step {t}", str(e)) for t in (1, 2, 3)]
    our_p = {"w": p0.copy()}
    results = []
    for t, gr in enumerate(grads, 1):
        before = ref_p["w"].copy()
        ref.step(ref_p, {"w": gr.copy()})
        try:
            _call(ours.step, our_p, {"w": gr.copy()})
            got = _array(f"the parameter after step {t}", our_p["w"], p0.shape)
        except Failed as e:
            results += [Result(False, f"step {s}", str(e) if s == t else "not checked: an earlier step fails")
                        for s in range(t, 4)]
            return results
        cause = ("m and v are moving averages of g and g*g updated before the step; "
                 "m_hat = m / (1 - b1**t), v_hat = v / (1 - b2**t) with t counted from 1; "
                 "p -= lr * m_hat / (sqrt(v_hat) + eps)")
        r = _compare(f"step {t}", got - before, ref_p["w"] - before, cause, batch=1)
        results.append(r)
        if not r.ok:
            results += [Result(False, f"step {s}", "not checked: an earlier step fails") for s in range(t + 1, 4)]
            return results
        our_p["w"] = ref_p["w"].copy()
    return results


def _build(cls, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except NotImplementedError:
        raise Failed(f"{_where(sys.exc_info()[2])} is still a stub: write its body") from None
    except Exception as e:
        raise Failed(f"{cls.__name__}(...) raised {type(e).__name__}: {e}") from None


# The exercises in the order of the course: name -> (the file's names the check uses, the check).
EXERCISES = {
    "linear": (("Linear",), check_linear),
    "relu": (("ReLU",), check_relu),
    "softmax_cross_entropy": (("softmax_cross_entropy",), check_softmax_cross_entropy),
    "conv2d_loops": (("Conv2d",), check_conv),
    "conv2d_im2col": (("im2col", "col2im", "Conv2d"), check_conv_im2col),
    "maxpool": (("MaxPool2d",), check_maxpool),
    "batchnorm": (("BatchNorm2d",), check_batchnorm),
    "dropout": (("Dropout",), check_dropout),
    "adam": (("Adam",), check_adam),
}


def reference(name: str) -> SimpleNamespace:
    """The answer key: the library's own objects under the names the exercise's file defines."""
    lib = {"Linear": ref_layers.Linear, "ReLU": ref_layers.ReLU, "Conv2d": ref_layers.Conv2d,
           "im2col": ref_layers.im2col, "col2im": ref_layers.col2im,
           "MaxPool2d": ref_layers.MaxPool2d, "BatchNorm2d": ref_layers.BatchNorm2d,
           "Dropout": ref_layers.Dropout, "Adam": ref_optim.Adam,
           "softmax_cross_entropy": ref_losses.softmax_cross_entropy}
    return SimpleNamespace(**{n: lib[n] for n in EXERCISES[name][0]})


def check(name: str, module) -> list[Result]:
    """Every check of exercise `name` on `module` (the learner's file, or `reference(name)`)."""
    names, fn = EXERCISES[name]
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        return [Result(False, "file", f"defines no {', '.join(missing)}")]
    try:
        with np.errstate(all="ignore"):  # an overflow shows in the result's line, not as a warning
            return fn(module)
    except Failed as e:  # a constructor that raises, before any check began
        return [Result(False, "setup", str(e))]


def stubs(path: Path) -> list[str]:
    """The functions of a file whose body (after its docstring) is only `raise NotImplementedError`."""
    found = []

    def visit(nodes, prefix):
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef):
                body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
                if (len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None
                        and "NotImplementedError" in ast.unparse(body[0].exc)):
                    found.append(prefix + node.name)

    visit(ast.parse(path.read_text()).body, "")
    return found


def load(path: Path) -> ModuleType:
    """Import a learner's file afresh (not cached: it is being edited); Failed if it does not import."""
    spec = importlib.util.spec_from_file_location(f"exercise_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise Failed(f"{path.name} does not import: {e.msg} (line {e.lineno})") from None
    except Exception as e:
        raise Failed(f"{path.name} does not import: {type(e).__name__}: {e}") from None
    return module


USAGE = "usage: python -m exercises check NAME [FILE]   (NAME: " + ", ".join(EXERCISES) + ")"


def main(argv: list[str]) -> int:
    """0 when every check passes, 1 when one fails, 2 for a wrong command line."""
    if len(argv) not in (2, 3) or argv[0] != "check":
        print(USAGE, file=sys.stderr)
        return 2
    name = argv[1]
    if name not in EXERCISES:
        print(f"error: no exercise {name!r}; there are {', '.join(EXERCISES)}", file=sys.stderr)
        return 2
    path = Path(argv[2]) if len(argv) == 3 else HERE / f"{name}.py"
    if not path.is_file():
        print(f"error: no file {path}", file=sys.stderr)
        return 2
    try:
        results = check(name, load(path))
    except Failed as e:
        print(f"FAIL  {e}")
        return 1
    todo = stubs(path)
    if todo:
        print(f"still stubs in {path.name}: {', '.join(todo)}")
    for r in results:
        print(r)
    passed = sum(r.ok for r in results)
    print(f"{name}: {passed} of {len(results)} checks pass" + ("" if passed < len(results) else ". Well done."))
    return 0 if passed == len(results) else 1
