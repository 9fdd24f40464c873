"""Zoo models as job arguments. Not every model pickles (a TransformerLens bridge holds local classes), and a
worker on another node needs the weights anyway, so a job gets a model as its spec and weights
(:func:`portable`) and rebuilds it (:func:`rebuild`), once per worker process and device."""

from __future__ import annotations

import json
from collections import OrderedDict

_BUILT: OrderedDict = OrderedDict()
KEEP = 16
"""Rebuilt models a worker keeps (small zoo models: a grid's cells reuse them)."""


def portable(model) -> dict:
    """{"spec": the zoo spec, "state": the weights on the CPU}: what a worker rebuilds ``model`` from."""
    from ..models import model_spec

    return {"spec": model_spec(model), "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def rebuild(arg: dict, device="cpu"):
    """The zoo model ``arg`` (from :func:`portable`) on ``device``, in eval mode; built once per process."""
    from ..models import build_model
    from ..utils import tensor_hash

    key = (json.dumps(arg["spec"], sort_keys=True, default=str), tensor_hash(*arg["state"].values()), str(device))
    if key in _BUILT:
        _BUILT.move_to_end(key)
        return _BUILT[key]
    model = build_model(arg["spec"]["name"], **arg["spec"]["config"])
    model.load_state_dict(arg["state"], strict=True)
    model.eval().to(device)
    _BUILT[key] = model
    while len(_BUILT) > KEEP:
        _BUILT.popitem(last=False)
    return model
