"""Which sockets a set of processes listens on, read from the kernel (psutil: /proc/net/tcp{,6})."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import psutil


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback as an IPv6-mapped address (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def listening(processes: Iterable[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """(pid, name, ip, port) of every TCP socket these processes listen on (UDP: none bound)."""
    found = []
    for p in processes:
        try:
            name = p.name()
            for conn in p.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr):
                    found.append((p.pid, name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


def beyond_loopback(processes: Iterable[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """The listening sockets of these processes that another machine could reach."""
    return [entry for entry in listening(processes) if not is_loopback(entry[2])]
