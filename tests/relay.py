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
            server = socket.create_connection(("127.0.0.1", self.target_port))
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

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
