"""Gradients of Gaussian-smoothed classifiers (univ.repro.smoothing, Kaur et al. 2019) on a tiny digits MLP."""

import torch

from univ.repro.smoothing import smoothed_ascent, smoothed_gradient, smoothed_proba


def test_smoothed_gradient_converges_with_samples(mlp, data):
    x, t = data.x_test[:10], (data.y_test[:10] + 3) % 10
    ref = smoothed_gradient(mlp, x, t, sigma=0.5, n_samples=8192, chunk=512, seed=123).grad

    def err(m):
        return torch.stack([(smoothed_gradient(mlp, x, t, 0.5, n_samples=m, seed=s).grad - ref).norm()
                            for s in range(4)]).mean()

    e16, e256, e2048 = err(16), err(256), err(2048)
    assert e256 < 0.6 * e16
    assert e2048 < 0.6 * e256


def test_smoothed_gradient_chunks_agree_and_sigma0_is_plain(mlp, data):
    x, t = data.x_test[:6], data.y_test[:6]
    a = smoothed_gradient(mlp, x, t, 0.3, n_samples=64, chunk=64, seed=5)
    b = smoothed_gradient(mlp, x, t, 0.3, n_samples=64, chunk=16, seed=5)
    assert torch.allclose(a.log_prob, b.log_prob, atol=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    x_ = x.clone().requires_grad_(True)
    plain, = torch.autograd.grad(torch.log_softmax(mlp(x_), 1).gather(1, t[:, None]).sum(), x_)
    assert torch.allclose(smoothed_gradient(mlp, x, t, 0.0).grad, plain, atol=1e-6)
    p = smoothed_proba(mlp, x, 0.3, n_samples=64, seed=5)
    assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-5)
    assert torch.allclose(p.gather(1, t[:, None])[:, 0].log(), a.log_prob, atol=1e-4)


def test_smoothed_ascent_stays_in_ball_and_raises_target_probability(mlp, data):
    x, t = data.x_test[:8], (data.y_test[:8] + 1) % 10
    x_adv = smoothed_ascent(mlp, x, t, sigma=0.25, eps=1.5, steps=10, n_samples=16, bounds=data.bounds)
    assert bool(((x_adv - x).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all())
    before = smoothed_proba(mlp, x, 0.25, 256).gather(1, t[:, None])
    after = smoothed_proba(mlp, x_adv, 0.25, 256).gather(1, t[:, None])
    assert after.mean() > before.mean() + 0.2
