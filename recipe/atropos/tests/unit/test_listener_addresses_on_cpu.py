"""Listeners tell clients an address that other nodes can reach: bound to every interface, the real
`run-api` and the real policy server advertise this node's address as Ray sees it, never loopback (the
old default, the host name's address, is 127.0.0.1 or 127.0.1.1 on many hosts); a loopback address
advertised for a listener bound beyond loopback stops, naming the setting; and our own HTTP clients
never go through a proxy named in the environment; an environment the launcher starts on another node
is never told run-api on loopback."""

import select
import socket

import pytest
from ray.util import get_node_ip_address

from recipe.atropos.auth.bind_check import is_loopback
from recipe.atropos.auth.run_token import run_token
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.launcher.config import LauncherConfigError, load_launcher_config
from recipe.atropos.launcher.services import ServicesLauncher
from recipe.atropos.net import direct_http
from recipe.atropos.net.addresses import AdvertisedAddressError
from recipe.atropos.net.direct_http import no_proxy_env
from recipe.atropos.policy_server.service import InferenceService
from recipe.atropos.tests.helpers.api_helpers import started_trainer, token_headers
from recipe.atropos.tests.helpers.launcher_helpers import DEMO_CONFIG
from recipe.atropos.tests.helpers.policy_server_helpers import serving

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture
def node_address():
    address = get_node_ip_address()
    if is_loopback(address):
        pytest.skip(f"this host has no route beyond itself (Ray sees it as {address})")
    return address


def test_listeners_bound_to_every_interface_advertise_the_nodes_address(node_address, tiny_model_dir, tmp_path):
    with RunApiProcess(host="0.0.0.0", log_path=tmp_path / "run-api.log") as api:
        assert api.url == f"http://{node_address}:{api.port}"
        started_trainer(api.url)  # registered through the advertised address
    with serving(tiny_model_dir, token=run_token(), host="0.0.0.0") as policy:
        assert policy.url == f"http://{node_address}:{policy.service.port}"
        assert policy.service.endpoint_record()["openai_base_url"] == f"{policy.url}/v1"
        assert direct_http.get(f"{policy.url}/health", timeout=5).ok


@pytest.mark.parametrize("advertised", ["127.0.0.1", "127.0.1.1", "localhost"])
def test_a_loopback_address_advertised_to_other_nodes_stops_naming_the_setting(advertised):
    with pytest.raises(AdvertisedAddressError, match=r"api\.host=0\.0\.0\.0 .* set api\.advertise_host"):
        RunApiProcess(host="0.0.0.0", advertise_host=advertised)
    with pytest.raises(AdvertisedAddressError, match=r"trainer\.atropos_inference\.host=0\.0\.0\.0 .* set "
                                                     r"trainer\.atropos_inference\.advertise_host"):
        InferenceService(None, None, "policy", host="0.0.0.0", token=run_token(), advertise_host=advertised)


def test_our_clients_never_go_through_a_proxy_from_the_environment(run_api, monkeypatch):
    """A proxy named in the environment would sit between the trainer and run-api and read the token."""
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        started_trainer(run_api.url)  # the trainer's client: registers and asks for a batch
        assert direct_http.get(f"{run_api.url}/status", headers=token_headers(), timeout=5).ok  # the launcher's probes
        arrived, _, _ = select.select([proxy], [], [], 0)
        assert arrived == [], "a request went to the proxy"


def test_environments_are_told_to_bypass_proxies_for_the_runs_own_hosts():
    env = no_proxy_env({"NO_PROXY": "corp.example"}, ["http://10.0.0.5:8000", "http://10.0.0.6:41234"])
    assert env == {"NO_PROXY": "corp.example,10.0.0.5,10.0.0.6", "no_proxy": "corp.example,10.0.0.5,10.0.0.6"}


def test_an_environment_on_another_node_with_run_api_on_loopback_stops_naming_the_settings(tmp_path, node_address):
    on_other_node = [f"run_dir={tmp_path}", "environments.0.node=10.255.255.254"]
    with pytest.raises(LauncherConfigError, match=r"environments\[0\]\.node=10\.255\.255\.254: run-api is advertised "
                                                  r"at http://127\.0\.0\.1:\d+, a loopback address.*set api\.host"):
        ServicesLauncher(load_launcher_config(DEMO_CONFIG, on_other_node))
    launcher = ServicesLauncher(load_launcher_config(DEMO_CONFIG, [*on_other_node, "api.host=0.0.0.0"]))
    assert launcher.api.url.startswith(f"http://{node_address}:")  # what the environment there is told
