"""Settings: env over YAML over defaults; bad values name the setting and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pictguard.settings import load_settings
from pipeline.bus.kafka import client_config
from pipeline.settings import KafkaSettings, SettingsError


def test_yaml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pictguard.yaml"
    config.write_text(
        "kafka:\n  bootstrap_servers: kafka:9092\n  partitions: 24\n"
        "enforce:\n  on_flag_nsfw: delete\n"
    )
    monkeypatch.setenv("PICTGUARD_KAFKA__PARTITIONS", "6")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "kafka:9092"  # from the file
    assert settings.kafka.partitions == 6  # the environment wins
    assert settings.enforce.on_flag_nsfw == "delete"
    assert settings.enforce.on_flag_csam == "quarantine"  # default


def test_invalid_value_names_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICTGUARD_KAFKA__SECURITY_PROTOCOL", "TLS")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "PICTGUARD_KAFKA__SECURITY_PROTOCOL" in str(err.value)
    assert "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'" in str(err.value)


def test_unknown_key_in_file_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafak:\n  partitions: 3\n")
    with pytest.raises(SettingsError, match="unknown setting kafak"):
        load_settings(config)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)


def test_kafka_security_settings_become_client_config(tmp_path: Path) -> None:
    # Tansu's SASL/TLS do not work with aiokafka here, so the configuration is checked.
    plain = client_config(KafkaSettings())
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_mechanism" not in plain
    scram = client_config(
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
        )
    )
    assert scram["sasl_mechanism"] == "SCRAM-SHA-512"
    assert scram["sasl_plain_username"] == "u" and scram["sasl_plain_password"] == "p"
    assert scram["ssl_context"].check_hostname is True
    with pytest.raises(Exception, match="sasl_mechanism"):
        client_config(KafkaSettings(security_protocol="SASL_PLAINTEXT"))


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings(kafka={"sasl_password": "hunter2"}, s3={"secret_access_key": "s3cr3t"})
    assert "hunter2" not in repr(settings) and "s3cr3t" not in repr(settings)


def test_misspelt_nested_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICTGUARD_S3__ENDPOINT", "http://minio:9000")  # endpoint_url meant
    with pytest.raises(SettingsError, match=r"unknown setting s3\.endpoint"):
        load_settings()


def test_non_json_list_in_env_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICTGUARD_API__TRUSTED_PROXIES", "10.0.0.0/8")
    with pytest.raises(SettingsError, match="JSON"):
        load_settings()
