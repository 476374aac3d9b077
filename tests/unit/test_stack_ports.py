"""The local stack's port picking: free ports the kernel never gives to outgoing connections."""

from __future__ import annotations

import socket

from deploy.local.processes import FIRST_PICKED_PORT, ephemeral_ports, free_ports, port_is_free


def test_picked_ports_are_distinct_free_and_outside_the_ephemeral_range():
    ephemeral = ephemeral_ports()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        assert port >= FIRST_PICKED_PORT and port not in ephemeral, (port, ephemeral)
        assert port_is_free(port)


def test_the_ephemeral_range_is_the_kernels():
    # An outgoing connection's local port comes from this range: what free_ports must avoid.
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        assert client.getsockname()[1] in ephemeral_ports()


def test_a_listening_port_is_not_free():
    with socket.create_server(("127.0.0.1", free_ports(1)[0])) as server:
        assert not port_is_free(server.getsockname()[1])
