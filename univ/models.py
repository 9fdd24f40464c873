"""The model zoo: MLP, CNN and a small TransformerLens transformer, built from configs via a registry.

Every model
- takes its dataset's inputs either as (n, *input_shape) or flat (n, prod(input_shape)), and says
  clearly when the shape is wrong;
- stores its constructor arguments in ``self.config`` (so it can be saved and rebuilt exactly);
- lists its representation layers in ``self.layers`` (the names univ's analyses capture by default),
  all valid names for :func:`univ.capture`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from einops import rearrange
from torch import nn

from ._checks import as_real_tensor, check_int
from .registry import Registry

# --------------------------------------------------------------------------------------------------
# the model contract: how univ runs any nn.Module


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode; restore each module's own mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's floating parameters (None for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def check_model(model, name: str = "model") -> nn.Module:
    """Raise a ValueError naming ``name`` unless ``model`` is a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def takes_tokens(model: nn.Module) -> bool:
    """Whether integer inputs are token ids for ``model``: its ``takes_tokens`` attribute when it has one,
    else whether any of its modules is an embedding (class name containing "embed": torch's Embedding,
    TransformerLens's Embed, HuggingFace's embedding blocks)."""
    flag = getattr(model, "takes_tokens", None)
    if isinstance(flag, bool):
        return flag
    return any("embed" in type(m).__name__.lower() for m in model.modules())


def as_model_input(model: nn.Module, x):
    """The one input-dtype rule of capture, attacks and predictions: floating inputs are cast to the model's
    parameter dtype (float64 numpy data into a float32 net); bool inputs too (the default float dtype for
    a model without parameters); integer inputs stay integers (token ids) for a model that
    :func:`takes_tokens`, and are cast like bools for any other model. In a dict batch (see
    :mod:`univ.batch`) floating entries are cast and integer and bool entries (ids, masks) are kept."""
    dtype = model_dtype(model)
    if isinstance(x, Mapping):
        return {k: v.to(dtype) if v.is_floating_point() and dtype is not None else v for k, v in x.items()}
    if x.is_floating_point():
        return x if dtype is None or x.dtype == dtype else x.to(dtype)
    if x.dtype == torch.bool or (not x.is_complex() and not takes_tokens(model)):
        return x.to(dtype or torch.get_default_dtype())
    return x


def model_input(model: nn.Module, x, name: str = "x", detach: bool = True) -> torch.Tensor:
    """``x`` (numpy or torch) checked as a batch for ``model``: a non-empty real tensor free of NaN/Inf,
    in the dtype :func:`as_model_input` gives; ValueError/TypeError naming ``name`` otherwise."""
    return as_model_input(model, as_real_tensor(x, name, detach=detach))


def run_model(model: nn.Module, x, name: str = "x"):
    """``model(x)`` (``model(**x)`` for a dict batch, HuggingFace's convention); a torch error inside the
    forward (a shape or dtype the model cannot take, or keyword arguments it does not know) becomes a
    ValueError naming ``name`` and the input's shape and dtype. Running out of memory is not bad input: that
    error passes through, for the caller to retry with a smaller batch."""
    try:
        return model(**x) if isinstance(x, Mapping) else model(x)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, TypeError) as e:
        if isinstance(e, TypeError) and not isinstance(x, Mapping):
            raise
        what = (f"a dict batch {{{', '.join(f'{k}: {tuple(v.shape)} {v.dtype}' for k, v in x.items())}}}"
                if isinstance(x, Mapping) else f"an input of shape {tuple(x.shape)} and dtype {x.dtype}")
        raise ValueError(f"{name}: the model's forward failed on {what} ({str(e).splitlines()[0]})") from e


def as_logits(out) -> torch.Tensor:
    """``out``, a model's forward output, if it is a logits tensor; otherwise a ValueError naming ``model``
    (a dict, a tuple or a HuggingFace-style output object is not logits: wrap the model)."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model: expected its forward to return a logits tensor, got {type(out).__name__}; "
                         "wrap the model so that it returns the logits")
    return out


@torch.no_grad()
def logits(model: nn.Module, x, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs (n, n_classes) on x: (n, ...), in eval mode (every module's mode restored),
    batched, on the CPU."""
    check_model(model)
    batch_size = check_int(batch_size, "batch_size", low=1)
    x = model_input(model, x)
    dev = model_device(model)
    with eval_mode(model):
        outs = [as_logits(run_model(model, x[i:i + batch_size].to(dev))) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).cpu()


def predict(model: nn.Module, x, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (n,): the argmax of :func:`logits`."""
    return logits(model, x, batch_size).argmax(1)


class ZooModel(nn.Module):
    """Base of the zoo: input-shape checking, ``config`` and ``layers``."""

    name: str = "base"
    takes_tokens: bool = False
    """Whether integer inputs are token ids (see :func:`takes_tokens`)."""
    layers: list[str]
    """Representation layers captured by default, input side first, logits last."""
    reduce: str = "flatten"
    """How :func:`univ.capture` should reduce this model's multi-axis activations by default."""
    feature_axis: int | None = None
    """Where the features of a 3-D+ hooked output lie (1 channels-first, -1 channels-last; see univ.features)."""

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.in_features = math.prod(self.input_shape)

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        """(n, *input_shape) view of ``x``, accepting the flat (n, in_features) form too."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        if x.ndim == 2 and x.shape[1] == self.in_features:
            return x.reshape(len(x), *self.input_shape)
        raise ValueError(
            f"x: {type(self).__name__} expects inputs of shape (n, {', '.join(map(str, self.input_shape))}) "
            f"or flat (n, {self.in_features}); got {tuple(x.shape)}"
        )


class MLP(ZooModel):
    """Fully connected ReLU network: fc1 -> act1 -> ... -> out. ``widths=()`` gives softmax regression
    (a single linear layer, Szegedy et al.'s FC10).

    Hookable modules: ``fc{i}`` (pre-activation), ``act{i}`` (post-ReLU), ``out`` (logits).
    """

    name = "mlp"

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), widths: Sequence[int] = (128, 64),
                 n_classes: int = 10, bias: bool = True):
        super().__init__(input_shape)
        if any(int(w) < 1 for w in widths):
            raise ValueError(f"widths: every width must be a positive integer, got {list(widths)}")
        self.config = {"input_shape": list(self.input_shape), "widths": [int(w) for w in widths],
                       "n_classes": int(n_classes), "bias": bias}
        prev = self.in_features
        for i, w in enumerate(widths, start=1):
            setattr(self, f"fc{i}", nn.Linear(prev, int(w), bias=bias))
            setattr(self, f"act{i}", nn.ReLU())
            prev = int(w)
        self.out = nn.Linear(prev, n_classes, bias=bias)
        self.n_hidden = len(widths)
        self.layers = [f"act{i}" for i in range(1, self.n_hidden + 1)] + ["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._as_input(x).reshape(len(x), -1)
        for i in range(1, self.n_hidden + 1):
            h = getattr(self, f"act{i}")(getattr(self, f"fc{i}")(h))
        return self.out(h)


class CNN(ZooModel):
    """Small ConvNet (2-D for images, 1-D for signals): conv1 -> act1 -> conv2 -> act2 -> pool -> fc1 ->
    act3 -> out. Conv maps are (n, channels, *spatial); capture flattens them by default."""

    name = "cnn"
    feature_axis = 1

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), channels: Sequence[int] = (16, 32),
                 hidden: int = 64, n_classes: int = 10, kernel_size: int = 3):
        super().__init__(input_shape)
        if len(self.input_shape) not in (2, 3):
            raise ValueError(f"input_shape: CNN needs (C, L) or (C, H, W), got {self.input_shape}")
        self.config = {"input_shape": list(self.input_shape), "channels": [int(c) for c in channels],
                       "hidden": int(hidden), "n_classes": int(n_classes), "kernel_size": int(kernel_size)}
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if len(self.input_shape) == 3 else (nn.Conv1d, nn.MaxPool1d)
        c_in = self.input_shape[0]
        self.conv1 = conv(c_in, channels[0], kernel_size, padding=kernel_size // 2)
        self.act1 = nn.ReLU()
        self.conv2 = conv(channels[0], channels[1], kernel_size, padding=kernel_size // 2)
        self.act2 = nn.ReLU()
        self.pool = pool(2)
        spatial = [s // 2 for s in self.input_shape[1:]]
        self.fc1 = nn.Linear(channels[1] * math.prod(spatial), hidden)
        self.act3 = nn.ReLU()
        self.out = nn.Linear(hidden, n_classes)
        self.layers = ["act1", "act2", "act3", "out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(self._as_input(x)))))
        h = self.pool(h).flatten(1)
        return self.out(self.act3(self.fc1(h)))


class PlainCNN(ZooModel):
    """Kornblith et al.'s plain CNN (2-D for images, 1-D for signals): one conv -> BatchNorm -> ReLU per
    entry of ``strides`` (a stride of 2 halves the resolution), global average pooling, a linear readout.

    Hookable modules: ``features.{3i}`` (conv), ``features.{3i+2}`` (ReLU; these are ``layers``), ``out``.
    """

    name = "plain_cnn"
    feature_axis = 1

    def __init__(self, input_shape: Sequence[int] = (1, 40), channels: int = 32,
                 strides: Sequence[int] = (2, 1, 2, 1, 2, 1), n_classes: int = 10, kernel_size: int = 3):
        super().__init__(input_shape)
        if len(self.input_shape) not in (2, 3):
            raise ValueError(f"input_shape: PlainCNN needs (C, L) or (C, H, W), got {self.input_shape}")
        if not strides or any(int(st) < 1 for st in strides):
            raise ValueError(f"strides: need at least one stride >= 1, got {list(strides)}")
        self.config = {"input_shape": list(self.input_shape), "channels": int(channels),
                       "strides": [int(st) for st in strides], "n_classes": int(n_classes),
                       "kernel_size": int(kernel_size)}
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if len(self.input_shape) == 3 else (nn.Conv1d, nn.BatchNorm1d)
        mods, c = [], self.input_shape[0]
        for st in strides:
            mods += [conv(c, channels, kernel_size, stride=int(st), padding=kernel_size // 2), bn(channels),
                     nn.ReLU()]
            c = channels
        self.features = nn.Sequential(*mods)
        self.out = nn.Linear(channels, n_classes)
        self.layers = [f"features.{i}" for i, m in enumerate(mods) if isinstance(m, nn.ReLU)] + ["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(self._as_input(x)).flatten(2).mean(2))


def _bridge(d_model: int, n_layers: int, n_heads: int, n_ctx: int, d_vocab: int, d_out: int, seed: int,
            d_mlp: int | None = None):
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    cfg = TransformerBridgeConfig(
        d_model=d_model, d_head=d_model // n_heads, n_layers=n_layers, n_ctx=n_ctx, n_heads=n_heads,
        d_vocab=d_vocab, d_vocab_out=d_out, d_mlp=d_mlp or 4 * d_model, act_fn="relu",
        normalization_type="LN", attention_dir="bidirectional", seed=seed,
    )
    return TransformerBridge.boot_native(cfg)


class PatchTransformer(ZooModel):
    """A TransformerLens transformer (``TransformerBridge.boot_native``) that classifies images or
    signals cut into patches: a linear patch embedding plus learned positions feeds the residual stream
    (``start_at_layer=0``), and the class logits are averaged over positions.

    Hook names are TransformerLens's (``blocks.0.hook_resid_post``, ``blocks.0.mlp.hook_post``, ...)
    plus ``hook_patch_embed`` (our embedding) and ``hook_logits`` (the pooled logits).
    Residual-stream activations are (n, n_patches, d_model); capture averages over patches by default.
    """

    name = "transformer"
    reduce = "mean"
    feature_axis = -1

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), patch: Sequence[int] = (2, 2),
                 d_model: int = 64, n_layers: int = 2, n_heads: int = 4, n_classes: int = 10, seed: int = 0):
        super().__init__(input_shape)
        from transformer_lens.hook_points import HookPoint

        patch = tuple(int(p) for p in patch)
        spatial = self.input_shape[1:]
        if len(patch) != len(spatial) or any(s % p for s, p in zip(spatial, patch)):
            raise ValueError(f"patch: {patch} must tile the spatial input shape {spatial}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.config = {"input_shape": list(self.input_shape), "patch": list(patch), "d_model": d_model,
                       "n_layers": n_layers, "n_heads": n_heads, "n_classes": n_classes, "seed": seed}
        self.patch = patch
        self.n_tokens = math.prod(s // p for s, p in zip(spatial, patch))
        patch_dim = self.input_shape[0] * math.prod(patch)
        self.embed = nn.Linear(patch_dim, d_model)
        self.pos = nn.Parameter(torch.randn(self.n_tokens, d_model) * 0.02)
        self.hook_patch_embed = HookPoint()
        self.hook_logits = HookPoint()
        # the bridge's own token/position embeddings go unused: d_vocab=2 keeps them tiny
        self.bridge = _bridge(d_model, n_layers, n_heads, self.n_tokens, 2, n_classes, seed)
        self.layers = ["hook_patch_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)] + [
            "hook_logits"]

    @property
    def hook_dict(self) -> dict:
        """Name -> HookPoint, TransformerLens aliases included (aliases share one HookPoint)."""
        hooks = dict(self.bridge.hook_dict)
        hooks["hook_patch_embed"] = self.hook_patch_embed
        hooks["hook_logits"] = self.hook_logits
        return hooks

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(n, *input_shape) -> (n, n_tokens, patch_dim)."""
        x = self._as_input(x)
        if len(self.patch) == 2:
            return rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=self.patch[0], pw=self.patch[1])
        return rearrange(x, "b c (l pl) -> b l (c pl)", pl=self.patch[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resid = self.hook_patch_embed(self.embed(self.tokens(x)) + self.pos)
        logits = self.bridge(resid, start_at_layer=0)  # (n, n_tokens, n_classes)
        return self.hook_logits(logits.mean(dim=1))


class TokenTransformer(ZooModel):
    """A TransformerLens transformer on integer token sequences (e.g. ``modular_addition``), predicting
    the class from the last position. Hook names are TransformerLens's."""

    name = "token_transformer"
    reduce = "last"
    feature_axis = -1
    takes_tokens = True

    def __init__(self, n_ctx: int = 3, d_vocab: int = 114, n_classes: int = 113, d_model: int = 128,
                 n_layers: int = 1, n_heads: int = 4, seed: int = 0):
        super().__init__((n_ctx,))
        self.config = {"n_ctx": n_ctx, "d_vocab": d_vocab, "n_classes": n_classes, "d_model": d_model,
                       "n_layers": n_layers, "n_heads": n_heads, "seed": seed}
        self.bridge = _bridge(d_model, n_layers, n_heads, n_ctx, d_vocab, n_classes, seed)
        self.layers = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]

    @property
    def hook_dict(self) -> dict:
        return dict(self.bridge.hook_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_shape[0] or x.is_floating_point():
            raise ValueError(f"x: expected integer tokens of shape (n, {self.input_shape[0]}), "
                             f"got {tuple(x.shape)} {x.dtype}")
        return self.bridge(x)[:, -1]


MODELS: Registry = Registry("model", {
    "mlp": MLP, "cnn": CNN, "plain_cnn": PlainCNN, "transformer": PatchTransformer,
    "token_transformer": TokenTransformer,
})
"""Registry: zoo name -> model class."""


def build_model(name: str, seed: int | None = None, **cfg) -> ZooModel:
    """Build a zoo model by registry name; ``seed`` fixes its initialisation (without touching the
    global RNG). Unknown names list the valid ones."""
    cls = MODELS[name]
    if seed is None:
        return cls(**cfg)
    if "seed" in cls.__init__.__code__.co_varnames:
        cfg.setdefault("seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**cfg)


def model_spec(model: ZooModel) -> dict:
    """{"name": registry name, "config": constructor arguments}: enough to rebuild ``model``."""
    return {"name": model.name, "config": dict(model.config)}


def n_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
