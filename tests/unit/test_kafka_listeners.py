"""deploy.local's broker config: the extra listeners the chaos run puts proxies in front of."""

from pathlib import Path

import pytest

from deploy.local.kafka import KafkaPaths, server_properties
from deploy.local.processes import StackError


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_default_broker_has_only_plaintext_and_controller(tmp_path: Path):
    settings = properties(server_properties(KafkaPaths(tmp_path), 9092, 9093))
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert settings["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"


def test_extra_listener_listens_on_one_port_and_advertises_another(tmp_path: Path):
    text = server_properties(KafkaPaths(tmp_path), 9092, 9093,
                             extra_listeners={"PROXY0": (40001, 50001), "PROXY1": (40002, 50002)})
    settings = properties(text)
    assert settings["listeners"].split(",") == [
        "PLAINTEXT://127.0.0.1:9092", "PROXY0://127.0.0.1:40001", "PROXY1://127.0.0.1:40002",
        "CONTROLLER://127.0.0.1:9093"]
    assert settings["advertised.listeners"].split(",") == [
        "PLAINTEXT://127.0.0.1:9092", "PROXY0://127.0.0.1:50001", "PROXY1://127.0.0.1:50002"]
    assert settings["listener.security.protocol.map"].endswith(",PROXY0:PLAINTEXT,PROXY1:PLAINTEXT")
    assert settings["inter.broker.listener.name"] == "PLAINTEXT"


@pytest.mark.parametrize("name", ["proxy0", "CONTROLLER", "PLAINTEXT", "PRO-XY", ""])
def test_bad_extra_listener_names_are_refused(tmp_path: Path, name: str):
    with pytest.raises(StackError, match="listener name"):
        server_properties(KafkaPaths(tmp_path), 9092, 9093, extra_listeners={name: (1, 2)})
