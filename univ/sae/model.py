"""The SAE base class and the registry of SAE kinds (the kinds themselves live in ``kinds.py``).

Conventions (SAELens's parameter layout, so weights load there too):
    W_enc: (d_in, d_sae), b_enc: (d_sae,), W_dec: (d_sae, d_in) with unit-norm rows, b_dec: (d_in,).
Inputs are multiplied by ``norm_scale`` (set by ``fit`` so that the mean input norm is sqrt(d_in)) before
encoding, and reconstructions divided by it after decoding, so ``encode``/``decode``/``forward`` all speak
the caller's units. Losses are computed in the normalised space, divided by d_in, so that their size does
not depend on the width or the scale of the layer: the default coefficients transfer across layers.

A new kind is one subclass and one registry line::

    @SAE_KINDS.register("top1")
    class Top1SAE(SAE):
        def activate(self, pre): ...          # inference codes; training_step has a dense default

Everything that differs by kind (the sparsity penalty's warm-up, extra tensors to save, the SAELens
architecture, cfg fields and state dict, the hyperparameters) is a class attribute or method here, so
train/io/metrics never ask which kind they hold.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import as_matrix, check_int, check_real, check_seed
from ..registry import Registry
from . import train

SAE_KINDS = Registry("SAE kind")
"""Registry: kind name -> SAE subclass (``@SAE_KINDS.register("name")`` on the class adds one)."""


class SAEOutput(NamedTuple):
    """What ``sae(x)`` returns.

    x_hat: (n, d_in) reconstruction in input units; codes: (n, d_sae) latent activations;
    loss: the scalar training objective, the sum of ``losses`` (named parts: "mse", "l1", "l0", "auxk").
    """

    x_hat: Tensor
    codes: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


class StepOutput(NamedTuple):
    """One training step's result, in normalised units (what :meth:`SAE.training_step` returns)."""

    x_hat: Tensor  # (n, d_in)
    losses: dict[str, Tensor]
    fired: Tensor  # (d_sae,) bool: latents active on at least one row
    l0: Tensor  # scalar: mean number of active latents per row
    codes: Tensor | None  # (n, d_sae) when asked for


class Configured:
    """What every dictionary module (an SAE kind, a multi-model dictionary) shares: its constructor arguments
    as its identity (what save and fit's checkpoints record), its repr, and its dtype and device (those of
    ``W_dec``)."""

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        """The constructor arguments that define an SAE of this kind, in signature order (``dtype`` is left
        out: cfg.json records it on its own)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in params if p.name not in ("self", "dtype")
                     and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def hparams(self) -> dict:
        """{constructor argument: value} for every name in :meth:`hparam_names`, read from the attribute of
        the same name, so that ``type(sae)(**sae.hparams(), dtype=sae.dtype)`` rebuilds this SAE."""
        out = {}
        for name in self.hparam_names():
            if not hasattr(self, name):
                raise TypeError(f"{type(self).__name__}: the constructor argument {name!r} is not stored as "
                                f"self.{name}, which hparams() (and so save/load) reads it from")
            out[name] = getattr(self, name)
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device


class SAE(Configured, nn.Module, ABC):
    """Base class: parameters, normalisation, ``encode``/``decode``/``forward``, ``fit`` and what save/load
    need. Subclasses implement ``activate`` (inference codes from pre-activations) and may override
    ``training_step`` (the training loss; the default is the plain reconstruction loss of ``activate``).

    Class attributes a kind may set: ``architecture`` (the SAELens architecture it reads and, by default,
    writes; "" for none) and ``has_sparsity_penalty`` (True when ``training_step`` scales a penalty by
    ``sparsity_scale``: fit then warms it up from 0 and starts early stopping only once it is at full
    size). Every constructor argument except ``dtype`` must be stored under its own name: :meth:`hparams`
    reads them back from there.

    ``metadata``: a dict saying where the activations came from, in SAELens's terms (``hook_name``,
    ``model_name``, ``context_size``, ``prepend_bos``, and any other JSON value such as
    ``hook_head_index`` or ``dataset_path``). The code that fits the SAE sets it when it knows these;
    :func:`univ.sae.save` writes it to cfg.json (its arguments override it) and :func:`univ.sae.load`
    restores it. Empty by default.
    """

    architecture: ClassVar[str] = ""  # "": no SAELens counterpart
    has_sparsity_penalty: ClassVar[bool] = False

    def __init__(self, d_in: int, d_sae: int, *, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        d_in, d_sae = check_int(d_in, "d_in", low=1), check_int(d_sae, "d_sae", low=1)
        seed = check_seed(seed)
        if seed is None:
            raise TypeError("seed: must be an integer, got None")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating torch dtype such as torch.float32, got {dtype!r}")
        self.d_in, self.d_sae, self.seed = d_in, d_sae, seed
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g, dtype=torch.float64)
        W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)
        self.W_dec = nn.Parameter(W_dec)  # (d_sae, d_in)
        self.W_enc = nn.Parameter(W_dec.T.clone())  # (d_in, d_sae): the decoder's transpose at init
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.register_buffer("norm_scale", torch.ones((), dtype=dtype))
        self.metadata: dict = {}

    # ---- identity: registry name and hyperparameters (what save writes to cfg.json) ----
    @property
    def kind(self) -> str:
        """This SAE's name in :data:`SAE_KINDS` (what ``save`` records and ``load`` looks up)."""
        for name, cls in SAE_KINDS.items():
            if cls is type(self):
                return name
        raise ValueError(f"sae: {type(self).__name__} is not a registered SAE kind; register it with "
                         f"@univ.sae.SAE_KINDS.register(name) (known kinds: {list(SAE_KINDS)})")

    # ---- what save/load read and write ----
    def export_tensors(self) -> dict[str, Tensor]:
        """univ's own tensors, exactly (what ``load`` restores bit for bit), by name; kinds with more state
        extend this (and :meth:`import_tensors`)."""
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                "norm_scale": self.norm_scale.reshape(1)}

    @torch.no_grad()
    def import_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Copy tensors named as :meth:`export_tensors` names them into this SAE, exactly."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(self, name).copy_(tensors[name])
        self.norm_scale.copy_(tensors["norm_scale"].reshape(()))

    def saelens_cfg(self) -> dict:
        """This SAE's SAELens cfg.json fields that depend on the kind: ``architecture`` (and e.g. TopK's
        ``k``); save writes the common ones itself. A kind without a SAELens counterpart writes
        ``univ.<kind>``, which SAELens refuses."""
        return {"architecture": self.architecture or f"univ.{self.kind}"}

    @torch.no_grad()
    def folded(self) -> dict[str, Tensor]:
        """W_enc, b_enc, W_dec, b_dec with ``norm_scale`` folded in (computed in float64, then rounded to
        this SAE's dtype): (x - b_dec') @ W_enc' + b_enc equals (x * s - b_dec) @ W_enc + b_enc and
        z @ W_dec' + b_dec' equals (z @ W_dec + b_dec) / s, so no input scaling is left to apply."""
        s = float(self.norm_scale)
        d = {"W_enc": self.W_enc.double() * s, "b_enc": self.b_enc.double(), "W_dec": self.W_dec.double() / s,
             "b_dec": self.b_dec.double() / s}
        return {k: v.to(self.dtype) for k, v in d.items()}

    def saelens_tensors(self) -> dict[str, Tensor]:
        """SAELens's state dict for :meth:`saelens_cfg`'s architecture (its names, nothing else, so that
        ``SAE.load_from_disk`` loads it strictly), with the normalisation folded in (:meth:`folded`)."""
        return self.folded()

    @classmethod
    def saelens_hparams(cls, cfg: Mapping) -> dict:
        """Constructor arguments (besides d_in, d_sae) read from a SAELens cfg.json of ``architecture``."""
        return {}

    @torch.no_grad()
    def import_saelens(self, tensors: Mapping[str, Tensor], cfg: Mapping) -> None:
        """Take SAELens's weights ``tensors`` (named as :meth:`saelens_tensors` names them; cfg: the folder's
        cfg.json) so that encode/decode compute SAELens's encode/decode. univ always subtracts b_dec from
        the input; where SAELens does not (``apply_b_dec_to_input`` false) b_dec @ W_enc joins b_enc."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(self, name).copy_(tensors[name])
        self.norm_scale.fill_(1.0)
        if not cfg.get("apply_b_dec_to_input", True):
            self.b_enc.copy_(self.b_enc.double() + tensors["b_dec"].double() @ tensors["W_enc"].double())

    # ---- the maps ----
    def check_input(self, x, name: str = "x") -> Tensor:
        """x as a finite (n, d_in) tensor of this SAE's dtype and device; ValueError naming ``name``
        otherwise (wrong width, NaN/Inf, complex or non-numeric input)."""
        t = as_matrix(x, name, min_rows=1, dtype=self.dtype, device=self.device)
        if t.shape[1] != self.d_in:
            raise ValueError(f"{name}: expected {self.d_in} features (the SAE's d_in), got {t.shape[1]}")
        return t

    def pre_activations(self, xn: Tensor) -> Tensor:
        """Encoder pre-activations (n, d_sae) of normalised inputs xn: (n, d_in)."""
        return (xn - self.b_dec) @ self.W_enc + self.b_enc

    @abstractmethod
    def activate(self, pre: Tensor) -> Tensor:
        """Inference codes (n, d_sae) from pre-activations (n, d_sae)."""

    def training_step(self, xn: Tensor, dead: Tensor | None = None, sparsity_scale: float = 1.0,
                      want_codes: bool = False) -> StepOutput:
        """Training forward pass on normalised inputs xn: (n, d_in) (what ``fit`` calls once per step).

        dead: (d_sae,) bool mask of latents that have not fired lately (for AuxK losses);
        sparsity_scale: the warm-up factor of the sparsity penalty; want_codes: also return the codes.
        The default: codes = activate(pre-activations), loss = the reconstruction MSE.
        """
        codes = self.activate(self.pre_activations(xn))
        x_hat = codes @ self.W_dec + self.b_dec
        return self.step_output(x_hat, codes, {"mse": self.reconstruction_loss(x_hat, xn)}, want_codes)

    def encode_normalised(self, xn: Tensor) -> Tensor:
        """Inference codes (n, d_sae) of normalised inputs xn: (n, d_in) (what ``encode`` computes after
        scaling by ``norm_scale``); kinds whose codes need more than one pre-activation override it."""
        return self.activate(self.pre_activations(xn))

    def encode(self, x) -> Tensor:
        """Codes (n, d_sae) of activations x: (n, d_in) (numpy or torch, any real dtype)."""
        x = self.check_input(x)
        return self.encode_normalised(x * self.norm_scale)

    def decode(self, codes) -> Tensor:
        """Reconstruction (n, d_in), in input units, of codes (n, d_sae)."""
        z = as_matrix(codes, "codes", min_rows=1, dtype=self.dtype, device=self.device)
        if z.shape[1] != self.d_sae:
            raise ValueError(f"codes: expected {self.d_sae} latents (the SAE's d_sae), got {z.shape[1]}")
        return (z @ self.W_dec + self.b_dec) / self.norm_scale

    def forward(self, x, dead: Tensor | None = None, sparsity_scale: float = 1.0) -> SAEOutput:
        """Reconstruct x: (n, d_in) and return the codes and the training losses (see SAEOutput).

        dead: optional (d_sae,) bool mask of dead latents (drives the AuxK loss of TopK kinds);
        sparsity_scale: multiplies the sparsity penalty (the warm-up factor during training).
        """
        x = self.check_input(x)
        sparsity_scale = check_real(sparsity_scale, "sparsity_scale", low=0)
        if dead is not None:
            if not isinstance(dead, Tensor) or dead.dtype != torch.bool or dead.shape != (self.d_sae,):
                raise ValueError(f"dead: expected None or a bool tensor of shape ({self.d_sae},), got "
                                 f"{getattr(dead, 'dtype', type(dead).__name__)} {tuple(getattr(dead, 'shape', ()))}")
            dead = dead.to(self.device)
        out = self.training_step(x * self.norm_scale, dead, sparsity_scale, True)
        return SAEOutput(out.x_hat / self.norm_scale, out.codes, sum(out.losses.values()), out.losses)

    def fit(self, acts, **kwargs) -> SAE:
        """Train on activations (a (n, d_in) array, or an iterable of batches); returns self.

        See :func:`univ.sae.fit` for the options; the defaults train until the loss stops improving.
        """
        return train.fit(self, acts, **kwargs)

    # ---- pieces for training_step ----
    def reconstruction_loss(self, x_hat: Tensor, xn: Tensor) -> Tensor:
        """Mean over rows of ||x_hat - xn||^2 / d_in (normalised units)."""
        return (x_hat - xn).pow(2).sum(-1).mean() / self.d_in

    @staticmethod
    def step_output(x_hat: Tensor, codes: Tensor, losses: dict[str, Tensor], want_codes: bool) -> StepOutput:
        """A StepOutput from dense codes (n, d_sae): which latents fired and the mean L0."""
        active = codes.detach() > 0
        return StepOutput(x_hat, losses, active.any(0), active.sum(-1).float().mean(),
                          codes if want_codes else None)
