"""Suite-wide settings: one torch thread, as `univ run` uses by default (the models and matrices in
the tests are tiny, and one thread is faster, far faster on a busy 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
