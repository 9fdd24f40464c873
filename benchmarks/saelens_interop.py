"""univ <-> SAELens: folders written by one, loaded by the other, give the same codes and reconstructions.

    python benchmarks/saelens_interop.py

1. univ -> SAELens: every univ kind, trained with and without input normalisation, saved by
   ``univ.sae.save`` and loaded with SAELens's ``SAE.load_from_disk``; SAELens's encode/decode against univ's.
2. SAELens -> univ: SAELens's standard, topk (also with rescale_acts_by_decoder_norm), jumprelu and gated
   SAEs with random weights, saved with SAELens's ``save_model`` and loaded with ``univ.sae.load``.

Prints the largest absolute difference per case (and relative to the largest value) and the sae-lens
version. sae-lens lives in its own venv, ``benchmarks/.venv-saelens`` (created on first use: the local
CPU wheel ``torch==2.13.0`` first, then ``sae-lens`` with a constraint keeping torch there). The two
sides run in separate processes and exchange folders and .safetensors arrays only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".venv-saelens"
D_IN, D_SAE, N = 16, 64, 512
SAELENS_CASES = {"standard": {}, "topk": {"k": 8}, "topk-rescaled": {"k": 8, "rescale_acts_by_decoder_norm": True},
                 "jumprelu": {}, "gated": {}}


def _ensure_peer_venv() -> Path:
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: an unpinned torch is a multi-GB CUDA build
        pin = PEER_VENV / "constraints.txt"
        pin.write_text("torch==2.13.0\n")
        subprocess.run([*pip, "sae-lens", "-c", str(pin)], check=True)
    return py


def _write_out(sae, z, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"codes": z.contiguous(), "recon": sae.decode(z).contiguous()}, str(folder / "saelens_out.safetensors"))


def peer(work: Path) -> None:
    """The SAELens side (run in its venv): load univ's folders, write SAELens's own, record outputs."""
    import sae_lens
    import torch
    from sae_lens import SAE
    from sae_lens.registry import get_sae_class
    from sae_lens.saes.sae import SAEMetadata
    from safetensors.torch import load_file

    x = load_file(str(work / "x.safetensors"))["x"]
    seen = {}
    for folder in sorted((work / "univ").iterdir()):
        sae = SAE.load_from_disk(str(folder))
        m = sae.cfg.metadata
        seen[folder.name] = [m.hook_name, m.model_name, m.context_size, m.prepend_bos, sae.cfg.normalize_activations]
        with torch.no_grad():
            z = sae.encode(x)
            _write_out(sae, z, folder)
    g = torch.Generator().manual_seed(0)
    md = SAEMetadata(hook_name="blocks.2.hook_resid_post", model_name="gpt2", context_size=128, prepend_bos=True)
    for name, extra in SAELENS_CASES.items():
        arch = name.split("-")[0]
        sae_cls, cfg_cls = get_sae_class(arch)
        sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=md, **extra))
        with torch.no_grad():
            for pname, p in sae.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.1))
                if pname == "threshold":
                    p.abs_().add_(0.05)
            z = sae.encode(x)
            out = work / "saelens" / name
            sae.save_model(str(out))
            _write_out(sae, z, out)
    (work / "version.json").write_text(json.dumps({"sae_lens": sae_lens.__version__, "torch": torch.__version__,
                                                   "metadata": seen}))


def _diff(a, b) -> tuple[float, float]:
    err = float((a.double() - b.double()).abs().max())
    return err, err / max(float(b.abs().max()), 1e-30)


def main() -> None:
    sys.path.insert(0, str(HERE.parent))  # this checkout's univ, not another installed one
    import torch
    from safetensors.torch import load_file, save_file

    import univ.sae as S

    print("univ from", S.__file__)
    py = _ensure_peer_venv()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(N, D_IN, generator=g) * 3 + 1  # far from unit norm: normalisation has work to do
        save_file({"x": x}, str(work / "x.safetensors"))
        ours = {}
        for kind, cls in S.SAE_KINDS.items():
            for normalize in (False, True):
                kw = {"k": 8} if "k" in cls.hparam_names() else {}
                sae = cls(D_IN, D_SAE, seed=0, **kw).fit(x, max_steps=200, normalize=normalize, progress=False)
                name = f"{kind}-{'normalised' if normalize else 'raw'}"
                S.save(sae, work / "univ" / name, hook_name="blocks.2.hook_resid_post", model_name="gpt2",
                       context_size=128, prepend_bos=True)
                ours[name] = sae
        subprocess.run([str(py), __file__, "--peer", str(work)], check=True)
        version = json.loads((work / "version.json").read_text())
        print(f"sae-lens {version['sae_lens']} (torch {version['torch']}); univ torch {torch.__version__}")
        want = ["blocks.2.hook_resid_post", "gpt2", 128, True, "none"]
        bad = {k: v for k, v in version["metadata"].items() if v != want}
        print(f"metadata SAELens reads from univ's folders (hook_name, model_name, context_size, prepend_bos, "
              f"normalize_activations): {want if not bad else bad} in {len(version['metadata']) - len(bad)} "
              f"of {len(version['metadata'])}")
        print(f"{'direction':16} {'case':22} {'codes max|diff|':>16} {'(relative)':>11} {'recon max|diff|':>16} "
              f"{'(relative)':>11}  architecture")
        worst = 0.0
        rows = [("univ -> SAELens", name, sae, work / "univ" / name) for name, sae in ours.items()]
        rows += [("SAELens -> univ", name, None, work / "saelens" / name) for name in SAELENS_CASES]
        for direction, name, sae, folder in rows:
            theirs = load_file(str(folder / "saelens_out.safetensors"))
            sae = sae if sae is not None else S.load(folder)
            with torch.no_grad():
                z = sae.encode(x)
                dz, rz = _diff(z, theirs["codes"])
                dr, rr = _diff(sae.decode(z), theirs["recon"])
            arch = json.loads((folder / "cfg.json").read_text())["architecture"]
            worst = max(worst, rz, rr)
            print(f"{direction:16} {name:22} {dz:16.3g} {rz:11.2g} {dr:16.3g} {rr:11.2g}  {arch} -> {sae.kind}")
        print(f"largest relative difference: {worst:.2g} ({'within' if worst <= 1e-5 else 'OVER'} 1e-5)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peer":
        peer(Path(sys.argv[2]))
    else:
        main()
