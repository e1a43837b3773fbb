"""mltrack-otel: every LLM call as an OpenTelemetry span, priced, with exactly-once running totals.

    import mltrack_otel
    mltrack_otel.configure()      # .mltrack.yml + env -> TracerProvider with the cost pipeline
    mltrack_otel.instrument()     # OpenAI, Anthropic, ... instrumented when (or as soon as) they are imported

Everything public is re-exported here; the modules behind it are implementation.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .errors import BudgetExceededError, ConfigError, LLMLimitWarning, MltrackError
from .version import __version__

# Loaded on first use, so `import mltrack_otel` stays cheap: pydantic, PyYAML, the OTel SDK and the price data
# are only imported once something needs them (configure(), a tracked call, an instrumented import).
_LAZY = {
    "ab": "ab",
    "agent": "agents",
    "attributes": "attribution",
    "on_alert": "alerts",
    "Settings": "config",
    "load_settings": "config",
    "health": "guard",
    "instrument": "instrumentation",
    "uninstrument": "instrumentation",
    "Totals": "ledger",
    "check_budget": "ledger",
    "limit_conversation": "ledger",
    "totals": "ledger",
    "Cost": "pricing",
    "PriceOverride": "pricing",
    "Pricer": "pricing",
    "Usage": "pricing",
    "CostSpanProcessor": "processor",
    "PromptError": "prompts",
    "PromptTemplate": "prompts",
    "load_prompt": "prompts",
    "prompt": "prompts",
    "configure": "provider",
    "shutdown": "provider",
    "LLMTracker": "tracking",
    "anthropic_prompt_extractor": "tracking",
    "anthropic_response_extractor": "tracking",
    "anthropic_token_extractor": "tracking",
    "openai_prompt_extractor": "tracking",
    "openai_response_extractor": "tracking",
    "openai_token_extractor": "tracking",
    "track": "tracking",
    "track_llm_context": "tracking",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f".{name}", __name__)  # mltrack_otel.provider, .semconv, ... as before
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .ab import ab
    from .agents import agent
    from .alerts import on_alert
    from .attribution import attributes
    from .config import Settings, load_settings
    from .guard import health
    from .instrumentation import instrument, uninstrument
    from .ledger import Totals, check_budget, limit_conversation, totals
    from .pricing import Cost, PriceOverride, Pricer, Usage
    from .processor import CostSpanProcessor
    from .prompts import PromptError, PromptTemplate, load_prompt, prompt
    from .provider import configure, shutdown
    from .tracking import (
        LLMTracker,
        anthropic_prompt_extractor,
        anthropic_response_extractor,
        anthropic_token_extractor,
        openai_prompt_extractor,
        openai_response_extractor,
        openai_token_extractor,
        track,
        track_llm_context,
    )

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "Cost",
    "CostSpanProcessor",
    "LLMLimitWarning",
    "LLMTracker",
    "MltrackError",
    "PriceOverride",
    "Pricer",
    "PromptError",
    "PromptTemplate",
    "Settings",
    "Totals",
    "Usage",
    "__version__",
    "ab",
    "agent",
    "anthropic_prompt_extractor",
    "anthropic_response_extractor",
    "anthropic_token_extractor",
    "attributes",
    "check_budget",
    "configure",
    "health",
    "instrument",
    "limit_conversation",
    "load_prompt",
    "load_settings",
    "on_alert",
    "openai_prompt_extractor",
    "openai_response_extractor",
    "openai_token_extractor",
    "prompt",
    "shutdown",
    "totals",
    "track",
    "track_llm_context",
    "uninstrument",
]
