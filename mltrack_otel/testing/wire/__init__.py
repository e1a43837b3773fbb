"""Wire formats of the providers the fake speaks besides OpenAI and Anthropic (see fake_provider.WireFormat)."""
