"""The loss, optimisers and schedules against PyTorch on the same data (skipped without torch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nn.losses import softmax_cross_entropy  # noqa: E402
from nn.optim import SGD, Adam, AdamW, clip_grad_norm  # noqa: E402
from nn.schedules import OneCycle, ReduceLROnPlateau, WarmupCosine  # noqa: E402


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_gradient_match_torch(smoothing, dtype):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(16, 100)) * 4).astype(dtype)
    labels = rng.integers(0, 100, size=16)
    loss, dlogits = softmax_cross_entropy(logits, labels, smoothing)
    t = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=smoothing)
    t_loss.backward()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(t_loss.item(), rel=tol)
    np.testing.assert_allclose(dlogits, t.grad.numpy(), rtol=tol * 10, atol=tol * 1e-2)


def param_set(rng):
    """Float32 weights of a conv, a linear layer, a bias and a BatchNorm gamma."""
    return {"0.W": rng.normal(size=(3, 3, 1, 4)), "0.b": rng.normal(size=4),
            "2.W": rng.normal(size=(6, 5)), "3.gamma": rng.normal(size=5)}


def run_both(make_ours, make_torch, steps=3, clip=None):
    rng = np.random.default_rng(1)
    ours = {k: v.astype(np.float32) for k, v in param_set(rng).items()}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) * 3 for k, v in ours.items()}
             for _ in range(steps)]
    theirs = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in ours.items()}
    decay = [p for k, p in theirs.items() if p.ndim >= 2]        # our weight-decay rule
    no_decay = [p for k, p in theirs.items() if p.ndim < 2]
    t_opt = make_torch([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    opt = make_ours()
    for g in grads:
        g_ours = {k: v.copy() for k, v in g.items()}
        for k, p in theirs.items():
            p.grad = torch.tensor(g[k].copy())
        if clip is not None:
            total = clip_grad_norm(g_ours, clip)
            t_total = torch.nn.utils.clip_grad_norm_(list(theirs.values()), clip)
            assert total == pytest.approx(t_total.item(), rel=1e-5)
        opt.step(ours, g_ours)
        t_opt.step()
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k].detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


def test_three_adam_steps_match_torch():
    run_both(lambda: Adam(lr=0.01, weight_decay=0.05),
             lambda groups: torch.optim.Adam(groups, lr=0.01, weight_decay=0.05))


def test_three_adamw_steps_match_torch():
    run_both(lambda: AdamW(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
             lambda groups: torch.optim.AdamW(groups, lr=0.01, betas=(0.8, 0.99),
                                              weight_decay=0.1))


def test_sgd_nesterov_with_clipping_matches_torch():
    run_both(lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
             lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True,
                                            weight_decay=1e-3),
             steps=4, clip=2.0)


def torch_lrs(make_scheduler, steps, metrics=None):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make_scheduler(opt)
    out = []
    for i in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(*([metrics[i]] if metrics else []))
    return np.array(out)


def test_onecycle_matches_torch():
    ours = [OneCycle(0.1, 50, pct_start=0.25)(s) for s in range(50)]
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=50, pct_start=0.25, cycle_momentum=False), 50)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_cosine_without_warmup_matches_torch():
    ours = [WarmupCosine(0.1, 40, 0, 0.001)(s) for s in range(40)]
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=40, eta_min=0.001), 40)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_plateau_matches_torch():
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.61, 0.6, 0.6, 0.6, 0.6, 0.6]
    s = ReduceLROnPlateau(0.1, patience=1, factor=0.5, cooldown=1)
    ours = [0.1] + [s.step(m) for m in metrics[:-1]]
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode="max", patience=1, factor=0.5, cooldown=1), len(metrics), metrics)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
