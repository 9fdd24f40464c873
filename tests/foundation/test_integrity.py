"""The integrity mechanism: atomic entries with a manifest written last, verified on read."""

import json

import pytest

from univ.integrity import MANIFEST, CacheWarning, entry_meta, read_entry, verify_entry, write_entry


def _fill(folder):
    (folder / "a.bin").write_bytes(bytes(range(200)))
    (folder / "sub").mkdir()
    (folder / "sub" / "b.json").write_text('{"x": 1}')


def _load(folder):
    return (folder / "a.bin").read_bytes(), json.loads((folder / "sub" / "b.json").read_text())


def test_round_trip_and_meta(tmp_path):
    p = write_entry(tmp_path / "e", _fill, meta={"key": "k1"})
    assert verify_entry(p) is None and entry_meta(p) == {"key": "k1"}
    assert read_entry(p, _load) == (bytes(range(200)), {"x": 1})
    assert sorted(x.name for x in tmp_path.iterdir()) == ["e"]  # no temporary folder left


def test_missing_entry_is_none_without_warning(tmp_path, recwarn):
    assert read_entry(tmp_path / "nothing", _load) is None
    assert not recwarn.list


@pytest.mark.parametrize("damage", ["truncate", "random_bytes", "flip_byte", "remove_file", "remove_manifest",
                                    "bad_manifest", "extra_bytes"])
def test_damaged_entry_is_announced_removed_and_recomputed(tmp_path, damage):
    p = write_entry(tmp_path / "e", _fill)
    f = p / "a.bin"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:50])
    elif damage == "random_bytes":
        f.write_bytes(bytes(reversed(range(200))))
    elif damage == "flip_byte":
        b = bytearray(f.read_bytes())
        b[7] ^= 1
        f.write_bytes(bytes(b))
    elif damage == "remove_file":
        (p / "sub" / "b.json").unlink()
    elif damage == "remove_manifest":
        (p / MANIFEST).unlink()
    elif damage == "bad_manifest":
        (p / MANIFEST).write_text("{not json")
    elif damage == "extra_bytes":
        f.write_bytes(f.read_bytes() + b"\0")
    assert verify_entry(p) is not None
    with pytest.warns(CacheWarning, match=str(p)):
        assert read_entry(p, _load) is None
    assert not p.exists()
    write_entry(p, _fill)  # the recomputation
    assert read_entry(p, _load) == (bytes(range(200)), {"x": 1})


def test_unreadable_but_verified_entry_is_discarded(tmp_path):
    p = write_entry(tmp_path / "e", _fill)

    def bad_load(folder):
        raise ValueError("not a safetensors file")

    with pytest.warns(CacheWarning, match="unreadable.*not a safetensors file"):
        assert read_entry(p, bad_load) is None
    assert not p.exists()


def test_failed_fill_leaves_nothing_and_rewrite_replaces(tmp_path):
    def boom(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_entry(tmp_path / "e", boom)
    assert list(tmp_path.iterdir()) == []
    write_entry(tmp_path / "e", _fill)
    write_entry(tmp_path / "e", lambda f: (f / "only.txt").write_text("new"))
    assert sorted(x.name for x in (tmp_path / "e").iterdir()) == [MANIFEST, "only.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["e"]
