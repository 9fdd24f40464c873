"""Adversarial examples for language models: token edits (GCG), embedding-space PGD, SAE-targeted edits,
and their matched random controls.

    lm = token_lm(model)                                   # a univ.lm_zoo.CausalLM, or load_model("hf:...")
    ids, pos = with_suffix(prompt_ids, length=6, filler=tok)
    res = gcg(lm, ids, TargetToken(t), pos, steps=50)      # greedy coordinate gradient (Zou et al. 2023)
    ctl = random_substitution(ids, pos, res.n_edits, lm.vocab_size, seed=0)
    emb = embedding_pgd(lm, ids, TargetToken(t), pos, eps=2.0, norm="2")   # continuous, + nearest tokens

Every attack reads the model's output at the last position. An *objective* says what the attacker wants there:
:class:`TargetToken` (make ``t`` the argmax), :class:`AvoidToken` (loss maximisation: push the clean next
token off the argmax) and :class:`MoveLatent` (raise or silence one SAE latent of the residual stream at the
last position while keeping the output distribution; Li et al. 2026). Each gives a per-candidate loss and a
success flag, so one GCG loop serves all three.

GCG: at each step the gradient of the loss with respect to one-hot token indicators at the editable
positions ranks, per position, the ``topk`` substitutions that most decrease a linearised loss; a batch of
``search_width`` candidates, each replacing ``n_replace`` random positions by random top-k tokens, is
evaluated exactly and the best one kept. Embedding PGD optimises a perturbation of the editable positions'
input embeddings inside an L2 or L-inf ball; its nearest-token projection (each perturbed embedding
replaced by the nearest token embedding) says whether the continuous attack means anything in token space.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._checks import check_int, check_real
from ..models import eval_mode
from ..registry import Registry
from .ball import canonical_norm, project_ball, steepest_step

LM_ATTACKS = Registry("language-model attack")
"""Registry: name -> attack(lm, ids, objective, positions, **options) (``gcg``, ``embedding_pgd``)."""


# --------------------------------------------------------------------------------------------------
# the model: embeddings in, logits and residual streams out


class _HFLM:
    """A HuggingFace causal LM (inside a univ SourceModel or bare) seen through the token-LM interface."""

    def __init__(self, net):
        self.net = net
        self.n_layers = int(net.config.num_hidden_layers)

    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.net.get_input_embeddings().weight

    def embed(self, ids):
        return self.embedding_matrix[ids]

    def forward_embeds(self, emb, resid: bool = False):
        out = self.net(inputs_embeds=emb, output_hidden_states=resid, use_cache=False)
        return (out.logits, list(out.hidden_states[1:])) if resid else out.logits



def token_lm(model):
    """``model`` as a token LM with ``embedding_matrix`` (V, d), ``embed(ids)`` and ``forward_embeds(emb,
    resid=False)``: a :class:`univ.lm_zoo.CausalLM` as it is, a HuggingFace causal LM (bare, or a
    SourceModel from ``load_model("hf:...")``) through ``inputs_embeds``; ValueError naming ``model`` otherwise."""
    if all(hasattr(model, a) for a in ("embedding_matrix", "embed", "forward_embeds")):
        return model
    net = getattr(model, "net", model)
    if hasattr(net, "get_input_embeddings") and hasattr(getattr(net, "config", None), "num_hidden_layers"):
        return _HFLM(net)
    raise ValueError(f"model: expected a univ.lm_zoo.CausalLM or a HuggingFace causal LM (load_model('hf:...')), "
                     f"got {type(model).__name__}")


def _eval(lm):
    """Eval mode for the attack (each module's mode restored after)."""
    return eval_mode(lm if isinstance(lm, torch.nn.Module) else lm.net)


def vocab_size(lm) -> int:
    """The number of tokens the model embeds."""
    return int(lm.embedding_matrix.shape[0])


def _ids(ids, lm, name: str = "ids") -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.ndim != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected a 1-D integer tensor of token ids (T,), got "
                         f"{type(ids).__name__}{tuple(ids.shape) if isinstance(ids, torch.Tensor) else ''}")
    V = vocab_size(lm)
    if len(ids) == 0 or int(ids.min()) < 0 or int(ids.max()) >= V:
        raise ValueError(f"{name}: token ids must lie in [0, {V}) and be non-empty, got {ids.tolist()[:8]}...")
    return ids.long()


def _positions(positions, T: int) -> torch.Tensor:
    p = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    if len(p) == 0 or int(p.min()) < 0 or int(p.max()) >= T or len(p.unique()) != len(p):
        raise ValueError(f"positions: expected distinct editable positions in [0, {T}), got {p.tolist()}")
    return p


def with_suffix(ids: torch.Tensor, length: int, filler: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` (T,) followed by ``length`` copies of ``filler``, and the suffix positions (length,)."""
    length = check_int(length, "length", low=1)
    out = torch.cat([ids.long(), torch.full((length,), int(filler), dtype=torch.long)])
    return out, torch.arange(len(ids), len(out))


# --------------------------------------------------------------------------------------------------
# objectives: what the attacker wants at the last position


class Objective:
    """Base: ``loss(logits, resid)`` (B,) to minimise and ``success(logits, resid)`` (B,) bool, from the last
    position's logits (B, V) and, when ``layer`` is set, its residual stream at that block (B, d)."""

    layer: int | None = None

    def loss(self, logits: torch.Tensor, resid: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def success(self, logits: torch.Tensor, resid: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class TargetToken(Objective):
    """Make ``target`` the next-token argmax (loss: its cross entropy)."""

    def __init__(self, target: int):
        self.target = check_int(target, "target", low=0)

    def loss(self, logits, resid=None):
        return F.cross_entropy(logits, torch.full((len(logits),), self.target, device=logits.device),
                               reduction="none")

    def success(self, logits, resid=None):
        return logits.argmax(-1) == self.target


class AvoidToken(Objective):
    """Loss maximisation: lower the log-probability of ``token`` (the clean next token) until it is not the
    argmax (loss: its log-probability)."""

    def __init__(self, token: int):
        self.token = check_int(token, "token", low=0)

    def loss(self, logits, resid=None):
        return logits.log_softmax(-1)[:, self.token]

    def success(self, logits, resid=None):
        return logits.argmax(-1) != self.token


class MoveLatent(Objective):
    """Raise (``raise_=True``: make it fire) or silence latent ``latent`` of ``sae`` on the residual stream
    after block ``layer`` at the last position, while keeping the next-token distribution ``clean_logits`` (V,)
    (penalty ``keep`` x KL(clean || perturbed)). Success: the latent flips as asked and the argmax is kept."""

    def __init__(self, sae, layer: int, latent: int, clean_logits: torch.Tensor, raise_: bool = True,
                 keep: float = 1.0, scale: float = 1.0):
        self.sae, self.layer = sae, check_int(layer, "layer", low=0)
        self.latent = check_int(latent, "latent", low=0, high=int(sae.d_sae) - 1)
        self.clean = clean_logits.detach().log_softmax(-1)
        self.raise_, self.keep = bool(raise_), check_real(keep, "keep", low=0)
        self.scale = check_real(scale, "scale", low=1e-12)

    def _pre(self, resid):
        # the pre-activation moves even while the latent is silent (a TopK code is flat 0 there), so it gives
        # the gradient; encode() would detach its input
        pre = self.sae.pre_activations(resid.to(self.sae.dtype) * self.sae.norm_scale)
        return self.sae.activate(pre), pre[:, self.latent]

    def loss(self, logits, resid):
        _, pre = self._pre(resid)
        kl = (self.clean.exp() * (self.clean - logits.log_softmax(-1))).sum(-1)
        return (-pre if self.raise_ else pre) / self.scale + self.keep * kl

    def success(self, logits, resid):
        z, _ = self._pre(resid)
        flipped = z[:, self.latent] > 0 if self.raise_ else z[:, self.latent] <= 0
        return flipped & (logits.argmax(-1) == self.clean.argmax())


def _run(lm, emb: torch.Tensor, objective: Objective) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Last-position logits (B, V) and, if the objective needs it, residual (B, d) from embeddings (B, T, d)."""
    if objective.layer is None:
        return lm.forward_embeds(emb)[:, -1], None
    logits, resid = lm.forward_embeds(emb, resid=True)
    return logits[:, -1], resid[objective.layer][:, -1]


def evaluate(lm, ids: torch.Tensor, objective: Objective, batch_size: int = 256):
    """(loss (B,), success (B,)) of the objective on token sequences ids (B, T), in eval mode."""
    lm = token_lm(lm)
    with _eval(lm):
        return _evaluate(lm, ids, objective, batch_size)


@torch.no_grad()
def _evaluate(lm, ids: torch.Tensor, objective: Objective, batch_size: int = 256):
    losses, oks = [], []
    for i in range(0, len(ids), batch_size):
        logits, resid = _run(lm, lm.embed(ids[i:i + batch_size]), objective)
        losses.append(objective.loss(logits, resid))
        oks.append(objective.success(logits, resid))
    return torch.cat(losses), torch.cat(oks)


# --------------------------------------------------------------------------------------------------
# GCG


class GCGResult(NamedTuple):
    """What :func:`gcg` returns."""

    ids: torch.Tensor
    """(T,) the best sequence found (lowest loss)."""
    success: bool
    loss: float
    n_edits: int
    """Editable positions whose token differs from the starting sequence."""
    steps: int
    """Steps run (fewer than asked when ``early_stop`` hit a success)."""
    losses: list[float]
    """Best loss after each step."""


def _forbidden_mask(V: int, forbidden, device) -> torch.Tensor:
    mask = torch.zeros(V, dtype=torch.bool, device=device)
    if forbidden is not None:
        f = torch.as_tensor(list(forbidden), dtype=torch.long)
        if len(f) and (int(f.min()) < 0 or int(f.max()) >= V):
            raise ValueError(f"forbidden: token ids must lie in [0, {V}), got {f.tolist()}")
        mask[f.to(device)] = True
    if bool(mask.all()):
        raise ValueError("forbidden: every token is forbidden; nothing is left to substitute")
    return mask


@LM_ATTACKS.register("gcg")
def gcg(lm, ids: torch.Tensor, objective: Objective, positions, *, steps: int = 50, search_width: int = 128,
        topk: int = 32, n_replace: int = 1, forbidden=None, early_stop: bool = True, seed: int = 0,
        batch_size: int = 512) -> GCGResult:
    """Greedy coordinate gradient (Zou et al. 2023) on one sequence ``ids`` (T,), editing ``positions``.

    steps: optimisation steps; search_width: candidates evaluated per step; topk: substitutions kept per
    position from the one-hot gradient; n_replace: positions changed per candidate; forbidden: token ids never
    inserted (special tokens); early_stop: stop at the first success. Returns a :class:`GCGResult`.
    """
    lm = token_lm(lm)
    ids = _ids(ids, lm)
    pos = _positions(positions, len(ids))
    steps, width = check_int(steps, "steps", low=1), check_int(search_width, "search_width", low=1)
    V = vocab_size(lm)
    topk = min(check_int(topk, "topk", low=1), V)
    n_replace = min(check_int(n_replace, "n_replace", low=1), len(pos))
    W = lm.embedding_matrix
    banned = _forbidden_mask(V, forbidden, W.device)
    topk = min(topk, int((~banned).sum()))  # never reach into the forbidden tokens' +inf gradients
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    start, cur = ids.clone(), ids.clone()
    with _eval(lm):
        best_loss, best_ok = (float(v[0]) for v in _evaluate(lm, cur[None], objective))
        best, losses, step = cur.clone(), [], 0
        for step in range(1, steps + 1):
            if early_stop and best_ok:
                step -= 1
                break
            onehot = F.one_hot(cur[pos], V).to(W.dtype).requires_grad_()
            emb = lm.embed(cur[None]).detach().clone()
            emb[0, pos] = onehot @ W
            logits, resid = _run(lm, emb, objective)
            grad, = torch.autograd.grad(objective.loss(logits, resid).sum(), onehot)
            grad = grad.masked_fill(banned, float("inf"))
            top = (-grad).topk(topk, dim=1).indices.cpu()  # (m, topk)
            cand = cur.repeat(width, 1)
            where = torch.rand(width, len(pos), generator=g).argsort(1)[:, :n_replace]  # (B, n_replace)
            pick = torch.randint(topk, (width, n_replace), generator=g)
            cand.scatter_(1, pos[where], top[where, pick])
            loss, ok = _evaluate(lm, cand, objective, batch_size)
            i = int(loss.argmin())
            cur = cand[i]
            if float(loss[i]) < best_loss:
                best, best_loss, best_ok = cur.clone(), float(loss[i]), bool(ok[i])
            losses.append(best_loss)
    n_edits = int((best[pos] != start[pos]).sum())
    return GCGResult(best, bool(best_ok), best_loss, n_edits, step, losses)


def random_substitution(ids: torch.Tensor, positions, n_edits: int, vocab: int, *, forbidden=None,
                        seed: int = 0) -> torch.Tensor:
    """The control of a token attack: ``n_edits`` of ``positions`` (chosen at random) replaced by random
    allowed tokens different from the current ones. Returns the edited copy of ids (T,)."""
    pos = _positions(positions, len(ids))
    n_edits = check_int(n_edits, "n_edits", low=0, high=len(pos))
    vocab = check_int(vocab, "vocab", low=2)
    banned = _forbidden_mask(vocab, forbidden, "cpu")
    allowed = torch.nonzero(~banned)[:, 0]
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    out = ids.clone().long()
    for p in pos[torch.randperm(len(pos), generator=g)[:n_edits]].tolist():
        choices = allowed[allowed != out[p]]
        out[p] = choices[torch.randint(len(choices), (1,), generator=g)]
    return out


# --------------------------------------------------------------------------------------------------
# embedding-space PGD and its controls


class EmbeddingResult(NamedTuple):
    """What :func:`embedding_pgd` returns."""

    delta: torch.Tensor
    """(m, d): the perturbation of the editable positions' input embeddings."""
    success: bool
    loss: float
    projected_ids: torch.Tensor
    """(T,): each perturbed embedding replaced by its nearest allowed token embedding (L2)."""
    projected_success: bool
    n_projected_changes: int
    """Editable positions whose nearest token differs from the original token."""


def nearest_tokens(W: torch.Tensor, emb: torch.Tensor, banned: torch.Tensor | None = None) -> torch.Tensor:
    """The allowed token (m,) whose embedding (rows of W (V, d)) is nearest in L2 to each row of emb (m, d)."""
    dist = torch.cdist(emb.detach().to(W.dtype), W.detach())
    if banned is not None:
        dist = dist.masked_fill(banned, float("inf"))
    return dist.argmin(1)


@LM_ATTACKS.register("embedding_pgd")
def embedding_pgd(lm, ids: torch.Tensor, objective: Objective, positions, *, eps: float, norm: str = "2",
                  steps: int = 50, step_size: float | None = None, forbidden=None) -> EmbeddingResult:
    """PGD on the input embeddings of ``positions`` of ``ids`` (T,) inside the ``norm`` ball of radius ``eps``
    (L2 over all edited positions together, or L-inf per coordinate), keeping the best iterate; then the
    nearest-token projection of the result. step_size: default 2.5 eps / steps."""
    lm = token_lm(lm)
    ids = _ids(ids, lm)
    pos = _positions(positions, len(ids))
    eps = check_real(eps, "eps", low=0)
    norm = canonical_norm(norm)
    steps = check_int(steps, "steps", low=1)
    alpha = 2.5 * eps / steps if step_size is None else check_real(step_size, "step_size", low=0)
    W = lm.embedding_matrix
    banned = _forbidden_mask(vocab_size(lm), forbidden, W.device)
    base = lm.embed(ids[None]).detach()
    delta = torch.zeros(1, len(pos), base.shape[-1], dtype=base.dtype, requires_grad=True)
    best = (float("inf"), delta.detach().clone(), False)
    with _eval(lm):
        for _ in range(steps + 1):
            emb = base.clone()
            emb[:, pos] = emb[:, pos] + delta
            logits, resid = _run(lm, emb, objective)
            loss = objective.loss(logits, resid)
            ok = bool(objective.success(logits, resid)[0])
            value = float(loss.detach()[0])
            if (ok and not best[2]) or (ok == best[2] and value < best[0]):
                best = (value, delta.detach().clone(), ok)
            grad, = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():
                delta.sub_(steepest_step(grad, alpha, norm))
                delta.copy_(project_ball(delta, eps, norm))
        loss, d, ok = best
        proj = ids.clone()
        proj[pos] = nearest_tokens(W, base[0, pos] + d[0], banned).to(ids.device)
        _, pok = _evaluate(lm, proj[None], objective)
    return EmbeddingResult(d[0], ok, loss, proj, bool(pok[0]), int((proj[pos] != ids[pos]).sum()))


def random_embedding(delta: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The control of an embedding attack: a Gaussian direction with the same total L2 norm as ``delta``."""
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    r = torch.randn(delta.shape, generator=g, dtype=delta.dtype)
    return r * (delta.norm() / r.norm().clamp_min(1e-12))


@torch.no_grad()
def embedding_success(lm, ids: torch.Tensor, positions, delta: torch.Tensor, objective: Objective) -> bool:
    """Whether adding ``delta`` (m, d) to the embeddings of ``positions`` of ids (T,) achieves the objective."""
    lm = token_lm(lm)
    emb = lm.embed(ids[None]).detach().clone()
    emb[0, positions] = emb[0, positions] + delta.to(emb.dtype)
    return bool(objective.success(*_run(lm, emb, objective))[0])


@torch.no_grad()
def last_residuals(lm, ids: torch.Tensor, positions=None, delta: torch.Tensor | None = None) -> torch.Tensor:
    """The residual stream after every block at the last position, (B, n_layers, d), for ids (B, T) (optionally
    with ``delta`` (B, m, d) added to the embeddings of ``positions``): what the attacks move."""
    lm = token_lm(lm)
    emb = lm.embed(ids).detach().clone()
    if delta is not None:
        emb[:, positions] = emb[:, positions] + delta.to(emb.dtype)
    with _eval(lm):
        _, resid = lm.forward_embeds(emb, resid=True)
    return torch.stack([r[:, -1] for r in resid], 1)
