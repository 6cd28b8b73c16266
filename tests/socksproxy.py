"""A real SOCKS5 proxy on 127.0.0.1 (RFC 1928, no authentication, CONNECT only).

Names it is asked for (``socks5h://``: the proxy resolves them) are looked up in
``names`` first, so a test can reach its feed server as ``feeds.invalid``, a name no
resolver knows; anything else is connected to as given. ``requests`` records each
destination asked for, as (host, port).
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import struct
import threading


class SocksProxy:
    def __init__(self, names: dict[str, tuple[str, int]] | None = None) -> None:
        self.names = dict(names or {})
        self.requests: list[tuple[str, int]] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socks5h://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, client: socket.socket) -> None:
        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = client.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("client went away")
                data += chunk
            return data

        try:
            version, count = read(2)
            methods = read(count)
            if version != 5 or 0 not in methods:
                client.sendall(b"\x05\xff")
                return
            client.sendall(b"\x05\x00")
            version, command, _, kind = read(4)
            if kind == 1:
                host = socket.inet_ntoa(read(4))
            elif kind == 3:
                host = read(read(1)[0]).decode("idna")
            else:
                host = socket.inet_ntop(socket.AF_INET6, read(16))
            (port,) = struct.unpack("!H", read(2))
            self.requests.append((host, port))
            if command != 1:
                client.sendall(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
                return
            try:
                upstream = socket.create_connection(self.names.get(host, (host, port)), timeout=5)
            except OSError:
                client.sendall(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
                return
            with upstream:
                bound = socket.inet_aton(upstream.getsockname()[0])
                client.sendall(b"\x05\x00\x00\x01" + bound + struct.pack("!H", 0))
                _relay(client, upstream)
        except (ConnectionError, OSError, ValueError):
            return


def _relay(a: socket.socket, b: socket.socket) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while True:
            for key, _ in sel.select(timeout=30):
                src = key.fileobj
                assert isinstance(src, socket.socket)
                data = src.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
