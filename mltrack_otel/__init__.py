"""mltrack-otel: every LLM call as an OpenTelemetry span, priced, with exactly-once running totals.

    import mltrack_otel
    mltrack_otel.configure()      # .mltrack.yml + env -> TracerProvider with the cost pipeline
    mltrack_otel.instrument()     # OpenAI, Anthropic, ... instrumented when (or as soon as) they are imported

Everything public is re-exported here; the modules behind it are implementation.
"""

from .config import Settings, load_settings
from .errors import BudgetExceededError, ConfigError, LLMLimitWarning, MltrackError
from .guard import health
from .instrumentation import instrument, uninstrument
from .ledger import Totals, check_budget, totals
from .pricing import Cost, PriceOverride, Pricer, Usage
from .processor import CostSpanProcessor
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
from .version import __version__

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
    "Settings",
    "Totals",
    "Usage",
    "__version__",
    "anthropic_prompt_extractor",
    "anthropic_response_extractor",
    "anthropic_token_extractor",
    "check_budget",
    "configure",
    "health",
    "instrument",
    "load_settings",
    "openai_prompt_extractor",
    "openai_response_extractor",
    "openai_token_extractor",
    "shutdown",
    "totals",
    "track",
    "track_llm_context",
    "uninstrument",
]
