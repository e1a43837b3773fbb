"""Shared fixtures; each group lives in its own module and is registered here."""

import pytest

from mltrack_otel.testing.fake_provider import FakeProvider

pytest_plugins = ["tests.pipeline_fixtures"]


# `fake_provider`: one loopback OpenAI + Anthropic compatible HTTP server for the whole session
# (mltrack_otel/testing/fake_provider.py). Point the real SDKs at `.openai_base_url` /
# `.anthropic_base_url`; call `.clear()` before asserting on `.requests`, the server is shared.
@pytest.fixture(scope="session")
def fake_provider():
    with FakeProvider() as provider:
        yield provider
