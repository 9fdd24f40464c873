"""Autograd functions for TopK-style SAEs whose codes have k non-zeros per row: the decoder, the
decoder's gradient and the encoder's gradient are computed as sparse products (O(n k d) instead of
O(n d_sae d)); only the forward encoder matmul stays dense. Codes are given as (vals, idx), both (n, k).

On CPU this is what makes univ's TopK training faster than a dense implementation (benchmarks/sae.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def _csr(vals: Tensor, idx: Tensor, n_cols: int) -> Tensor:
    """(n, n_cols) CSR matrix with vals[i, j] at (i, idx[i, j]) (duplicates summed)."""
    n, k = idx.shape
    crow = torch.arange(0, n * k + 1, k, device=idx.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, idx.reshape(-1), vals.reshape(-1), (n, n_cols))


def _transpose_mm(vals: Tensor, idx: Tensor, n_cols: int, dense: Tensor) -> Tensor:
    """S^T @ dense: (n_cols, d) for the sparse S of (vals, idx) and dense: (n, d)."""
    n, k = idx.shape
    rows = torch.arange(n, device=idx.device).repeat_interleave(k)
    st = torch.sparse_coo_tensor(torch.stack([idx.reshape(-1), rows]), vals.reshape(-1), (n_cols, n))
    return torch.sparse.mm(st, dense)


def _sampled_dot(idx: Tensor, a: Tensor, W: Tensor) -> Tensor:
    """out[i, j] = a[i] . W[idx[i, j]]; a: (n, d), W: (m, d) -> (n, k), without the dense (n, m)."""
    n, k = idx.shape
    pattern = _csr(torch.zeros(n * k, dtype=a.dtype, device=a.device), idx, W.shape[0])
    return torch.sparse.sampled_addmm(pattern, a, W.T, beta=0.0).values().view(n, k)


class SparseDecode(torch.autograd.Function):
    """x_hat = S @ W for codes S given as (vals, idx): (n, k); W: (m, d) -> (n, d)."""

    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(vals, idx, W)
        return _csr(vals, idx, W.shape[0]) @ W

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, idx, W = ctx.saved_tensors
        g_vals = _sampled_dot(idx, grad, W) if ctx.needs_input_grad[0] else None
        g_W = _transpose_mm(vals, idx, W.shape[0], grad) if ctx.needs_input_grad[2] else None
        return g_vals, None, g_W


class SparseEncode(torch.autograd.Function):
    """The selected pre-activations (x_c @ W_enc + b_enc)[i, idx[i, j]] -> (n, k), given their values
    ``selected`` (already computed by the dense forward); the backward only touches the selected entries."""

    @staticmethod
    def forward(ctx, x_c: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, selected: Tensor) -> Tensor:
        ctx.save_for_backward(x_c, W_enc, idx)
        return selected.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x_c, W_enc, idx = ctx.saved_tensors
        m = W_enc.shape[1]
        g_x = _csr(g, idx, m) @ W_enc.T.contiguous() if ctx.needs_input_grad[0] else None
        g_W = _transpose_mm(g, idx, m, x_c).T if ctx.needs_input_grad[1] else None
        g_b = None
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        return g_x, g_W, g_b, None, None
