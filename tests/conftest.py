"""Session setup (environment, which test files to collect); the fixtures are in tests/instr_fixtures.py, the span
harness in tests/traced.py."""

import importlib.util
import os

from tests.traced import FAKE

pytest_plugins = ["tests.instr_fixtures"]

# The fake provider on loopback stands for the cloud APIs it imitates: every configure() in the tests (and in the
# subprocesses they start) prices its calls as cloud calls. tests/test_hosts.py checks the local rule on other
# addresses; tests that build a Pricer themselves pass cloud_hosts explicitly.
os.environ.setdefault("MLTRACK_CLOUD_HOSTS", ",".join(FAKE))

# Framework tests run in the frameworks environment (make test-frameworks); the core environment, which has the
# newest SDKs instead, does not collect them at all rather than reporting them as skipped.
_FRAMEWORK_TESTS = {
    "test_langchain.py": "langchain_core",
    "test_llama_index.py": "llama_index.core",
    "test_litellm.py": "litellm",
    "test_dspy.py": "dspy",
    "test_langgraph.py": "langgraph",
    "test_secrets_frameworks.py": "litellm",
    "test_prompts_langchain.py": "langchain_core",
    "test_prompts_llama_index.py": "llama_index.core",
    "test_llama_index_providers.py": "llama_index.core",
    "test_mcp.py": "mcp",
    "test_pydantic_ai.py": "pydantic_ai",
    "test_openai_agents.py": "agents",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # parent package missing
        return False


collect_ignore = [name for name, module in _FRAMEWORK_TESTS.items() if not _installed(module)]
