"""network_cause names the root of a failed connection, however deep the client wrapped it."""

import socket

import pytest
import requests

from controlroom.network import network_cause
from tests.servers import free_port


def test_refused_unresolvable_and_timeout_are_named():
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=2)
    assert network_cause(refused.value).startswith("connection refused")
    with pytest.raises(requests.ConnectionError) as unknown:
        requests.get("http://no-such-host.invalid/", timeout=2)
    assert network_cause(unknown.value).startswith("the host name does not resolve")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        with pytest.raises(requests.Timeout) as slow:
            requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
        assert network_cause(slow.value).startswith("no answer in time")
    finally:
        listener.close()
    assert network_cause(ValueError("odd")) == "ValueError: odd"
