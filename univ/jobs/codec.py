"""A job's result as a shard: tensors in one safetensors file, everything else in JSON (nothing is pickled).

A result is any nesting of dicts, lists, tuples, strings, numbers, None, torch tensors, numpy arrays and
pandas DataFrames. Every executor's results go through this codec, the in-process one included, so a grid
returns the same objects (values, dtypes, row order) whichever executor ran it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULT = "result.json"
TENSORS = "tensors.safetensors"


def _encode(obj, tensors: dict):
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone(memory_format=torch.contiguous_format)  # own, packed storage
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__array__": name}
    if hasattr(obj, "columns") and hasattr(obj, "dtypes"):  # a pandas DataFrame
        return {"__frame__": {"columns": [str(c) for c in obj.columns],
                              "dtypes": [str(t) for t in obj.dtypes],
                              "index": _encode(obj.index.tolist(), tensors),
                              "data": [_encode(obj[c].tolist(), tensors) for c in obj.columns],
                              "attrs": _encode(dict(obj.attrs), tensors)}}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"result: a job result may hold tensors, arrays, DataFrames, dicts, lists, tuples, strings, "
                    f"numbers and None; got {type(obj).__module__}.{type(obj).__name__}")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__array__" in obj:
        return tensors[obj["__array__"]].numpy()
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if "__frame__" in obj:
        import pandas as pd

        f = obj["__frame__"]
        cols = {c: pd.Series(_decode(d, tensors), dtype=t if t != "object" else object)
                for c, t, d in zip(f["columns"], f["dtypes"], f["data"])}
        frame = pd.DataFrame(cols, columns=f["columns"])
        index = _decode(f["index"], tensors)
        if index != list(range(len(frame))):
            frame.index = index
        frame.attrs.update(_decode(f.get("attrs", {}), tensors))
        return frame
    return {k: _decode(v, tensors) for k, v in obj.items()}


def write_result(folder: Path, result) -> None:
    """Write ``result`` into the (temporary) shard folder."""
    from safetensors.torch import save_file

    tensors: dict = {}
    encoded = _encode(result, tensors)
    if tensors:
        save_file(tensors, str(folder / TENSORS))
    (folder / RESULT).write_text(json.dumps(encoded))


def read_result(folder: Path):
    """The result a verified shard holds."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / TENSORS)) if (folder / TENSORS).exists() else {}
    return _decode(json.loads((folder / RESULT).read_text()), tensors)
