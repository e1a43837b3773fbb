"""Exceptions mltrack-otel raises into user code (only these, and only where documented)."""


class MltrackError(Exception):
    """Base class of mltrack-otel's own exceptions."""


class ConfigError(MltrackError, ValueError):
    """A configuration file, environment variable or configure() argument is invalid."""


class BudgetExceededError(MltrackError):
    """A hard token or cost budget is spent; raised before the next model call is sent."""

    def __init__(self, kind: str, scope: str, limit: float, spent: float) -> None:
        self.kind, self.scope, self.limit, self.spent = kind, scope, limit, spent
        unit = "USD" if kind == "cost" else "tokens"
        super().__init__(f"{scope} {kind} budget of {limit:g} {unit} is spent ({spent:g} {unit} used)")


class LLMLimitWarning(UserWarning):
    """A configured token or cost warning limit was crossed (llm_token_limit_warning / llm_cost_limit_warning)."""
