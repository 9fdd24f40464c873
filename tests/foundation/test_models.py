import pytest
import torch

from univ.models import MODELS, build_model
from univ.train import load_model, save_model


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_image_and_flat_inputs_agree(name):
    m = build_model(name, seed=0).eval()
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(m(x), m(x.reshape(5, 64)))
    assert m(x).shape == (5, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_wrong_input_shape_is_a_clear_error(name):
    m = build_model(name, seed=0)
    with pytest.raises(ValueError, match=r"x: .*expects inputs of shape \(n, 1, 8, 8\)"):
        m(torch.rand(3, 1, 7, 7))


@pytest.mark.parametrize("name,cfg", [("mlp", {}), ("cnn", {"input_shape": (1, 40)}),
                                      ("transformer", {"input_shape": (1, 40), "patch": (4,)})])
def test_save_load_identical_outputs(tmp_path, name, cfg):
    m = build_model(name, seed=3, **cfg).eval()
    x = torch.randn(4, *m.input_shape)
    save_model(m, tmp_path / name)
    m2 = load_model(tmp_path / name)
    assert torch.equal(m(x), m2(x))
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_seed_fixes_init_without_touching_global_rng():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = build_model("mlp", seed=1)
    after = torch.rand(1)
    b = build_model("mlp", seed=1)
    assert torch.equal(before, after)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, build_model("mlp", seed=2).fc1.weight)


def test_registry_and_unknown_name():
    assert {"mlp", "cnn", "transformer"} <= set(MODELS)
    with pytest.raises(ValueError, match="closest valid names: \\['mlp'"):
        build_model("mpl")


def test_token_transformer_on_modular_addition():
    m = build_model("token_transformer", n_ctx=3, d_vocab=8, n_classes=7, d_model=16, seed=0)
    assert m(torch.randint(0, 8, (4, 3))).shape == (4, 7)
    with pytest.raises(ValueError, match="integer tokens"):
        m(torch.rand(4, 3))
