"""Training checkpoints for ``fit``: tensors in safetensors, everything else in a JSON manifest.

    <path>                        the manifest (JSON): format, version, the tensor file's name and sha256,
                                  and the caller's JSON-able state (step, schedule, data position, ...)
    <path>.<token>.safetensors    the tensors (SAE state, optimizer moments, ...)

Both files are written under temporary names and renamed into place, the manifest last; the previous
tensor file is removed only once the new manifest is in place. A crash at any moment therefore leaves a
manifest whose tensor file exists and matches its hash. Reading never unpickles anything: a file that is
not such a manifest (a torch.save/pickle file, a partial or corrupt checkpoint) raises
:class:`CheckpointError`, for the caller to announce and start afresh.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
from pathlib import Path

from torch import Tensor

FORMAT, VERSION = "univ.sae.fit-checkpoint", 1
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # a pickle protocol >= 2 stream; torch.save's zip archive


class CheckpointError(ValueError):
    """A file at the checkpoint path that is not a complete, intact univ checkpoint."""


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def write(path: str | os.PathLike, tensors: dict[str, Tensor], state: dict) -> None:
    """Write a checkpoint: ``tensors`` (name -> tensor) and ``state`` (JSON-able) at ``path``."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    name = f"{path.name}.{secrets.token_hex(6)}.safetensors"
    _atomic_write(path.parent / name, blob)
    manifest = {"format": FORMAT, "version": VERSION, "tensors": name,
                "sha256": hashlib.sha256(blob).hexdigest(), "state": state}
    _atomic_write(path, json.dumps(manifest, indent=1).encode())
    for old in path.parent.glob(glob.escape(path.name) + ".*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read(path: str | os.PathLike, device=None) -> tuple[dict[str, Tensor], dict]:
    """(tensors, state) of the checkpoint at ``path``; CheckpointError saying what is wrong when the file
    is not an intact checkpoint written by :func:`write` (nothing in it is ever unpickled)."""
    from safetensors.torch import load

    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(_PICKLE_MAGIC):
        raise CheckpointError("is a pickle or torch.save file (an old checkpoint format?), which univ never "
                              "unpickles")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"is not a univ checkpoint manifest (not JSON: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"is not a univ checkpoint manifest (no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"has format version {manifest.get('version')!r}; this univ reads {VERSION}")
    name, state = manifest.get("tensors"), manifest.get("state")
    if not isinstance(name, str) or Path(name).name != name or not isinstance(state, dict):
        raise CheckpointError("has a malformed manifest")
    try:
        blob = (path.parent / name).read_bytes()
    except OSError:
        raise CheckpointError(f"names the tensor file {name!r}, which is missing") from None
    if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(f"names the tensor file {name!r}, whose content does not match its sha256")
    try:
        tensors = {k: v.clone() for k, v in load(blob).items()}
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise CheckpointError(f"has an unreadable tensor file {name!r} ({e})") from None
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, state


def flatten_optimizer(sd: dict) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's ``state_dict()`` split into tensors ("optimizer.<param>.<key>") and JSON-able rest."""
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = v
            else:
                scalars.setdefault(str(idx), {})[key] = v
    return tensors, {"param_groups": sd["param_groups"], "state": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    """The inverse of :func:`flatten_optimizer` (JSON lists become tuples again, e.g. Adam's betas)."""
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, d in meta["state"].items():
        state.setdefault(int(idx), {}).update(d)
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def same_shapes(got: dict[str, Tensor], want: dict[str, Tensor], what: str) -> None:
    """CheckpointError unless ``got`` has exactly the names of ``want``, each with its shape and dtype."""
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise CheckpointError(f"does not hold the {what} expected (missing {missing}, unexpected {extra})")
    for k, v in want.items():
        if got[k].shape != v.shape or got[k].dtype != v.dtype:
            raise CheckpointError(f"holds {what} tensor {k!r} as {got[k].dtype} {tuple(got[k].shape)}, "
                                  f"expected {v.dtype} {tuple(v.shape)}")

