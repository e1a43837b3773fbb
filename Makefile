# Everything a person types twice. `make test` and `make demo` work on a fresh machine: each builds its venv first.
#
# Two environments, because the frameworks pin an older openai: .venv has the newest provider SDKs (openai 3.x on
# httpx2, anthropic, google-genai, boto3, mistralai, cohere, ollama, groq), the agent frameworks that need openai 3.x
# (OpenAI Agents SDK, Pydantic AI, MCP) and MLflow; .venv-fw has LangChain (and LangGraph), LlamaIndex, LiteLLM and
# DSPy with the openai they resolve to.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: test test-core test-frameworks demo lint format bench bench-quick semconv clean

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install $(PIP_FLAGS) -e '.[providers,agents,mlflow,grpc,plot,dev]'
	touch $@

# Arize Phoenix, a real OTLP receiver for the export tests; its own venv so its dependencies never mix with ours.
.venv-phoenix/.installed:
	$(PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install $(PIP_FLAGS) 'arize-phoenix==20.26.1'
	touch $@

.venv-fw/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-fw
	.venv-fw/bin/python -m pip install $(PIP_FLAGS) -e '.[all,dev,test-frameworks]'
	touch $@

test: lint test-core test-frameworks

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python scripts/gen_semconv.py --check

test-core: .venv/.installed .venv-phoenix/.installed
	.venv/bin/python -m pytest -q -p no:cacheprovider -m "not frameworks"

# The frameworks, plus the provider instrumentors again on the SDK versions the frameworks resolve to (openai 2.x,
# groq 0.x, cohere 5.x).
test-frameworks: .venv-fw/.installed
	.venv-fw/bin/python -m pytest -q -p no:cacheprovider -m "not frameworks" tests/test_openai.py tests/test_anthropic.py \
		tests/test_groq.py tests/test_cohere.py tests/test_google_genai.py tests/test_bedrock.py tests/test_mistralai.py \
		tests/test_ollama.py
	.venv-fw/bin/python -m pytest -q -p no:cacheprovider -m frameworks

demo: .venv/.installed
	.venv/bin/python -m mltrack_otel.cli demo

format: .venv/.installed
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

semconv: .venv/.installed
	.venv/bin/python scripts/gen_semconv.py

.venv-bench/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install $(PIP_FLAGS) -e '.[bench]'
	touch $@

# Added CPU per call vs the raw SDKs and the peers, CostSpanProcessor, pricing, RSS over 1M spans, import time.
bench: .venv-bench/.installed .venv-fw/.installed
	.venv-bench/bin/python -m benchmarks.overhead

bench-quick: .venv-bench/.installed .venv-fw/.installed
	.venv-bench/bin/python -m benchmarks.overhead --quick

clean:
	rm -rf .venv .venv-fw .venv-bench .venv-phoenix .pytest_cache .ruff_cache mlflow.db mltrack-cost.png mltrack-compare.png
