"""py: (any nn.Module, weights from safetensors or a weights_only state dict; pickles refused without running
them), zoo: (built or saved), torchvision: (an optional extra: missing says so; with a stand-in module it
loads local weights)."""

import pickle
import sys
import textwrap
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import univ
from univ.sources import load_model, untrained_twin

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv1d(2, width, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(-1))


def make(width=8):
    return Net(width)
"""


@pytest.fixture
def net_module(tmp_path, monkeypatch):
    (tmp_path / "toy_source_net.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_source_net", None)
    import toy_source_net

    torch.manual_seed(5)
    return toy_source_net, toy_source_net.make(width=6)


def test_py_safetensors_and_state_dict_files(net_module, tmp_path):
    mod, net = net_module
    x = torch.randn(4, 2, 5)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for f in ("w.safetensors", "w.pt", "ckpt.pt"):
        m = load_model("py:toy_source_net:make", weights=tmp_path / f, kwargs={"width": 6})
        assert m.spec == "py:toy_source_net:make" and m.tokenizer is None and m.layers == ["conv", "act", "head"]
        with torch.no_grad():
            assert torch.equal(m(x), net(x)) and torch.equal(m({"x": x}), net(x))
    twin = untrained_twin(m, 0)
    assert torch.equal(twin(x), untrained_twin(m, 0)(x)) and not torch.equal(twin(x), m(x))


def test_py_feature_axis_is_asked_for_never_guessed(net_module, tmp_path):
    mod, net = net_module
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    x = torch.randn(4, 2, 5)
    m = load_model("py:toy_source_net:make", weights=tmp_path / "w.safetensors", kwargs={"width": 6})
    h = torch.relu(net.conv(x))  # (4, 6, 5)
    assert torch.equal(univ.capture(m, x, "conv", reduce="mean")["conv"], net.conv(x).mean(-1))  # a conv: known
    with pytest.raises(ValueError, match=r"names: the feature axis of 'act' \(shape \(4, 6, 5\)\) is unknown.*"
                                         r"model.feature_axis = 1"):
        univ.capture(m, x, "act", reduce="mean")
    assert torch.equal(univ.capture(m, x, "act", reduce="flatten")["act"], h.flatten(1))  # no axis needed
    m1 = load_model("py:toy_source_net:make", weights=tmp_path / "w.safetensors", kwargs={"width": 6},
                    feature_axis=1)
    assert torch.equal(univ.capture(m1, x, "act", reduce="mean")["act"], h.mean(-1))
    assert torch.equal(univ.capture(m1, x, "act", reduce="tokens")["act"], h.transpose(1, 2).reshape(-1, 6))
    net.feature_axis = 1  # or on the plain module itself
    assert torch.equal(univ.capture(net, x, "act", reduce="last")["act"], h[:, :, -1])


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_only_files_are_refused_without_running_them(net_module, tmp_path):
    mod, net = net_module
    marker = tmp_path / "ran"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv.weight": Evil(str(marker))}, protocol=2))
    torch.save(net, tmp_path / "module.pt")  # a whole pickled module: needs weights_only=False
    for f in ("evil.pt", "module.pt"):
        with pytest.raises(ValueError, match=r"weights: cannot read .* torch.load\(weights_only=True\)"):
            load_model("py:toy_source_net:make", weights=tmp_path / f)
    assert not marker.exists()
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="weights: .*bad.safetensors' does not fit the model"):
        load_model("py:toy_source_net:make", weights=tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="weights: no such file"):
        load_model("py:toy_source_net:make", weights=tmp_path / "none.pt")


def test_zoo_built_and_saved(tmp_path):
    from univ.train import save_model

    m = load_model("zoo:cnn", seed=3, channels=(4, 6))
    x = torch.rand(5, 1, 8, 8)
    acts = univ.capture(m, x, reduce="mean")
    assert list(acts) == ["act1", "act2", "act3", "out"] and acts["act1"].shape == (5, 4)  # channels-first
    torch.testing.assert_close(acts["act1"], torch.relu(m.net.conv1(x)).mean((2, 3)))
    save_model(m.net, tmp_path / "run")
    again = load_model(f"zoo:{tmp_path / 'run'}")
    assert torch.equal(again(x), m(x))
    tr = load_model("zoo:transformer", d_model=16, n_heads=2)
    assert univ.capture(tr, x, reduce="mean")["blocks.0.hook_resid_post"].shape == (5, 16)
    assert not torch.equal(untrained_twin(m, 4)(x), m(x)) and torch.equal(untrained_twin(m, 3)(x), m(x))


def test_torchvision_is_an_optional_extra(monkeypatch, tmp_path):
    if "torchvision" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
        monkeypatch.setitem(sys.modules, "torchvision.models", None)
        with pytest.raises(ValueError, match="needs the optional extra torchvision"):
            load_model("torchvision:resnet18", weights=tmp_path / "w.safetensors")

    class Tiny(nn.Module):  # a stand-in for torchvision.models.get_model's ResNet
        def __init__(self):
            super().__init__()
            self.layer1, self.layer2 = nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.layer2(self.layer1(x)).mean((2, 3)))

    fake = types.ModuleType("torchvision.models")
    fake.get_model = lambda name, weights=None, **kw: Tiny()
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", fake)
    torch.manual_seed(0)
    ref = Tiny()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    m = load_model("torchvision:resnet18", weights=tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 8, 8)
    assert m.layers == ["layer1", "layer2"] and torch.equal(m(x), ref(x))
    assert torch.equal(univ.capture(m, x, "layer2")["layer2"], ref.layer2(ref.layer1(x)).mean((2, 3)))
    with pytest.raises(ValueError, match="weights: torchvision:resnet18 needs a local weights file"):
        load_model("torchvision:resnet18")
