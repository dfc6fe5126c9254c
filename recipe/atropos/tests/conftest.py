import pytest

from recipe.atropos.api_process import RunApiProcess


@pytest.fixture
def run_api(tmp_path):
    """A real atroposlib `run-api` on a free loopback port, stopped by PID afterwards."""
    server = RunApiProcess(log_path=tmp_path / "run-api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random Qwen2 with the real Qwen tokenizer, built once per test session."""
    from recipe.atropos.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))
