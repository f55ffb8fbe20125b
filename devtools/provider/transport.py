"""Socket-level misbehaviour shared by the fault model and the scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

# SO_LINGER with a zero timeout makes close() send an RST instead of a FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


def abort_with_rst(transport: asyncio.Transport | None) -> None:
    """Drop the connection with a TCP RST and no answer."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()
