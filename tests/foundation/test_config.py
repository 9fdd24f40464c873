"""The analysis settings skeleton: typed, validated, quick sizes applied, explicit settings win."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from univ.config import AnalysisConfig, SettingError, check_choices, check_device, check_range


@dataclass(frozen=True)
class Toy(AnalysisConfig):
    """A toy analysis's settings."""

    QUICK: ClassVar[dict] = {"seeds": 2, "epochs": 3}
    seeds: int = 5
    """Seeds."""
    epochs: int = 30
    """Epochs."""
    eps: float = 0.1
    """Radius."""
    archs: tuple[str, ...] = ("mlp", "cnn")
    """Architectures."""
    data: Literal["a", "b"] = "a"
    """Dataset."""
    n_test: int | None = None
    """Test inputs."""
    device: str = "cpu"
    """Device."""

    def validate(self):
        check_range(self, "seeds", low=1)
        check_range(self, "eps", low=0)
        check_choices(self, "archs", ["mlp", "cnn", "transformer"])
        check_device(self)


def test_resolve_applies_quick_sizes_and_explicit_settings_win():
    assert Toy.resolve() == Toy()
    q = Toy.resolve(quick=True)
    assert (q.seeds, q.epochs, q.eps) == (2, 3, 0.1)
    q = Toy.resolve(quick=True, seeds=5)  # explicit, even when equal to the default
    assert (q.seeds, q.epochs) == (5, 3)
    with pytest.raises(ValueError, match="unknown setting of .*'sedes'.*seeds"):
        Toy.resolve(sedes=3)


def test_types_are_checked_and_lists_become_tuples():
    assert Toy(archs=["mlp"]).archs == ("mlp",)
    assert Toy(eps=1).eps == 1.0 and isinstance(Toy(eps=1).eps, float)
    with pytest.raises(SettingError, match="seeds: expected int, got '3'"):
        Toy(seeds="3")
    with pytest.raises(SettingError, match="seeds: expected int, got True"):
        Toy(seeds=True)
    with pytest.raises(SettingError, match=r"data: expected one of \['a', 'b'\], got 'c'"):
        Toy(data="c")
    assert Toy(n_test=None).n_test is None and Toy(n_test=5).n_test == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        Toy().seeds = 3


def test_validation_names_the_setting_value_and_range():
    with pytest.raises(SettingError, match=r"eps: must be >= 0, got -1.0") as e:
        Toy(eps=-1)
    assert e.value.field == "eps" and e.value.for_cli().startswith("--eps: ")
    with pytest.raises(SettingError, match="seeds: must be >= 1, got 0"):
        Toy(seeds=0)
    with pytest.raises(SettingError, match=r"archs: unknown value 'resnet'; choose from"):
        Toy(archs=("mlp", "resnet"))


def test_device_check_names_the_devices_that_exist():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SettingError, match=r"device: 'cuda' is not available.*devices here: \['cpu'\]"):
        Toy(device="cuda")
    with pytest.raises(SettingError, match="device"):
        Toy(device="cuda:1")
    with pytest.raises(SettingError, match="device: unknown device 'gpu'"):
        Toy(device="gpu")
    assert Toy(device="auto").device == "auto"


def test_field_docs_read_from_source():
    docs = Toy.field_docs()
    assert docs["seeds"] == "Seeds." and docs["n_test"] == "Test inputs."
