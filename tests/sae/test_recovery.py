"""Acceptance at small size: fit's DEFAULT arguments recover a known sparse-coding dictionary.

(The full-size check, 64 dims / 256 atoms / width 512, is ``analyses/sae_recovery.py``.)
"""

import pytest

import univ.sae as S
from univ.data import sparse_coding


@pytest.fixture(scope="module")
def data():
    # 32 dims, 64 atoms, 3-5 active per sample; SAEs twice as wide as the dictionary
    return sparse_coding(n_samples=5000, d=32, n_atoms=64, k=(3, 5), seed=0)


@pytest.mark.parametrize("make", [lambda: S.TopKSAE(32, 128, k=4), lambda: S.ReluSAE(32, 128)],
                         ids=["topk", "relu"])
def test_default_fit_recovers_dictionary(make, data):
    sae = make().fit(data.x_train, progress=False)
    mmcs, recovered = S.dictionary_recovery(sae, data.extra["dictionary"])
    assert mmcs >= 0.95 and recovered >= 0.9, (mmcs, recovered)
    assert sae.converged_
    m = S.evaluate(sae, data.x_test)
    assert m.fvu < 0.25 and m.l0 < 32


def test_untrained_sae_does_not_recover(data):
    mmcs, recovered = S.dictionary_recovery(S.TopKSAE(32, 128, k=4), data.extra["dictionary"])
    assert mmcs < 0.8 and recovered < 0.1
