"""enforce.platform settings: off by default, incomplete ones refused with what to set,
secrets redacted."""

from __future__ import annotations

import pytest

from pictguard.settings import Settings, load_settings
from pipeline.settings import SettingsError, secret_values


def test_everything_is_off_by_default() -> None:
    platform = Settings().enforce.platform
    assert not platform.enabled
    assert platform.lemmy.on_flag_csam == ["report"] and not platform.lemmy.ban_model_only
    assert "ban" not in platform.lemmy.on_flag_csam + platform.lemmy.on_flag_nsfw
    assert platform.mastodon.on_flag_csam == ["report"]


@pytest.mark.parametrize(
    ("platform", "words"),
    [
        (
            {"pictrs": {"url": "http://pictrs:8080"}},
            ["PICTGUARD_ENFORCE__PLATFORM__PICTRS__API_KEY"],
        ),
        (
            {"pictrs": {"url": "http://pictrs:8080", "api_key": "k" * 12}},
            ["enforce.platform.pictrs.locations"],
        ),
        ({"pictrs": {"url": "pictrs:8080"}}, ["http://"]),
        (
            {"lemmy": {"url": "http://lemmy:8536", "jwt": "x.y.z"}},
            ["configure", "enforce.platform.pictrs"],
        ),
        (
            {
                "pictrs": {"url": "http://p:8080", "api_key": "k" * 12, "locations": ["s3://b"]},
                "lemmy": {"url": "http://lemmy:8536", "username": "bot"},
            },
            ["PICTGUARD_ENFORCE__PLATFORM__LEMMY__PASSWORD"],
        ),
        (
            {"lemmy": {"on_flag_csam": ["report", "nuke"]}},
            ["report", "remove", "purge", "ban"],
        ),
        (
            {"mastodon": {"on_flag_csam": ["suspend", "silence"]}},
            ["at most one account action"],
        ),
        (
            {"mastodon": {"url": "https://m.example", "token": "t" * 12}},
            ["enforce.platform.mastodon.locations"],
        ),
    ],
)
def test_incomplete_settings_say_what_to_set(platform: dict, words: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(enforce={"platform": platform})
    for word in words:
        assert word in str(caught.value)


def test_secrets_are_redacted_and_never_in_the_repr() -> None:
    settings = Settings(
        enforce={
            "platform": {
                "pictrs": {
                    "url": "http://pictrs:8080",
                    "api_key": "pictrs-key-123456",
                    "locations": ["s3://pictrs"],
                },
                "lemmy": {
                    "url": "http://lemmy:8536",
                    "username": "bot",
                    "password": "lemmy-pass-123456",
                    "jwt": "jwt-aaaa.bbbb.cccc",
                },
                "mastodon": {
                    "url": "https://mastodon.example",
                    "token": "mastodon-token-123456",
                    "locations": ["s3://mastodon"],
                },
            }
        }
    )
    secrets = {
        "pictrs-key-123456",
        "lemmy-pass-123456",
        "jwt-aaaa.bbbb.cccc",
        "mastodon-token-123456",
    }
    assert secrets <= secret_values(settings)
    shown = repr(settings) + str(settings.model_dump())
    assert not [s for s in secrets if s in shown]
