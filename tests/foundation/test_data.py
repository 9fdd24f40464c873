import pytest
import torch

import univ
from univ import data


def test_digits_scaled_split_and_deterministic():
    a, b = data.digits(seed=0), data.digits(seed=0)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train_flat.shape[1] == 64
    assert len(a.x_train) + len(a.x_test) == 1797
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, data.digits(seed=1).y_train)
    assert set(a.y_train.tolist()) == set(range(10))


def test_mnist1d_generated_locally():
    d = data.mnist1d(num_samples=500)
    assert d.x_train.shape == (400, 1, 40) and d.x_test.shape == (100, 1, 40)
    assert torch.equal(d.x_train, data.mnist1d(num_samples=500).x_train)


def test_sparse_coding_known_dictionary():
    d = data.sparse_coding(n_samples=1000, d=16, n_atoms=32, k=3, noise=0.0)
    M, Z = d.extra["dictionary"], d.extra["codes_train"]
    assert M.shape == (16, 32)
    torch.testing.assert_close(M.norm(dim=0), torch.ones(32))
    assert ((Z > 0).sum(1) == 3).all()
    torch.testing.assert_close(d.x_train, Z @ M.T)


def test_sparse_coding_labels_and_bad_k():
    d = data.sparse_coding(n_samples=500, n_classes=4)
    assert set(d.y_train.tolist()) <= set(range(4)) and d.n_classes == 4
    with pytest.raises(ValueError, match="k"):
        data.sparse_coding(n_atoms=8, k=9)


def test_modular_addition_labels():
    d = data.modular_addition(p=7, train_fraction=0.5)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert len(x) == 49 and torch.equal(y, (x[:, 0] + x[:, 1]) % 7) and (x[:, 2] == 7).all()


def test_unknown_dataset_lists_valid():
    with pytest.raises(ValueError, match="digits"):
        univ.data.load("cifar")
