"""Hostile fixture: opens a TCP connection to the parent machine (port from params)."""

import socket


class Model:
    def __init__(self, port):
        self.port = port

    def fit(self, train):
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.sendall(b"leak")
        conn.close()
        raise RuntimeError("network reachable: connected to the parent and sent data")

    def predict(self, images):
        raise AssertionError("unreachable")


def build(ctx):
    return Model(int(ctx.params["port"]))
