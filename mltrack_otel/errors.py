"""Exceptions mltrack-otel raises into user code (only these, and only where documented)."""


class MltrackError(Exception):
    """Base class of mltrack-otel's own exceptions."""


class ConfigError(MltrackError, ValueError):
    """A configuration file, environment variable or configure() argument is invalid."""


class BudgetExceededError(MltrackError):
    """A hard token or cost budget would be exceeded; raised before the model call is sent.

    `scope` is "process", "context", "agent" (an agent run's own budget) or "conversation"; `spent` is counted,
    `reserved` is held by calls in flight, `requested` is this call's worst case (its input estimate plus
    max_tokens, or the model's maximum output)."""

    def __init__(
        self, kind: str, scope: str, limit: float, spent: float, reserved: float = 0, requested: float = 0
    ) -> None:
        self.kind, self.scope, self.limit, self.spent = kind, scope, limit, spent
        self.reserved, self.requested = reserved, requested
        unit = "USD" if kind == "cost" else "tokens"
        if spent >= limit:
            message = f"{scope} {kind} budget of {limit:g} {unit} is spent ({spent:g} {unit} used)"
        else:
            message = (
                f"{scope} {kind} budget of {limit:g} {unit} would be exceeded: {spent:g} spent, {reserved:g} held by "
                f"calls in flight, and this call may use up to {requested:g} (name max_tokens to reserve less)"
            )
        super().__init__(message)


class LLMLimitWarning(UserWarning):
    """A configured token or cost warning limit was crossed (llm_token_limit_warning / llm_cost_limit_warning)."""
