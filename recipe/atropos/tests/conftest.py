import pytest

from recipe.atropos.api_process import RunApiProcess


@pytest.fixture
def run_api(tmp_path):
    """A real atroposlib `run-api` on a free loopback port, stopped by PID afterwards."""
    server = RunApiProcess(log_path=tmp_path / "run-api.log")
    server.start()
    yield server
    server.stop()
