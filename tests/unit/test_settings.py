import os
import subprocess
import sys

import pytest

from app.settings import Settings, SettingsError


def test_defaults_are_valid():
    settings = Settings.from_env({})
    assert settings.command_topic == "timestamp.command.v1"
    assert settings.command_topic_partitions == 8
    assert settings.command_topic_retention_ms == -1


def test_values_come_from_the_environment():
    settings = Settings.from_env({"BATCH_SIZE": "50", "KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2"})
    assert settings.batch_size == 50
    assert settings.kafka_broker_url == "kafka://a:1;kafka://b:2"


@pytest.mark.parametrize("env, name", [
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
    ({"BATCH_SIZE": "many"}, "BATCH_SIZE"),
    ({"COMMAND_TOPIC_PARTITIONS": "-3"}, "COMMAND_TOPIC_PARTITIONS"),
    ({"BATCH_MAX_WAIT_SECONDS": "soon"}, "BATCH_MAX_WAIT_SECONDS"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"TABLE_STORE": "redis://"}, "TABLE_STORE"),
    ({"PROCESSING_GUARANTEE": "maybe"}, "PROCESSING_GUARANTEE"),
    ({"COMMAND_TOPIC_RETENTION_MS": "0"}, "COMMAND_TOPIC_RETENTION_MS"),
    ({"COMMAND_TOPIC": "  "}, "COMMAND_TOPIC"),
    ({"MAX_IN_FLIGHT_PUBLISHES": "0"}, "MAX_IN_FLIGHT_PUBLISHES"),
    ({"MAX_IN_FLIGHT_PUBLISHES": "lots"}, "MAX_IN_FLIGHT_PUBLISHES"),
])
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=f"^{name}="):
        Settings.from_env(env)


def test_a_replaced_variable_stops_the_worker_and_names_its_successor():
    """Ignored, it would leave the worker on a default its operator did not choose."""
    with pytest.raises(SettingsError, match="^TABLE_ROCKSDB_BLOCK_CACHE_MIB: no longer read; set TABLE_ROCKSDB_MEMORY_MIB"):
        Settings.from_env({"TABLE_ROCKSDB_BLOCK_CACHE_MIB": "8"})
    assert Settings.from_env({"TABLE_ROCKSDB_MEMORY_MIB": "96"}).table_rocksdb_memory_mib == 96


def test_max_in_flight_publishes():
    assert Settings.from_env({}).max_in_flight_publishes == 100
    assert Settings.from_env({"MAX_IN_FLIGHT_PUBLISHES": "7"}).max_in_flight_publishes == 7


def test_a_bad_value_is_a_configuration_error_of_the_cli():
    env = {**os.environ, "BATCH_SIZE": "0"}
    result = subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "configuration error: BATCH_SIZE='0': must be a positive integer\n"
