"""The one integrity mechanism for everything univ keeps on disk (cached models, activations, SAEs, run folders).

An *entry* is a folder. It is written under a temporary name beside its final place, a manifest with the size
and SHA-256 of every file is written last, and the folder is renamed into place: a reader either sees a
complete entry or none. A reader verifies the manifest before using an entry; a missing, partial or corrupt
entry is announced (a warning naming its path and what is wrong), removed, and the caller recomputes it.

    def make(folder):                       # fill a folder
        save_file(tensors, folder / "acts.safetensors")
    entry = write_entry(path, make, meta={"key": key})
    tensors = read_entry(path, lambda f: load_file(f / "acts.safetensors"))   # None: recompute
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

MANIFEST = "manifest.json"
FORMAT = 1
T = TypeVar("T")


class CacheWarning(UserWarning):
    """A cache entry was missing, partial or corrupt and is recomputed."""


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manifest(folder: Path, meta: dict | None) -> dict:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": file_digest(p)}
    return {"format": FORMAT, "files": files, "meta": meta or {}}


def write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Create or replace the single file ``path`` atomically: ``write(tmp)`` writes a temporary file beside
    it, which is then renamed over ``path`` (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_entry(path: str | Path, fill: Callable[[Path], None], meta: dict | None = None) -> Path:
    """Create the entry ``path`` atomically: ``fill(tmp)`` writes the files into a temporary folder beside it,
    the manifest is written last, and the folder is renamed into place (an older entry is replaced).
    Returns ``path``. If ``fill`` raises, nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        fill(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp, meta), indent=1))
        os.chmod(tmp, 0o755)
        if path.exists():  # replace: move the old entry aside first (rename cannot replace a full folder)
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{id(tmp)}")
            try:
                os.replace(path, old)
            except FileNotFoundError:  # another process removed it meanwhile
                old = None
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, path)
            except OSError:  # another process finished the same entry first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def verify_entry(path: str | Path) -> str | None:
    """None when the entry at ``path`` is complete and every file matches its manifest; else what is wrong."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an unfinished or foreign entry)"
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is not valid"
    for rel, info in files.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != info.get("bytes"):
            return f"{rel} has {f.stat().st_size} bytes, the manifest says {info.get('bytes')}"
        if file_digest(f) != info.get("sha256"):
            return f"{rel} does not match its SHA-256 in the manifest (changed or corrupt)"
    return None


def entry_meta(path: str | Path) -> dict:
    """The ``meta`` stored in a verified entry's manifest."""
    return json.loads((Path(path) / MANIFEST).read_text()).get("meta", {})


def discard(path: str | Path, why: str, what: str = "cache entry") -> None:
    """Announce that the entry at ``path`` cannot be used (``why``) and remove it so it is recomputed."""
    warnings.warn(f"{what} {str(path)!r} is {why}; it is removed and recomputed", CacheWarning, stacklevel=3)
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def read_entry(path: str | Path, load: Callable[[Path], T], what: str = "cache entry") -> T | None:
    """``load(path)`` for a verified entry; None when there is no entry. A partial or corrupt entry, or one
    whose ``load`` fails, is announced with its path (:class:`CacheWarning`), removed, and None returned, so
    the caller recomputes it."""
    path = Path(path)
    if not path.exists():
        return None
    problem = verify_entry(path)
    if problem is None:
        try:
            return load(path)
        except Exception as e:  # a verified file that still cannot be read is as bad as a corrupt one
            problem = f"unreadable ({type(e).__name__}: {e})"
    discard(path, f"not usable: {problem}", what)
    return None
