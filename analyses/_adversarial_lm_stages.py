"""The work of ``univ run adversarial_lm``: models, prompts, attacks and controls; the reading of the changes is in
``_adversarial_lm_reading.py``. Settings and entry point: ``analyses/adversarial_lm.py``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tqdm.auto import tqdm

from univ.adversarial import lm as alm
from univ.cache import cached_sae
from univ.lm_zoo import cached_lm, corpus_tokenizer, corpus_tokens
from univ.report import Report
from univ.utils import seed_everything

from ._adversarial_lm_reading import answer, figures, projection_tables, sharing_and_transfer, wilson

if TYPE_CHECKING:
    from .adversarial_lm import Config

CONTEXT = 32
TOKEN_ATTACKS = ("gcg suffix", "gcg in-place", "gcg loss-max", "SAE-targeted")
EMBED_ATTACKS = ("embedding PGD L2", "embedding PGD L-inf")
N_DRAWS = 16
"""Random substitutions drawn per attack; the one whose activation change is closest to the attack's is the
size-matched control."""


def _models(cfg: Config, data) -> tuple[dict, pd.DataFrame]:
    models, rows = {}, []
    mcfg = {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": 4}
    jobs = [(a, s) for a in cfg.archs for s in cfg.seeds]
    for arch, seed in tqdm(jobs, desc="language models", leave=False):
        model, metrics = cached_lm(arch, data, seed=seed, steps=cfg.train_steps, model_cfg=mcfg, progress=False)
        model.eval()
        models[f"{arch}-s{seed}"] = model
        rows.append({"model": f"{arch}-s{seed}", "arch": arch, "seed": seed, **metrics})
    return models, pd.DataFrame(rows)


@torch.no_grad()
def _prompts(cfg: Config, data, models: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out prompts (n, prompt_len) and one target token each: a frequent corpus token that no model
    predicts there (shared by all models, so suffixes can transfer)."""
    n_test = max(1, int(len(data) * 0.1))  # train_lm holds out the last 10% of contexts
    held = data.input_ids[-n_test:]
    g = torch.Generator().manual_seed(cfg.seed)
    prompts = held[torch.randperm(len(held), generator=g)[:cfg.n_prompts], :cfg.prompt_len]
    counts = torch.bincount(data.input_ids.reshape(-1), minlength=data.vocab_size)
    counts[:3] = 0  # the special tokens
    frequent = counts.argsort(descending=True)[:64]
    preds = torch.stack([m(prompts)[:, -1].argmax(-1) for m in models.values()], 1)  # (n, n_models)
    targets = []
    for i in range(len(prompts)):
        ok = frequent[~torch.isin(frequent, preds[i])]
        targets.append(ok[torch.randint(len(ok), (1,), generator=g)].item())
    return prompts, torch.tensor(targets)


@torch.no_grad()
def _residual_sample(model, data, n: int) -> list[torch.Tensor]:
    """The residual stream after every block on every real token of n training contexts: one (N, d) per layer."""
    ids, mask = data.input_ids[:n], data.attention_mask[:n].bool()
    outs = [[] for _ in range(model.n_layers)]
    for i in range(0, n, 64):
        _, resid = model.forward_embeds(model.embed(ids[i:i + 64]), resid=True)
        for layer, r in enumerate(resid):
            outs[layer].append(r[mask[i:i + 64]])
    return [torch.cat(o).double() for o in outs]


def _saes(cfg: Config, name: str, acts: list[torch.Tensor]) -> list:
    return [cached_sae("topk", a.float(), key={"model": name, "layer": layer}, d_sae=cfg.expansion * cfg.d_model,
                       k=cfg.k, seed=cfg.seed, fit_max_steps=cfg.sae_steps, fit_patience=None, fit_progress=False,
                       fit_batch_size=256, fit_seed=cfg.seed)
            for layer, a in enumerate(acts)]


def _attack(cfg: Config, name: str, model, sae, prompts, targets, forbidden, filler, emb_scale) -> list[dict]:
    """Every attack and its matched control on every prompt: one record per (attack, prompt) with the starting,
    adversarial and control inputs (token ids, or embedding deltas)."""
    kw = dict(steps=cfg.gcg_steps, search_width=cfg.search_width, topk=cfg.topk, forbidden=forbidden)
    V, P, m = alm.vocab_size(model), cfg.prompt_len, cfg.n_edit
    eps2 = cfg.pgd_eps * emb_scale
    eps_inf = eps2 / math.sqrt(m * cfg.d_model)
    inplace = torch.arange(P - m, P)
    recs = []
    layer = cfg.n_layers - 1
    live = sae_live = None
    for i, (prompt, target) in enumerate(tqdm(list(zip(prompts, targets.tolist())), desc=f"attack {name}",
                                              leave=False)):
        seed = cfg.seed * 100_003 + i
        clean_logits = model(prompt[None])[0, -1].detach()
        suffix_ids, suffix_pos = alm.with_suffix(prompt, m, filler)
        jobs = [("gcg suffix", suffix_ids, suffix_pos, alm.TargetToken(target)),
                ("gcg in-place", prompt, inplace, alm.TargetToken(target)),
                ("gcg loss-max", prompt, inplace, alm.AvoidToken(int(clean_logits.argmax())))]
        if i < cfg.n_sae_prompts:
            if live is None:
                live, sae_live = _sae_candidates(sae, model, prompts, layer)
            with torch.no_grad():
                z0 = sae.encode(alm.last_residuals(model, prompt[None])[:, layer].float())[0]
            off = sae_live[(z0[sae_live] <= 0)]
            g = torch.Generator().manual_seed(seed)
            lat = int(off[torch.randint(len(off), (1,), generator=g)]) if len(off) else int(sae_live[0])
            jobs.append(("SAE-targeted", prompt, inplace,
                         alm.MoveLatent(sae, layer, lat, clean_logits, raise_=True, keep=1.0)))
        for attack, ids, pos, obj in jobs:
            res = alm.gcg(model, ids, obj, pos, seed=seed, **kw)
            ctls = torch.stack([alm.random_substitution(ids, pos, res.n_edits, V, forbidden=forbidden, seed=seed + j)
                                for j in range(1, N_DRAWS + 1)])
            ctl_ok = bool(alm.evaluate(model, ctls[:1], obj)[1][0])
            recs.append({"model": name, "attack": attack, "prompt": i, "target": target, "success": res.success,
                         "control_success": ctl_ok, "n_edits": res.n_edits, "steps": res.steps,
                         "start": ids, "adv": res.ids, "control": ctls[0], "positions": pos,
                         "control_matched": ctls[_nearest_change(model, ids, res.ids, ctls)],
                         **_footprint(model, ids, res.ids)})
        for attack, eps, norm in (("embedding PGD L2", eps2, "2"), ("embedding PGD L-inf", eps_inf, "inf")):
            obj = alm.TargetToken(target)
            res = alm.embedding_pgd(model, prompt, obj, inplace, eps=eps, norm=norm, steps=cfg.pgd_steps,
                                    forbidden=forbidden)
            rnd = alm.random_embedding(res.delta, seed=seed + 2)
            recs.append({"model": name, "attack": attack, "prompt": i, "target": target, "success": res.success,
                         "control_success": alm.embedding_success(model, prompt, inplace, rnd, obj),
                         "projected_success": res.projected_success, "n_edits": res.n_projected_changes,
                         "delta_norm": float(res.delta.norm()), "start": prompt, "adv_delta": res.delta,
                         "control_delta": rnd, "positions": inplace,
                         "control_matched_delta": _matched_scale(model, prompt, inplace, res.delta, rnd)})
    return recs


@torch.no_grad()
def _footprint(model, start, adv) -> dict:
    """How much an edit changes the model (Li et al.'s question for SAE-targeted edits): KL(clean || adversarial)
    of the next-token distribution, and ||r|| / ||h|| of the last block's residual at the last position."""
    logp = model(torch.stack([start, adv]))[:, -1].log_softmax(-1)
    r = alm.last_residuals(model, torch.stack([start, adv]))[:, -1]
    return {"kl": float((logp[0].exp() * (logp[0] - logp[1])).sum()),
            "rel_change": float((r[1] - r[0]).norm() / r[0].norm())}


@torch.no_grad()
def _nearest_change(model, start, adv, ctls) -> int:
    """Which random substitution changes the last block's residual (last position) by the amount closest to the
    attack's: the control for code metrics, which depend on the size of the change."""
    r = alm.last_residuals(model, torch.cat([start[None], adv[None], ctls]))[:, -1]
    want = (r[1] - r[0]).norm()
    return int(((r[2:] - r[0]).norm(dim=1) - want).abs().argmin())


@torch.no_grad()
def _matched_scale(model, prompt, pos, delta, rnd, iters: int = 5) -> torch.Tensor:
    """``rnd`` rescaled until its change of the last block's residual (last position) is as large as ``delta``'s."""
    r0 = alm.last_residuals(model, prompt[None])[0, -1]
    want = (alm.last_residuals(model, prompt[None], pos, delta[None])[0, -1] - r0).norm()
    out = rnd
    for _ in range(iters):
        got = (alm.last_residuals(model, prompt[None], pos, out[None])[0, -1] - r0).norm()
        out = out * float((want / got.clamp_min(1e-12)).clamp(0.1, 10.0))
    return out


@torch.no_grad()
def _sae_candidates(sae, model, prompts, layer) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents that fire on 2-50% of the prompts' last positions: the SAE-targeted attack raises one that is off."""
    z = sae.encode(alm.last_residuals(model, prompts)[:, layer].float())
    freq = (z > 0).float().mean(0)
    live = torch.nonzero((freq >= 0.02) & (freq <= 0.5))[:, 0]
    return live, live if len(live) else torch.nonzero(freq > 0)[:, 0]


def _success_table(recs: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for r in recs])
    rows = []
    for (model, attack), g in list(df.groupby(["model", "attack"], sort=False)) + [
            (("all", a), g) for a, g in df.groupby("attack", sort=False)]:
        n = len(g)
        row = {"model": model, "attack": attack, "n": n}
        for col, label in (("success", "attack"), ("control_success", "control"),
                           ("projected_success", "projected")):
            if col in g and g[col].notna().all():
                rate, lo, hi = wilson(int(g[col].sum()), n)
                row |= {f"{label}_rate": rate, f"{label}_ci_low": lo, f"{label}_ci_high": hi}
        row["mean_edits"] = float(g.n_edits.mean())
        for col in ("kl", "rel_change"):
            if col in g and g[col].notna().all():
                row[f"mean_{col}"] = float(g[col].mean())
        if "delta_norm" in g and g.delta_norm.notna().all():
            row["mean_delta_norm"] = float(g.delta_norm.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg: Config) -> Report:
    seed_everything(cfg.seed)
    tok = corpus_tokenizer(cfg.vocab_size)
    data = corpus_tokens(tok, context=CONTEXT)
    models, fits = _models(cfg, data)
    prompts, targets = _prompts(cfg, data, models)
    forbidden = [tok.pad_token_id, tok.unk_token_id, tok.bos_token_id]
    filler = tok.convert_tokens_to_ids("!")
    recs, saes, acts = [], {}, {}
    for name, model in models.items():
        acts[name] = _residual_sample(model, data, cfg.n_sae_contexts)
        saes[name] = _saes(cfg, name, acts[name])
        scale = float(model.embedding_matrix.detach().norm(dim=1).median())
        recs += _attack(cfg, name, model, saes[name][-1], prompts, targets, forbidden, filler, scale)
    success = _success_table(recs)
    proj, pooled = projection_tables(recs, models, saes, acts, cfg.seed)
    sharing, transfer, predict = sharing_and_transfer(recs, models, saes, acts, cfg.seed)

    report = Report("adversarial_lm")
    report.add_text("answer", answer(success, pooled, sharing, transfer, predict))
    report.add_table("models", fits, f"The language models: byte-level BPE ({len(tok)} tokens) on the embedded corpus, "
                     f"{CONTEXT}-token contexts, next-token loss on held-out contexts (test_loss, nats).")
    report.add_table("success", success,
                     f"Success per attack on {cfg.n_prompts} held-out prompts ({cfg.prompt_len} tokens; {cfg.n_edit} "
                     "editable tokens), with 95% Wilson intervals. control = random token substitutions with the same "
                     "number of edits (token attacks), or a random embedding perturbation of the same L2 norm "
                     "(embedding PGD); projected = embedding PGD's nearest-token projection. Target attacks make a "
                     "frequent token that no model predicts the next-token argmax; loss-max pushes the clean "
                     "prediction off; SAE-targeted switches on an SAE latent of the last block that is off, keeping "
                     "the argmax. mean_kl: KL(clean || adversarial) of the next-token distribution; mean_rel_change: "
                     "||r|| / ||h|| of the last block's residual at the last position (token attacks). model 'all' "
                     "pools the models.")
    report.summary = "success"
    report.add_table("projection_pooled", pooled,
                     "**Is r moving in an interesting direction?** Pooled over models: the fraction of the "
                     "residual-stream change at the last position (||r||^2) explained by the 5 best directions of each "
                     "basis (frac_top5), for the attack and for its control, and the paired per-prompt difference "
                     "with a 95% CI.")
    report.add_table("projection", proj, "The same per model and layer.", inline=False)
    report.add_table("latent_sharing", sharing,
                     "The 10 SAE latents (last block) that GCG suffixes move most in model A: the fraction whose "
                     "partner in B (most correlated latent on the same corpus tokens) is among the 10 that B's own "
                     "attack on the same prompts moves most, beside the same for 10 random live latents of A.")
    report.add_table("transfer", transfer, "Success of A's adversarial suffix when fed to B (same prompt and target), "
                     "beside A's random-substitution control on B; Wilson 95% intervals.")
    report.add_table("transfer_prediction", predict,
                     "Does latent sharing predict transfer? Per (A, B, prompt): the cosine between A's code change "
                     "mapped to B's partner latents and B's own code change on A's adversarial input; mean among "
                     "suffixes that transfer and that do not, difference with a 95% CI.")
    for fname, (fig, text) in figures(success, pooled, transfer, sharing).items():
        report.add_figure(fname, fig, text)
    return report
