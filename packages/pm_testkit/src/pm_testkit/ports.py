"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now.

    The port is bound then released, so another process may take it before
    the caller does: starting a server on it can lose that race (the server
    helpers retry on "Address already in use").
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
