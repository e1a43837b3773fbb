"""One whole agent run per framework for benchmarks.bench_agents (setup(base_url) -> run, instrument, uninstrument)."""
