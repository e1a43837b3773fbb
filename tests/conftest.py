"""Shared fixtures; each group lives in its own module and is registered here."""

pytest_plugins = ["tests.pipeline_fixtures"]
