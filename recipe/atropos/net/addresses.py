"""Bind address versus advertised address of a listener.

A listener binds one address (`0.0.0.0` for every interface) and tells clients another: the one they
can reach it at. On several nodes the advertised address must be this node's address as the other
nodes see it, never loopback (127.0.0.1, or 127.0.1.1, which Debian and Ubuntu give the host name):
a client on another node would reach itself. The default is the node's address as Ray sees it
(`ray.util.get_node_ip_address`, what verl advertises for its own servers), which is the address of
the interface that routes beyond this host.
"""

from __future__ import annotations

from recipe.atropos.auth.bind_check import is_loopback

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class AdvertisedAddressError(ValueError):
    """A listener would tell clients on other nodes an address they cannot reach it at."""


def node_address() -> str:
    """This node's address as Ray sees it (no Ray cluster needed: the interface that routes outward)."""
    from ray.util import get_node_ip_address

    return get_node_ip_address().strip("[]")


def advertised_host(bind: str, advertise: str | None, *, bind_setting: str, advertise_setting: str) -> str:
    """What clients are told for a listener bound to `bind`: `advertise` when set, else `bind`, else
    (bound to every interface) `node_address()`. Refuses a loopback address for a listener bound
    beyond loopback, naming the settings."""
    if advertise:
        host = advertise
    elif bind in WILDCARD_HOSTS:
        host = node_address()
    else:
        host = bind
    if is_loopback(host) and not is_loopback(bind):
        raise AdvertisedAddressError(
            f"{bind_setting}={bind} listens for other nodes but would tell them {host}, a loopback address (there a "
            f"client reaches itself): set {advertise_setting} to this node's address as the other nodes see it")
    return host


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
