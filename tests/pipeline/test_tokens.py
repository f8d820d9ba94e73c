"""The one token check: empty secrets match nothing; Bearer headers parsed one way."""

from __future__ import annotations

from pydantic import SecretStr

from pipeline.tokens import bearer_token, secret_matches


def test_an_empty_or_unset_secret_matches_nothing() -> None:
    for secret in (None, "", SecretStr("")):
        assert not secret_matches("", secret)
        assert not secret_matches(None, secret)
        assert not secret_matches("anything", secret)


def test_a_set_secret_matches_only_itself() -> None:
    secret = SecretStr("a-long-random-token-0123")
    assert secret_matches("a-long-random-token-0123", secret)
    assert not secret_matches("a-long-random-token-012", secret)
    assert not secret_matches(None, secret)
    assert secret_matches("plain-0123456789", "plain-0123456789")


def test_bearer_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic Zm9vOmJhcg==") is None
    assert bearer_token(None) is None
    assert bearer_token("") is None
