import pytest
import torch

import univ
import univ.adversarial as adv
from univ.adversarial import aligned as A


def test_layer_forward_matches_capture(mlp, data):
    x = data.x_test[:20]
    logits, acts = A.layer_forward(mlp, x, "2")
    assert torch.allclose(logits, mlp(x))
    assert torch.allclose(acts, univ.capture(mlp, x, "2", dtype=torch.float64)["2"].float())


@pytest.mark.parametrize("increase", [True, False])
def test_feature_attack_moves_the_feature(mlp, data, increase):
    x = data.x_test[:50]
    _, acts = A.layer_forward(mlp, x, "2")
    j = int(acts.mean(0).argmax())  # a unit that is often on
    v = torch.zeros(acts.shape[1])
    v[j] = 1
    f = A.direction_feature(v)
    x_adv = A.feature_attack(mlp, x, "2", f, increase=increase, eps=0.1, steps=10, bounds=data.bounds)
    _, acts_adv = A.layer_forward(mlp, x_adv, "2")
    change = (acts_adv[:, j] - acts[:, j]).detach()
    assert (change >= -1e-6).all() if increase else (change <= 1e-6).all()
    assert float(change.abs().mean()) > 0.05
    assert float(adv.per_sample_norm(x_adv - x, "inf").max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_steering_and_transfer(mlp, mlp2, data):
    x, y = data.x_test[:100], data.y_test[:100]
    W = mlp[3].weight.detach()  # readout rows: steering along row c raises logit c
    zero = A.steer(mlp, x, "2", torch.zeros(W.shape[1]), 1.0)
    assert torch.allclose(zero, mlp(x), atol=1e-6)
    eff = A.steering_effect(mlp, x, "2", W[:3], classes=[0, 1, 2], alphas=(0.5, 5.0))
    feat = eff[eff.kind == "feature"]
    assert (feat["dlogit_class"] > 0).all()
    assert feat[feat.alpha == 5.0]["frac_to_class"].mean() > feat[feat.alpha == 0.5]["frac_to_class"].mean()
    rand = eff[eff.kind == "random"]
    assert feat["dlogit_class"].mean() > rand["dlogit_class"].mean()
    advs = {("mlp", "pgd"): adv.pgd(mlp, x, y, eps=0.15, steps=10, bounds=data.bounds)}
    tr = A.transfer_rates(advs, {"mlp": mlp, "mlp2": mlp2}, x, y)
    white = tr[tr.white_box]["fool_rate"].item()
    black = tr[~tr.white_box]["fool_rate"].item()
    assert white >= black and white > 0.8  # no black-box transfer beats white-box


def test_aligned_bad_input(mlp, data):
    x = data.x_test[:4]
    with pytest.raises(ValueError, match="unknown hook name"):
        A.layer_forward(mlp, x, "fc9")
    with pytest.raises(ValueError, match="eps"):
        A.feature_attack(mlp, x, "2", lambda a: a[:, 0], eps=-1, bounds=data.bounds)
    with pytest.raises(ValueError, match="vector"):
        A.steer(mlp, x, "2", torch.ones(7))


def test_sae_latent_matches_encode(mlp, data):
    from univ.sae import TopKSAE

    acts = univ.capture(mlp, data.x_train[:400], "2", dtype=torch.float64)["2"].float()
    sae = TopKSAE(acts.shape[1], 128, k=8, seed=0).fit(acts, max_steps=50, patience=None, progress=False)
    codes = sae.encode(acts)
    j = int((codes > 0).sum(0).argmax())
    pre = A.sae_latent(sae, j)(acts).detach()
    on = codes[:, j] > 0
    assert torch.allclose(codes[on, j], pre[on], atol=1e-4)
    per_sample = A.sae_latent(sae, torch.full((len(acts),), j))(acts).detach()
    assert torch.allclose(per_sample, pre, atol=1e-5)
    x = data.x_test[:40]
    xr = A.feature_attack(mlp, x, "2", A.sae_latent(sae, j), eps=0.1, steps=10, bounds=data.bounds)
    with torch.no_grad():
        z0 = sae.encode(univ.capture(mlp, x, "2", dtype=torch.float64)["2"].float())[:, j]
        z1 = sae.encode(univ.capture(mlp, xr, "2", dtype=torch.float64)["2"].float())[:, j]
    assert float(z1.mean()) > float(z0.mean())
    h, hr = (univ.capture(mlp, v, "2", dtype=torch.float64)["2"] for v in (x, xr))
    df = adv.project(hr - h, sae, clean=h)
    assert (df["method"] == "codes").all() and df["frac_top10"].between(0, 1 + 1e-9).all()
    with pytest.raises(ValueError, match="latent"):
        A.sae_latent(sae, 999)
