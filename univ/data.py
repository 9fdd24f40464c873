"""Datasets that ship with a package or that univ generates: nothing is downloaded.

Every loader returns a :class:`Dataset` with fixed, seeded train/test tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import unknown_name_error


@dataclass
class Dataset:
    """Train/test tensors plus what a model needs to know about them.

    x_train: (n_train, *input_shape) float32; y_train: (n_train,) int64 (or float targets).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    """Shape of one input without the batch axis, e.g. (1, 8, 8) for digits images."""
    n_classes: int
    bounds: tuple[float, float] | None = None
    """The box the inputs live in (attacks clip to it); None when unbounded."""
    extra: dict = field(default_factory=dict)
    """Dataset-specific extras, e.g. the true dictionary of ``sparse_coding``."""

    @property
    def x_train_flat(self) -> torch.Tensor:
        return self.x_train.reshape(len(self.x_train), -1)

    @property
    def x_test_flat(self) -> torch.Tensor:
        return self.x_test.reshape(len(self.x_test), -1)

    @property
    def in_features(self) -> int:
        return int(np.prod(self.input_shape))

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train``/``n_test`` samples (already shuffled), for quick runs."""
        return Dataset(
            self.name, self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test],
            self.y_test[:n_test], self.input_shape, self.n_classes, self.bounds, dict(self.extra),
        )

    def describe(self) -> dict:
        return {
            "name": self.name, "n_train": len(self.x_train), "n_test": len(self.x_test),
            "input_shape": list(self.input_shape), "n_classes": self.n_classes,
            "bounds": list(self.bounds) if self.bounds else None,
        }


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """sklearn's 8x8 handwritten digits (1,797 images), scaled to [0, 1], as (n, 1, 8, 8) images.

    Use ``Dataset.x_train_flat`` for the (n, 64) view; univ's models accept either.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = split_indices(len(x), test_fraction, seed)
    return Dataset("digits", x[tr], y[tr], x[te], y[te], (1, 8, 8), 10, (0.0, 1.0))


def mnist1d(seed: int = 0, num_samples: int = 5000) -> Dataset:
    """The MNIST-1D benchmark (Greydanus 2020), generated locally by ``mnist1d.make_dataset``.

    Inputs are (n, 1, 40) signals (unbounded reals); 10 classes; the package's own 80/20 split.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    d = make_dataset(args)  # never get_dataset(): that one tries a download
    x_tr = torch.tensor(d["x"], dtype=torch.float32).unsqueeze(1)
    x_te = torch.tensor(d["x_test"], dtype=torch.float32).unsqueeze(1)
    return Dataset(
        "mnist1d", x_tr, torch.tensor(d["y"], dtype=torch.long), x_te,
        torch.tensor(d["y_test"], dtype=torch.long), (1, x_tr.shape[-1]), 10, None,
    )


def sparse_coding(
    n_samples: int = 20000,
    d: int = 64,
    n_atoms: int = 256,
    k: int | tuple[int, int] = (3, 5),
    noise: float = 0.01,
    n_classes: int = 0,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Synthetic sparse-coding data ``x = M z + noise`` with a known overcomplete dictionary.

    M: (d, n_atoms) with unit-norm columns (``extra["dictionary"]``); z has ``k`` active atoms per
    sample (an int, or an inclusive (low, high) range) with magnitudes in [0.5, 1.5]; the codes are in
    ``extra["codes_train"]/["codes_test"]``. With ``n_classes > 0`` each sample gets the label of the
    class whose atom group (atoms are split evenly into classes) carries the most code mass; otherwise
    y is all zeros.
    """
    if n_atoms < 1 or d < 1:
        raise ValueError(f"d and n_atoms must be >= 1, got d={d}, n_atoms={n_atoms}")
    k_lo, k_hi = (k, k) if isinstance(k, int) else k
    if not 1 <= k_lo <= k_hi <= n_atoms:
        raise ValueError(f"k: need 1 <= k <= n_atoms={n_atoms}, got {k}")
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(d, n_atoms, generator=g)
    M = M / M.norm(dim=0, keepdim=True)
    ks = torch.randint(k_lo, k_hi + 1, (n_samples,), generator=g)
    scores = torch.rand(n_samples, n_atoms, generator=g)
    order = scores.argsort(dim=1, descending=True)
    active = torch.arange(n_atoms).expand(n_samples, n_atoms) < ks[:, None]
    mask = torch.zeros(n_samples, n_atoms, dtype=torch.bool).scatter_(1, order, active)
    mags = 0.5 + torch.rand(n_samples, n_atoms, generator=g)
    Z = mags * mask
    X = Z @ M.T + noise * torch.randn(n_samples, d, generator=g)
    if n_classes > 0:
        group = torch.arange(n_atoms) % n_classes
        mass = torch.zeros(n_samples, n_classes).index_add_(1, group, Z)
        y = mass.argmax(dim=1)
    else:
        y = torch.zeros(n_samples, dtype=torch.long)
    n_test = int(round(n_samples * test_fraction))
    return Dataset(
        "sparse_coding", X[n_test:], y[n_test:], X[:n_test], y[:n_test], (d,), max(n_classes, 1), None,
        extra={"dictionary": M, "codes_train": Z[n_test:], "codes_test": Z[:n_test]},
    )


def modular_addition(p: int = 113, train_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """All pairs (a, b) with label (a + b) mod p, as token sequences [a, b, p] (p is the '=' token)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    y = (x[:, 0] + x[:, 1]) % p
    tr, te = split_indices(p * p, 1 - train_fraction, seed)
    return Dataset("modular_addition", x[tr], y[tr], x[te], y[te], (3,), p, None, extra={"p": p})


DATASETS = {"digits": digits, "mnist1d": mnist1d, "sparse_coding": sparse_coding,
            "modular_addition": modular_addition}


def group_composition(group="S5", train_fraction: float = 0.4, seed: int = 0):
    """All pairs (a, b) of ``group`` (a :class:`univ.groups.Group` or a name such as "S5", "D6", "C7", "A5")
    labelled by the id of a * b, split once (seeded) into train and test.

    x: (n, 2) int64 element ids; y: (n,) int64. ``extra`` holds the group (``"group"``) and the full grid in
    row-major order (``"x_all"``, ``"y_all"``: row a * |G| + b) that the representation measures use.
    """
    from .groups import Group, parse_group

    G = group if isinstance(group, Group) else parse_group(group)
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)) \
            or not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction: must be a number in (0, 1), got {train_fraction!r}")
    n = len(G)
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x = torch.tensor(np.stack([a.ravel(), b.ravel()], 1))
    y = torch.tensor(G.table.ravel())
    tr, te = split_indices(n * n, 1 - train_fraction, seed)
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"train_fraction: {train_fraction} leaves an empty split of the {n * n} pairs of {G.name}")
    return Dataset(f"group_composition_{G.name}", x[tr], y[tr], x[te], y[te], (2,), n, None,
                   extra={"group": G, "x_all": x, "y_all": y, "train_index": torch.tensor(tr)})


def load(name: str, **kwargs) -> Dataset:
    """Load a dataset by name (see ``DATASETS``)."""
    if name not in DATASETS:
        raise unknown_name_error("dataset", name, DATASETS)
    return DATASETS[name](**kwargs)

from .sae.ground_truth import shared_features  # noqa: E402,F401  (N models with known shared features)
