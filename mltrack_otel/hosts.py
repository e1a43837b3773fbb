"""Where a model is served: local and private addresses, and the `host[:port]` syntax settings use for hosts.

A model served from this machine or a private network (Ollama, vLLM, LM Studio, a GPU box on the LAN) costs no
cloud price, whatever its name says. Pricing asks :func:`is_local` about each span's ``server.address`` (memoised:
it runs per call), and the settings name hosts as ``localhost:11434``, ``10.0.0.5`` or ``[::1]:8000``.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["HostKey", "is_local", "parse_host"]

HostKey = tuple[str, "int | None"]  # (host, port); port None: any port

# Networks a cloud API is never reached at. The shared address space (100.64/10) is carrier NAT and tailnets
# (Tailscale's GPU box at home), never a public API; 0.0.0.0 and :: reach this machine.
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/32",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_LOCAL_NAMES = frozenset({"localhost", "host.docker.internal", "gateway.docker.internal", "host.containers.internal"})
_LOCAL_SUFFIXES = (".localhost", ".local")  # RFC 6761 loopback names, mDNS names on the LAN


@functools.lru_cache(maxsize=1024)
def is_local(address: str) -> bool:
    """Whether `address` (a host name or IP literal, as in ``server.address``) is this machine or a private network."""
    host = address.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone id: fe80::1%eth0
    except ValueError:
        return False  # a name: only the names above are known to be local without a DNS lookup
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return any(ip in net for net in _LOCAL_NETWORKS if net.version == ip.version)


def parse_host(text: str) -> HostKey:
    """``host``, ``host:port`` or ``[ipv6]:port`` -> (lower-case host, port or None); ValueError when malformed."""
    raw = text.strip()
    port_text = ""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ipv6] or [ipv6]:port")
        port_text = rest[1:]
        if rest and not port_text:
            raise ValueError(f"{text!r}: missing port after ':'")
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        if not port_text:
            raise ValueError(f"{text!r}: missing port after ':'")
    else:
        host = raw  # a bare name, IPv4 or unbracketed IPv6 (no port)
    host = host.lower().rstrip(".")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{text!r}: expected a host name or IP address, optionally with :port")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise ValueError(f"{text!r}: not an IPv6 address (write [address]:port for a port)") from None
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
        port = int(port_text)
    return host, port
