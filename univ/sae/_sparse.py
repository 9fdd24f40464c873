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


# ---- ragged selections: a different number of active latents per row (BatchTopK over a batch) ----
# A selection is given by its entries in row-major order: rows, cols: (nnz,) and crow: (n + 1,), the CSR
# row pointers of the same entries.

def ragged_selection(flat_idx: Tensor, n: int, n_cols: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(order, rows, cols, crow) of the entries ``flat_idx`` (indices into a flattened (n, n_cols) matrix),
    sorted row-major; ``order`` sorts values given in flat_idx's order."""
    flat_sorted, order = flat_idx.sort()
    rows, cols = flat_sorted // n_cols, flat_sorted % n_cols
    crow = torch.zeros(n + 1, dtype=torch.long, device=flat_idx.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return order, rows, cols, crow


def _ragged_csr(vals: Tensor, crow: Tensor, cols: Tensor, n_cols: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, vals, (len(crow) - 1, n_cols))


def _ragged_t_mm(vals: Tensor, rows: Tensor, cols: Tensor, n: int, n_cols: int, dense: Tensor) -> Tensor:
    st = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (n_cols, n))
    return torch.sparse.mm(st, dense)


class RaggedDecode(torch.autograd.Function):
    """x_hat = S @ W for the sparse S with ``vals`` (nnz,) at (rows, cols); W: (m, d) -> (n, d)."""

    @staticmethod
    def forward(ctx, vals: Tensor, rows: Tensor, cols: Tensor, crow: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(vals, rows, cols, crow, W)
        return _ragged_csr(vals, crow, cols, W.shape[0]) @ W

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, rows, cols, crow, W = ctx.saved_tensors
        g_vals = g_W = None
        if ctx.needs_input_grad[0]:
            pattern = _ragged_csr(torch.zeros_like(vals), crow, cols, W.shape[0])
            g_vals = torch.sparse.sampled_addmm(pattern, grad, W.T, beta=0.0).values()
        if ctx.needs_input_grad[4]:
            g_W = _ragged_t_mm(vals, rows, cols, len(crow) - 1, W.shape[0], grad)
        return g_vals, None, None, None, g_W


class RaggedEncode(torch.autograd.Function):
    """The selected pre-activations (x_c @ W_enc + b_enc)[rows, cols] -> (nnz,), given their values
    ``selected``; the backward only touches the selected entries."""

    @staticmethod
    def forward(ctx, x_c: Tensor, W_enc: Tensor, b_enc: Tensor, rows: Tensor, cols: Tensor, crow: Tensor,
                selected: Tensor) -> Tensor:
        ctx.save_for_backward(x_c, W_enc, rows, cols, crow)
        return selected.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x_c, W_enc, rows, cols, crow = ctx.saved_tensors
        m = W_enc.shape[1]
        g_x = _ragged_csr(g, crow, cols, m) @ W_enc.T.contiguous() if ctx.needs_input_grad[0] else None
        g_W = _ragged_t_mm(g, rows, cols, len(x_c), m, x_c).T if ctx.needs_input_grad[1] else None
        g_b = None
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        return g_x, g_W, g_b, None, None, None, None
