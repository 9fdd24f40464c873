"""Data specs -> datasets: ``load_data("text:notes/*.txt", tokenizer=tok)``, ``load_data("images:pets/")``, ...

Each source is one function ``loader(rest_of_spec, **options)`` and one registry line in ``DATA_SOURCES``.
Text sources return a :class:`~univ.sources.text.TokenDataset`; the others a :class:`univ.data.Dataset`.
The built-ins (``digits``, ``mnist1d``, ``corpus``) need no colon.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import data as builtin
from .._checks import check_finite, check_int, check_path, check_real
from . import DATA_SOURCES, split_spec
from .text import TokenDataset, load_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_data(spec: str, **options) -> TokenDataset | builtin.Dataset:
    """The dataset a spec names: ``text:<file|folder|glob>``, ``corpus`` (both need ``tokenizer=``),
    ``images:<folder>``, ``npy:<file>``, ``safetensors:<file>``, ``digits``, ``mnist1d``. ``options`` go to the
    source's loader; an unknown option is a TypeError listing the valid ones."""
    if isinstance(spec, str) and spec in DATA_SOURCES:  # the built-ins need no colon: "digits", "corpus"
        prefix, rest = spec, ""
    else:
        prefix, rest = split_spec(spec, "data", DATA_SOURCES)
    loader = DATA_SOURCES[prefix]
    _check_options(prefix, loader, options)
    return loader(rest, **options)


def corpus_path() -> Path:
    """The embedded default corpus: ~300 KB of the Python documentation topics (``pydoc_data.topics``, PSF
    licence), shipped as package data of univ.sources (see data/README.md)."""
    return Path(str(resources.files(__package__).joinpath("corpus.txt")))


def _text(rest: str, tokenizer=None, **options) -> TokenDataset:
    if not rest:
        raise ValueError("text: needs a file, folder or glob after 'text:', e.g. 'text:notes/*.txt'")
    _check_options("text", load_text, options, taken=("source", "tokenizer", "name"))
    return load_text(rest, tokenizer, name=f"text:{rest}", **options)


def _corpus(rest: str, tokenizer=None, **options) -> TokenDataset:
    _no_rest("corpus", rest)
    _check_options("corpus", load_text, options, taken=("source", "tokenizer", "name"))
    return load_text(corpus_path(), tokenizer, name="corpus", **options)


def _digits(rest: str, **options) -> builtin.Dataset:
    _no_rest("digits", rest)
    _check_options("digits", builtin.digits, options, taken=())
    return builtin.load("digits", **options)


def _mnist1d(rest: str, **options) -> builtin.Dataset:
    _no_rest("mnist1d", rest)
    _check_options("mnist1d", builtin.mnist1d, options, taken=())
    return builtin.load("mnist1d", **options)


def _images(rest: str, size: int | tuple[int, int] | None = None, mode: str | None = None,
            test_fraction: float = 0.25, seed: int = 0) -> builtin.Dataset:
    """``images:<folder>``: folder/<class>/<image>.png|.jpg|.jpeg -> (n, C, H, W) float32 in [0, 1].

    Labels index the sorted class-folder names (``extra["classes"]``). size: an int or (H, W) to resize to
    (bilinear); None keeps the images' size, which must then be the same for all. mode: "L" (1 channel) or
    "RGB" (3; alpha dropped); None: "L" when every image is greyscale, else "RGB". Hidden files and files with
    other suffixes are ignored. A seeded ``test_fraction`` of the images is the test split.
    """
    folder = _existing(rest, "images", want_dir=True)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode: must be None, 'L' or 'RGB', got {mode!r}")
    if size is not None:
        hw = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
        if len(hw) != 2:
            raise ValueError(f"size: expected an int or (height, width), got {size!r}")
        size = (check_int(hw[0], "size", 1), check_int(hw[1], "size", 1))
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("images: needs Pillow (pip install pillow)") from None

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"images: {str(folder)!r} has no class sub-folders; expected the layout "
                         f"{folder.name}/<class name>/<image>.png (PNG or JPEG), one sub-folder per class")
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(f for f in (folder / cls).iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"images: the class folder {str(folder / cls)!r} has no PNG or JPEG images")
        files += found
        labels += [label] * len(found)

    images = [_open_image(Image, f) for f in files]
    if mode is None:
        mode = "L" if all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images) else "RGB"
    if size is None:
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            i = next(i for i, im in enumerate(images) if im.size != images[0].size)
            raise ValueError(f"size: the images differ in size ({str(files[0])!r} is {images[0].size[::-1]}, "
                             f"{str(files[i])!r} is {images[i].size[::-1]}, as (height, width)); pass size=")
        size = images[0].size[::-1]
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != size[::-1]:
            im = im.resize(size[::-1], Image.Resampling.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2).contiguous()  # (n, H, W, C) -> (n, C, H, W)
    return _split(f"images:{rest}", x, torch.tensor(labels), test_fraction, seed, (0.0, 1.0),
                  {"classes": classes, "files": [str(f) for f in files]}, n_classes=len(classes))


def _npy(rest: str, y: str | None = None, test_fraction: float = 0.25, seed: int = 0,
         bounds: tuple[float, float] | None = None) -> builtin.Dataset:
    """``npy:<file>``: x (n, ...) from a .npy file; labels or targets y (n,) from the .npy file ``y=`` when given.
    A .npz archive holds ``x`` (and ``y``) by name. Loaded without pickle."""
    path = _existing(rest, "npy")
    x = _np_load(path)
    if isinstance(x, dict):
        if "x" not in x:
            raise ValueError(f"npy: {str(path)!r} is an .npz archive without an array named 'x' (it has {list(x)})")
        x, y_arr = x["x"], x.get("y")
    else:
        y_arr = None
    if y is not None:
        y_arr = _np_load(_existing(y, "y"))
        if isinstance(y_arr, dict):
            raise ValueError(f"y: {y!r} is an .npz archive; pass a .npy file of labels")
    return _arrays(f"npy:{rest}", x, y_arr, test_fraction, seed, bounds)


def _safetensors(rest: str, x: str = "x", y: str | None = None, test_fraction: float = 0.25, seed: int = 0,
                 bounds: tuple[float, float] | None = None) -> builtin.Dataset:
    """``safetensors:<file>``: the tensors named ``x`` (n, ...) and, when present (or named by ``y=``), ``y`` (n,)."""
    path = _existing(rest, "safetensors")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as e:  # SafetensorError and friends: a file that is not safetensors
        raise ValueError(f"safetensors: cannot read {str(path)!r} ({type(e).__name__}: {e})") from None
    for arg, key in (("x", x), ("y", y)):
        if key is not None and key not in tensors:
            raise ValueError(f"{arg}: {str(path)!r} has no tensor named {key!r}; it has {sorted(tensors)}")
    y_t = tensors.get(y if y is not None else "y")
    return _arrays(f"safetensors:{rest}", tensors[x].numpy(), None if y_t is None else y_t.numpy(),
                   test_fraction, seed, bounds)


DATA_SOURCES.register("text", _text)
DATA_SOURCES.register("corpus", _corpus)
DATA_SOURCES.register("images", _images)
DATA_SOURCES.register("npy", _npy)
DATA_SOURCES.register("safetensors", _safetensors)
DATA_SOURCES.register("digits", _digits)
DATA_SOURCES.register("mnist1d", _mnist1d)


def _no_rest(name: str, rest: str) -> None:
    if rest:
        raise ValueError(f"{name}: is a built-in and takes no argument after the colon, got {name}:{rest}")


def _check_options(what: str, fn, options: dict, taken: tuple[str, ...] | None = None) -> None:
    """Raise a TypeError naming the options ``fn`` does not accept; ``taken``: its parameters univ sets itself
    (default: the first, the rest of the spec)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # it forwards them and checks them itself
    taken = tuple(params)[:1] if taken is None else taken
    valid = [p for p in params if p not in taken]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {unknown}; valid options: {valid}")


def _existing(where: str, what: str, want_dir: bool = False) -> Path:
    if not where:
        raise ValueError(f"{what}: needs a path after '{what}:'")
    path = check_path(where, what).expanduser()
    if not path.exists():
        raise ValueError(f"{what}: {where!r} does not exist")
    if want_dir != path.is_dir():
        raise ValueError(f"{what}: {where!r} is {'not ' if want_dir else ''}a folder; expected a "
                         f"{'folder' if want_dir else 'file'}")
    return path


def _open_image(Image, path: Path):
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:  # PIL.UnidentifiedImageError, truncated files, decoder errors
        raise ValueError(f"images: cannot read {str(path)!r} as an image ({type(e).__name__}: {e})") from None


def _np_load(path: Path):
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # object arrays (need pickle), truncated or foreign files
        raise ValueError(f"npy: cannot read {str(path)!r} without pickle ({type(e).__name__}: {e})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            return {k: arr[k] for k in arr.files}
    return arr


def _arrays(name, x: np.ndarray, y: np.ndarray | None, test_fraction, seed, bounds) -> builtin.Dataset:
    """Arrays -> Dataset: float x as float32 (integer x, e.g. token ids, as int64); integer-valued y as int64
    labels (n_classes = max + 1), other y as float32 targets (n_classes 0); no y: zeros and one class."""
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x: expected an array (n, ...) with at least 2 dimensions and 1 row, got shape {x.shape}"
                         + (" (reshape 1-D data to (n, 1))" if x.ndim == 1 else ""))
    if x.dtype.kind not in "biuf":
        raise TypeError(f"x: expected real numbers, got dtype {x.dtype}")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64 if x.dtype.kind in "iu" else np.float32))
    check_finite(xt, "x")
    if y is None:
        yt, n_classes = torch.zeros(len(xt), dtype=torch.long), 1
    else:
        if y.shape != (len(xt),) or y.dtype.kind not in "biuf":
            raise ValueError(f"y: expected real labels of shape ({len(xt)},), got shape {y.shape} dtype {y.dtype}")
        yt = torch.from_numpy(np.ascontiguousarray(y))
        check_finite(yt, "y")
        if not yt.is_floating_point() or bool((yt == yt.round()).all()):
            yt = yt.long()
            if int(yt.min()) < 0:
                raise ValueError(f"y: class labels must be >= 0, got {int(yt.min())}")
            n_classes = int(yt.max()) + 1
        else:
            yt, n_classes = yt.float(), 0
    if bounds is not None:
        lo, hi = (check_real(b, "bounds") for b in bounds)
        if not lo < hi:
            raise ValueError(f"bounds: expected (low, high) with low < high, got {bounds!r}")
        bounds = (lo, hi)
    return _split(name, xt, yt, test_fraction, seed, bounds, {}, n_classes)


def _split(name, x, y, test_fraction, seed, bounds, extra, n_classes) -> builtin.Dataset:
    test_fraction = check_real(test_fraction, "test_fraction", 0.0, 1.0)
    perm = torch.from_numpy(np.random.default_rng(check_int(seed, "seed", 0)).permutation(len(x)))
    n_test = int(round(len(x) * test_fraction))
    if n_test == len(x):
        raise ValueError(f"test_fraction: {test_fraction} leaves no training samples out of {len(x)}")
    tr, te = perm[n_test:], perm[:n_test]
    if "files" in extra:
        files = extra.pop("files")
        extra.update(files_train=[files[i] for i in tr], files_test=[files[i] for i in te])
    return builtin.Dataset(name, x[tr], y[tr], x[te], y[te], tuple(x.shape[1:]), n_classes, bounds, extra)
