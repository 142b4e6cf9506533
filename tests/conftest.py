import pytest


@pytest.fixture(autouse=True)
def isolated_run_cache(tmp_path, monkeypatch):
    """Every test gets its own run cache: no test reads a result another one stored."""
    monkeypatch.setenv("VQSTUDY_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("VQSTUDY_SCHEDULER", raising=False)  # never send a test's runs to a real cluster
