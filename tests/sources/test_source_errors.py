"""Bad specs, folders, options and batches raise exactly ValueError or TypeError, one line, naming the
argument and what is wrong or missing."""


import pytest
import torch
from named_errors import assert_named_error
from torch import nn

import univ
from univ.sources import load_model, untrained_twin

TOY = nn.Sequential(nn.Embedding(20, 4), nn.Linear(4, 4)).eval()
IDS = torch.randint(0, 20, (3, 5))
MASK = torch.ones(3, 5, dtype=torch.long)


def _folder(tmp_path, files):
    folder = tmp_path / "f"
    folder.mkdir(exist_ok=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def _padded_row():
    mask = MASK.clone()
    mask[1] = 0
    return mask


CASES = [  # (id, call(tmp_path), exception, message)
    ("prefix", lambda p: load_model("foo:bar"), ValueError,
     r"spec: unknown source 'foo:' in 'foo:bar'; valid prefixes: \[.*'hf:'.*'tl:'.*'py:'.*'zoo:'.*'torchvision:'"),
    ("no-prefix", lambda p: load_model("gpt2"), ValueError, "spec: unknown source 'gpt2'.*valid prefixes"),
    ("not-str", lambda p: load_model(None), ValueError, "spec: expected a spec string"),
    ("empty-rest", lambda p: load_model("hf:"), ValueError, "spec: 'hf:' names no model after 'hf:'"),
    ("no-config", lambda p: load_model(f"hf:{_folder(p, [])}"), ValueError,
     "is not a HuggingFace model folder: no config.json"),
    ("no-weights", lambda p: load_model(f"hf:{_folder(p, ['config.json'])}"), ValueError,
     r"is not a HuggingFace model folder: no weights \(one of \['model.safetensors'"),
    ("tl-no-weights", lambda p: load_model(f"tl:{_folder(p, ['config.json'])}"), ValueError, "no weights"),
    ("no-folder", lambda p: load_model(f"hf:{p / 'missing'}"), ValueError, "missing: no such folder"),
    ("file", lambda p: load_model(f"hf:{_folder(p, ['config.json']) / 'config.json'}"), ValueError, "is a file"),
    ("task", lambda p: load_model(f"hf:{_folder(p, [])}", task="chat"), ValueError, "task: unknown value 'chat'"),
    ("option", lambda p: load_model("zoo:mlp", color="red"), TypeError, "color"),
    ("py-form", lambda p: load_model("py:just_a_module"), ValueError, "spec: expected py:<module>:<factory>"),
    ("py-import", lambda p: load_model("py:no_such_module_xyz:make"), ValueError, "spec: cannot import"),
    ("py-factory", lambda p: load_model("py:torch.nn:no_such"), ValueError, "has no callable 'no_such'"),
    ("py-not-module", lambda p: load_model("py:builtins:dict"), ValueError, "returned dict, not a torch.nn.Module"),
    ("py-call", lambda p: load_model("py:math:sqrt", kwargs={"x": 4}), TypeError, r"kwargs: sqrt\(\) does not take"),
    ("py-kwargs", lambda p: load_model("py:torch.nn:ReLU", kwargs=[1]), TypeError, "kwargs: expected a dict"),
    ("py-layers", lambda p: load_model("py:torch.nn:ReLU", layers=["fc9"]), ValueError, "layers\\[0\\]: 'fc9'"),
    ("zoo-name", lambda p: load_model("zoo:nope"), ValueError, r"zoo:nope is neither a zoo model \(\[.*'cnn'.*'mlp'"),
    ("twin-plain", lambda p: untrained_twin(TOY, 0), ValueError, "model: expected a univ.sources.SourceModel"),
    ("twin-seed", lambda p: untrained_twin(load_model("zoo:mlp"), "a"), TypeError, "seed: must be an integer"),
    ("twin-none", lambda p: untrained_twin(load_model("zoo:mlp"), None), ValueError, "seed: expected an integer"),
    ("dict-empty", lambda p: univ.capture(TOY, {}, ["0"]), ValueError, "inputs: is an empty dict"),
    ("dict-key", lambda p: univ.capture(TOY, {1: IDS}, ["0"]), TypeError, "inputs: dict keys must be strings"),
    ("dict-rows", lambda p: univ.capture(TOY, {"input_ids": IDS, "attention_mask": MASK[:2]}, ["0"]), ValueError,
     r"inputs\['attention_mask'\]: has 2 rows but inputs\['input_ids'\] has 3"),
    ("mask-shape", lambda p: univ.capture(TOY, {"input_ids": IDS, "attention_mask": MASK[:, :4]}, ["0"]),
     ValueError, r"inputs\['attention_mask'\]: expected shape \(n, T\) = input_ids shape \(3, 5\)"),
    ("mask-values", lambda p: univ.capture(TOY, {"input_ids": IDS, "attention_mask": MASK * 2}, ["0"]),
     ValueError, "expected integer 0/1 entries"),
    ("mask-nan", lambda p: univ.capture(TOY, {"input_ids": IDS, "attention_mask": MASK * float("nan")}, ["0"]),
     ValueError, r"inputs\['attention_mask'\]: contains 15 NaN"),
    ("dict-forward", lambda p: univ.capture(TOY, {"input_ids": IDS}, ["0"]), ValueError,
     r"inputs: the model's forward failed on a dict batch \{input_ids: \(3, 5\) torch.int64\}"),
    ("tokens-2d", lambda p: univ.capture(nn.Sequential(nn.Linear(3, 2)), torch.rand(4, 3), ["0"], reduce="tokens"),
     ValueError, r"names: reduce='tokens' needs an output with positions, but '0' has shape \(4, 2\)"),
    ("all-padding", lambda p: univ.capture(_Kw(), {"input_ids": IDS, "attention_mask": _padded_row()}, ["emb"],
                                           reduce="mean"), ValueError, "inputs: sample 1 of the batch has no real"),
    ("mask-positions", lambda p: univ.capture(_Kw(), {"input_ids": IDS, "attention_mask": MASK}, ["pair"],
                                              reduce="mean"), ValueError,
     r"inputs: the attention mask has 5 positions but the output of 'pair'"),
    ("exclude_first", lambda p: univ.capture(TOY, IDS, ["0"], exclude_first=1), TypeError,
     "exclude_first: expected True or False"),
    ("token_positions", lambda p: univ.activations.token_positions({"input_ids": IDS}), ValueError,
     "inputs: a dict batch without an attention_mask"),
]


class _Kw(nn.Module):
    """A keyword-argument model (HuggingFace style) with a (b, T, d) and a (b, T, T, d) output."""

    feature_axis = -1

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 4)
        self.pair = nn.Identity()

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        return self.pair(h[:, :, None] * h[:, None])


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(call, exc, fragment, tmp_path):
    assert_named_error(lambda: call(tmp_path), exc, fragment)


def test_plain_keyword_model_takes_dict_batches():
    m = _Kw().eval()
    mask = _padded_row()
    mask[1, 2] = 1
    acts = univ.capture(m, {"input_ids": IDS, "attention_mask": mask}, ["emb"], reduce="tokens", batch_size=2)
    assert torch.equal(acts["emb"], m.emb(IDS)[mask.bool()])
