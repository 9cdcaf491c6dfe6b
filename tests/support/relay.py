"""A byte-for-byte relay to the test PostgreSQL: what a port mapping (Docker -p 5433:5432, an SSH tunnel,
kubectl port-forward) or a unix socket in front of a TCP server looks like to a client.

The server behind it is the real one; only the path in between changes, with no pooler on it.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class Relay:
    """Accepts on `listener` and passes every connection to 127.0.0.1:target_port, both ways."""

    def __init__(self, listener: socket.socket, target_port: int) -> None:
        self._listener = listener
        self.target_port = target_port
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @classmethod
    def tcp(cls, target_port: int) -> Relay:
        """A new port on 127.0.0.1 (`.port`) mapped to `target_port`."""
        return cls(socket.create_server(("127.0.0.1", 0)), target_port)

    @classmethod
    def unix(cls, directory: Path, port: int, target_port: int) -> Relay:
        """A unix socket where libpq looks for one (<directory>/.s.PGSQL.<port>)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(directory / f".s.PGSQL.{port}"))
        listener.listen()
        return cls(listener, target_port)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            self._held.append(client)
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        self._held.append(server)
        for source, target in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for sock in self._held:
            sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Blackhole(Relay):
    """Accepts TCP connections and never answers: a firewall that drops traffic after the handshake, a dead
    NAT entry, a half-open tunnel. The sockets are held open so the client sees silence, not a reset."""

    @classmethod
    def tcp(cls, target_port: int = 0) -> Blackhole:
        return cls(socket.create_server(("127.0.0.1", 0)), target_port)

    def _serve(self, client: socket.socket) -> None:
        pass  # held (closed by close()), never read, never answered


class GoesSilent(Relay):
    """Relays to the server until the client sends its first query (a protocol message that starts with 'Q' or
    'P': the start-up and SSL negotiation carry no type byte), then forwards nothing more either way: a proxy,
    tunnel or pooler that hung after the connection was made. The kernel still acknowledges every byte, so TCP
    keepalives see a healthy peer; only a timeout in the client can end the wait."""

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        self._held.append(server)
        silent = threading.Event()
        threading.Thread(target=self._pump_until_query, args=(client, server, silent, True), daemon=True).start()
        threading.Thread(target=self._pump_until_query, args=(server, client, silent, False), daemon=True).start()

    @staticmethod
    def _pump_until_query(source: socket.socket, target: socket.socket, silent: threading.Event,
                          from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and data[:1] in (b"Q", b"P"):
                    silent.set()
                if not silent.is_set():
                    target.sendall(data)
        except OSError:
            pass

