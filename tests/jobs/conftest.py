import pytest


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test of the grid gets its own cache (shards, manifests, cached models)."""
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("UNIV_NO_CACHE", raising=False)
    return tmp_path / "cache"
