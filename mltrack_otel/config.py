"""Settings: `.mltrack.yml` + `MLTRACK_*` env + standard `OTEL_*` env -> one frozen, validated object.

Precedence, lowest first: defaults, the YAML file, standard OTEL_* variables, MLTRACK_* variables, keyword
arguments to configure(). An unknown key or a wrong type is an error naming the file (or variable), the key and
what was expected; environment variables are strings, split into lists or mappings before the same validation.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .hosts import parse_host
from .pricing import PriceOverride, override_key

CONFIG_FILENAME = ".mltrack.yml"
_MAX_FILE_BYTES = 1 << 20
_MAX_SHOWN = 200  # characters of a rejected value quoted in an error message
# Upper bounds the SDK's threads and queues can take (larger values overflow time_t or ssize_t there, later).
_MAX_SECONDS = 3600.0
_MAX_QUEUE = 1 << 24

ExporterName = Literal["mlflow", "otlp", "console", "memory", "none"]


class ProviderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_model: str | None = None


class ABTestSettings(BaseModel):
    """One `ab_tests:` entry, for `mltrack_otel.ab(name)`: the variants (when the code passes none), and the split,
    stickiness or forced variant, which win over the code's so a split changes without a deploy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    variants: dict[str, Any] | tuple[str, ...] | None = None  # {name: value}, or names that are their own values
    split: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    sticky: Literal["user", "conversation"] | None = None
    force: str | None = None  # every call gets this variant (a winner, or a kill switch)

    @model_validator(mode="after")
    def _names_agree(self) -> ABTestSettings:
        names = list(self.variants) if self.variants is not None else None
        if names is not None and (not names or not all(isinstance(n, str) and n for n in names)):
            raise ValueError(f"variants must be non-empty names, at least one: got {names!r}")
        if names is not None and self.split is not None and set(self.split) != set(names):
            raise ValueError(f"split names {sorted(self.split)} must be the variants' names {sorted(names)}")
        known = names if names is not None else list(self.split) if self.split is not None else None
        if self.force is not None and known is not None and self.force not in known:
            raise ValueError(f"force {self.force!r} is not one of the variants {sorted(known)}")
        return self


class AgentSettings(BaseModel):
    """One `agents:` entry: hard budgets of each run of the agent of that name (`"*"`: of any agent without its own
    entry). A model call in the run whose worst case would not fit raises BudgetExceededError before it is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    llm_token_limit: int | None = Field(default=None, ge=0)
    llm_cost_limit: Decimal | None = Field(default=None, ge=0)


class PromptSettings(BaseModel):
    """One named prompt template under `prompts:` (mltrack_otel.prompt(name) with no template uses it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str | tuple[dict[str, str], ...]
    version: str | int | None = None


# --- alerts (alerts.py evaluates them) ---------------------------------------------------------------------------
AlertWhen = Literal["cost", "tokens", "unpriced"]
AlertPer = Literal["minute", "hour", "day", "none"]
AlertScope = Literal["process", "context", "conversation", "user"]
AlertChannel = Literal["log", "webhook", "callback"]
_MAX_RETRIES = 10


class WebhookSettings(BaseModel):
    """Where an alert is POSTed: `format` json (our payload) or slack (an incoming webhook's {"text": ...})."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(repr=False)  # may carry a secret (Slack's do): kept out of reprs and logs
    format: Literal["json", "slack"] = "json"
    timeout_seconds: float = Field(default=5.0, gt=0, le=_MAX_SECONDS)
    retries: int = Field(default=3, ge=0, le=_MAX_RETRIES)
    backoff_seconds: float = Field(default=0.5, ge=0, le=_MAX_SECONDS)  # before retry n: backoff * 2**(n-1)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # e.g. Authorization; never logged

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value


class AlertRule(BaseModel):
    """`{when: cost, over: 5.0, per: hour, scope: user, notify: [log, webhook, callback]}`: fires once when the
    value goes above `over` within a window (`per`: minute / hour / day, or none = the running total), per key of
    its scope; re-arms in the next window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    when: AlertWhen
    over: Decimal = Field(ge=0)  # USD for cost, tokens (input + output), or unpriced calls
    per: AlertPer = "none"
    scope: AlertScope = "process"
    notify: tuple[AlertChannel, ...] | None = None  # None: log, callback, and webhook when one is configured
    name: str | None = None
    webhook: WebhookSettings | None = None  # this rule's own; else alert_webhook

    @field_validator("per", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return "none" if value is None else value  # YAML `per: null` / `per: ~` reads as no window too

    @field_validator("over")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("expected a finite number")
        return value

    @property
    def label(self) -> str:
        per = "" if self.per == "none" else f" per {self.per}"
        return self.name or f"{self.when} over {self.over}{per} by {self.scope}"


class Settings(BaseModel):
    """Everything mltrack-otel can be told. Field names are the `.mltrack.yml` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Seed keys.
    llm_tracking_enabled: bool = True
    llm_log_prompts: bool = True
    llm_log_responses: bool = True
    llm_track_token_usage: bool = True
    llm_track_costs: bool = True
    llm_token_limit_warning: int | None = Field(default=None, ge=0)
    llm_cost_limit_warning: Decimal | None = Field(default=None, ge=0)
    llm_providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    # Hard budgets: the next model call in a spent scope raises BudgetExceededError before it is sent.
    llm_token_limit: int | None = Field(default=None, ge=0)
    llm_cost_limit: Decimal | None = Field(default=None, ge=0)

    # Where spans go. None means: MLflow embedded store if mlflow is installed, OTLP if an endpoint is set.
    service_name: str = "mltrack-otel-app"
    exporters: tuple[ExporterName, ...] | None = None
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    otlp_compression: Literal["none", "gzip", "deflate"] | None = None
    otlp_timeout_seconds: float = Field(default=10.0, gt=0, le=_MAX_SECONDS)
    otlp_insecure: bool | None = None  # gRPC plaintext; default: from the endpoint's scheme (loopback: plaintext)
    # OTLP spans carry what MLflow needs to show our prices (exporters/mlflow_attributes.py). None: on when the
    # OTLP headers name an MLflow experiment (x-mlflow-experiment-id); set true when a collector forwards to MLflow.
    otlp_for_mlflow: bool | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_name: str | None = None
    mlflow_experiment_id: str | None = None

    # Batch export bounds (per exporter).
    export_queue_size: int = Field(default=2048, ge=1, le=_MAX_QUEUE)
    export_batch_size: int = Field(default=256, ge=1, le=_MAX_QUEUE)
    export_delay_ms: int = Field(default=1000, ge=1, le=int(_MAX_SECONDS * 1000))  # the batch processor needs > 0
    shutdown_timeout_seconds: float = Field(default=5.0, gt=0, le=_MAX_SECONDS)

    # Pricing.
    price_overrides: dict[str, PriceOverride] = Field(default_factory=dict)  # keys: model, host:..., provider:...
    provider_aliases: dict[str, str] = Field(default_factory=dict)
    # Local or private hosts (host[:port]) that forward to a cloud provider, e.g. an LLM gateway on localhost:
    # their calls get the cloud price. Calls to other local hosts are marked local and priced only by overrides.
    cloud_hosts: tuple[str, ...] = ()

    # Content capture.
    content_max_bytes: int = Field(default=64 * 1024, ge=256)
    redact_patterns: tuple[str, ...] = ()
    openinference_attributes: bool = False
    # GenAI attribute names: False = semantic conventions v1.41 (gen_ai.usage.cache_creation.input_tokens), True =
    # the standalone GenAI conventions (gen_ai.usage.cache_write.input_tokens). OTEL_SEMCONV_STABILITY_OPT_IN
    # containing gen_ai_latest_experimental sets it, as it does for the OpenTelemetry GenAI instrumentations.
    genai_latest_conventions: bool = False

    # Streams: ask OpenAI-compatible hosts for usage on streams the caller did not ask it for (and hide the
    # extra usage-only chunk from the caller). Host patterns are fnmatch-style.
    stream_include_usage: bool = True
    stream_usage_hosts: tuple[str, ...] = ("api.openai.com", "*.openai.azure.com", "127.0.0.1", "localhost")

    # Ledger memory bound.
    max_conversations: int = Field(default=10_000, ge=1)

    # A/B experiments of mltrack_otel.ab(name): {name: {variants, split, sticky, force}}.
    ab_tests: dict[str, ABTestSettings] = Field(default_factory=dict)
    # Prompt templates by name: `prompts: {summarize: {template: "Summarize {{text}}", version: 3}}`;
    # mltrack_otel.prompt("summarize") with no template gives this one (see mltrack_otel/prompts.py).
    prompts: dict[str, PromptSettings] = Field(default_factory=dict)
    # Attribution (mltrack_otel.attributes): running totals per user and per tag value are kept for this many of the
    # most recently counted. Metric labels: span attributes (user.id, session.id, mltrack.tag.<key>, ...) added as
    # labels to every metric, none by default, as each value makes a new time series; spans carry them all anyway.
    max_users: int = Field(default=10_000, ge=1)
    max_agents: int = Field(default=10_000, ge=1)
    max_tag_values: int = Field(default=10_000, ge=1)
    metric_labels: tuple[str, ...] = ()

    # Agent runs (agents.py): budgets per run, by agent name (gen_ai.agent.name) or "*" for any agent.
    agents: dict[str, AgentSettings] = Field(default_factory=dict)

    # Alerts (alerts.py): rules, and the webhook they notify unless a rule names its own.
    alerts: tuple[AlertRule, ...] = ()
    alert_webhook: WebhookSettings | None = None
    alert_queue_size: int = Field(default=1000, ge=1, le=_MAX_QUEUE)  # alerts waiting for the worker; more dropped

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        try:  # each may compile alone and still not combine, e.g. a global flag like (?i) not at the start
            _combine(value)
        except re.error as exc:
            raise ValueError(f"the patterns cannot be combined into one ({exc}); use scoped flags: (?i:...)") from None
        return value

    @field_validator("price_overrides")
    @classmethod
    def _override_keys_parse(cls, value: dict[str, PriceOverride]) -> dict[str, PriceOverride]:
        for key, override in value.items():
            override_key(key, override)  # ValueError naming the key and the syntax expected
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts_are_templates(cls, value: dict[str, PromptSettings]) -> dict[str, PromptSettings]:
        from .prompts import PromptTemplate  # the same checks as prompt(); imported only when prompts are set

        for name, spec in value.items():
            template = [dict(m) for m in spec.template] if isinstance(spec.template, tuple) else spec.template
            PromptTemplate(name, template, spec.version)  # PromptError (a ValueError) naming the prompt
        return value

    @field_validator("metric_labels")
    @classmethod
    def _metric_labels_are_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ATTRIBUTE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an attribute name (e.g. user.id, mltrack.tag.feature)")
            if name in _NEVER_LABELS or name.startswith(_NEVER_LABEL_PREFIXES):
                raise ValueError(f"{name!r} cannot be a metric label: it holds content or a per-call value")
        if len(set(value)) != len(value):
            raise ValueError("an attribute is named twice")
        return value

    @model_validator(mode="after")
    def _alert_webhooks_exist(self) -> Settings:
        for i, rule in enumerate(self.alerts):
            if rule.notify and "webhook" in rule.notify and rule.webhook is None and self.alert_webhook is None:
                raise ValueError(
                    f"key 'alerts.{i}.notify': names webhook, but neither the rule's webhook nor alert_webhook is set"
                )
        return self

    @field_validator("cloud_hosts")
    @classmethod
    def _cloud_hosts_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            parse_host(host)
        return value

    # Derived views.
    @property
    def capture_prompts(self) -> bool:
        return self.llm_tracking_enabled and self.llm_log_prompts

    @property
    def capture_responses(self) -> bool:
        return self.llm_tracking_enabled and self.llm_log_responses

    @cached_property
    def redactor(self) -> re.Pattern[str] | None:
        """One compiled alternation of all redaction patterns (None when there are none)."""
        return _combine(self.redact_patterns) if self.redact_patterns else None

    def default_model(self, provider: str | None) -> str | None:
        entry = self.llm_providers.get(provider or "")
        return entry.default_model if entry else None


_ATTRIBUTE_NAME = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*")
# Content, ids unique per call and the numbers metrics already measure: never labels.
_NEVER_LABELS = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.response.id",
    }
)
_NEVER_LABEL_PREFIXES = ("gen_ai.usage.", "llm.cost.", "llm.tokens.", "llm.latency")


_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _combine(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation of all patterns; a pattern's leading global flags, e.g. (?i), become flags of its group."""
    groups = []
    for pattern in patterns:
        flags = _LEADING_FLAGS.match(pattern)
        groups.append(f"(?{flags[1]}:{pattern[flags.end() :]})" if flags else f"(?:{pattern})")
    return re.compile("|".join(groups))


_FIELDS = Settings.model_fields


def find_config_file(start: Path | None = None) -> Path | None:
    """`.mltrack.yml` in the working directory, then its parents, then the home directory."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    home = Path.home() / CONFIG_FILENAME
    return home if home.is_file() else None


@functools.cache
def _yaml() -> tuple[Any, type]:
    """(the yaml module, a SafeLoader that refuses aliases and duplicate keys), imported on first use: most
    processes configure from the environment or keyword arguments, and PyYAML costs ~15 ms to import. Aliases
    are refused because a config file has no use for them, and they enable YAML bombs."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases are not allowed", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # PyYAML lets the last of two equal keys win without a word; in a config file that hides a mistake.
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                if seen is not None:
                    raise DuplicateKeyError(key, seen + 1, key_node.start_mark.line + 1)
                first_line[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    class DuplicateKeyError(yaml.YAMLError):
        def __init__(self, key: Any, first: int, again: int) -> None:
            super().__init__(f"line {again}: duplicate key {_shown(key)} (first set on line {first})")

    return yaml, StrictLoader


def _load_yaml(text: str) -> Any:
    yaml, loader = _yaml()
    return yaml.load(text, Loader=loader)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and strictly validate one YAML file; return its raw mapping."""
    yaml_error = _yaml()[0].YAMLError
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file is larger than {_MAX_FILE_BYTES} bytes")
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml_error) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise ConfigError(f"{path}: cannot read configuration: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    _split_exporters(data)
    _validate(data, origin=str(path))
    return data


def _split_exporters(data: dict[str, Any]) -> None:
    """`exporters: mlflow` or `otlp, mlflow`: one string means the same in the file, the environment and
    configure() as the list of its comma-separated names."""
    if isinstance(data.get("exporters"), str):
        data["exporters"] = tuple(p.strip() for p in data["exporters"].split(",") if p.strip())


def _validate(data: Mapping[str, Any], origin: str) -> Settings:
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None


def _explain(exc: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if not key:  # a check across keys names them in its message
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            top = str(err["loc"][0])
            close = _close_match(top)
            hint = f" (did you mean {close[0]!r}?)" if close and len(err["loc"]) == 1 else ""
            lines.append(f"  key {key!r}: unknown key{hint}")
        else:
            lines.append(f"  key {key!r}: {err['msg']} (got {_shown(err.get('input'))})")
    return "\n".join(lines)


def _close_match(name: str) -> list[str]:
    import difflib  # only for error messages

    return difflib.get_close_matches(name, _FIELDS, n=1)


def _shown(value: Any) -> str:
    """A rejected value for an error message: its repr, cut so a huge value cannot bury the message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}... ({len(text)} characters)"


_TRUE = {"1", "true", "yes", "on"}
_YAML_VALUED = {"alerts", "alert_webhook"}  # lists of mappings / mappings: YAML or JSON in the variable
_FALSE = {"0", "false", "no", "off", ""}


def _env_value(name: str, raw: str) -> Any:
    """Turn one MLTRACK_* string into the shape its field expects (pydantic does the rest, leniently)."""
    annotation = str(_FIELDS[name].annotation)
    if name in _YAML_VALUED:
        try:
            return _load_yaml(raw)
        except _yaml()[0].YAMLError as exc:
            raise ConfigError(f"MLTRACK_{name.upper()}: expected YAML/JSON: {exc}") from None
    if "dict" in annotation:
        if name == "otlp_headers":
            return _parse_headers(raw)
        try:
            return _load_yaml(raw)
        except _yaml()[0].YAMLError as exc:
            raise ConfigError(f"MLTRACK_{name.upper()}: expected a YAML/JSON mapping: {exc}") from None
    if "tuple" in annotation:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if annotation in ("<class 'bool'>", "bool"):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"MLTRACK_{name.upper()}: expected true or false, got {raw!r}")
    if raw.strip() == "" and "None" in annotation:
        return None
    return raw


def _parse_headers(raw: str) -> dict[str, str]:
    """OTLP header syntax: `k1=v1,k2=v2` (values URL-encoded)."""
    from urllib.parse import unquote

    headers = {}
    for item in raw.split(","):
        if "=" in item:
            key, _, value = item.partition("=")
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    # Standard OpenTelemetry variables first, so MLTRACK_* can override them.
    if env.get("OTEL_SERVICE_NAME", "").strip():  # the OTel spec: an empty variable counts as unset
        values["service_name"] = env["OTEL_SERVICE_NAME"].strip()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        values["otlp_endpoint"] = endpoint
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol:
        values["otlp_protocol"] = protocol
    headers = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
    if headers:
        values["otlp_headers"] = _parse_headers(headers)
    compression = env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression:
        values["otlp_compression"] = compression
    insecure = env.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
    if insecure:
        values["otlp_insecure"] = insecure.strip().lower() == "true"
    if env.get("MLFLOW_TRACKING_URI"):
        values["mlflow_tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    if capture is not None:
        # Boolean in older conventions; NO_CONTENT / SPAN_ONLY / EVENT_ONLY / SPAN_AND_EVENT in newer ones.
        on = capture.strip().lower() in _TRUE | {"span_only", "span_and_event", "event_only"}
        values["llm_log_prompts"] = values["llm_log_responses"] = on
    opt_in = env.get("OTEL_SEMCONV_STABILITY_OPT_IN")
    if opt_in is not None:  # a comma-separated list of opt-ins, as opentelemetry-instrumentation reads it
        values["genai_latest_conventions"] = "gen_ai_latest_experimental" in {s.strip() for s in opt_in.split(",")}
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        values["llm_tracking_enabled"] = False

    for key, raw in env.items():
        if not key.startswith("MLTRACK_") or key == "MLTRACK_CONFIG":
            continue
        name = key[len("MLTRACK_") :].lower()
        if name not in _FIELDS:
            close = _close_match(name)
            hint = f" (did you mean MLTRACK_{close[0].upper()}?)" if close else ""
            raise ConfigError(f"environment variable {key}: unknown setting{hint}")
        values[name] = _env_value(name, raw)
    return values


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from the config file (found or given), the environment and explicit overrides."""
    env = os.environ if env is None else env
    explicit = path or env.get("MLTRACK_CONFIG")
    file_path = Path(explicit) if explicit else find_config_file()
    if explicit and not file_path.is_file():
        raise ConfigError(f"{file_path}: configuration file not found")
    merged: dict[str, Any] = read_config_file(file_path) if file_path else {}
    merged.update(_from_env(env))
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"configure(): unknown setting(s) {', '.join(unknown)}")
    merged.update(overrides)
    _split_exporters(merged)
    origin = f"{file_path} + environment" if file_path else "environment"
    return _validate(merged, origin=origin)


_current: Settings | None = None


def current() -> Settings:
    """The active Settings: those configure() installed, else loaded once from file and environment.

    Without configure(), a broken configuration cannot be raised into the user's calls: it is logged once and
    tracking stays off (capturing content the file may have meant to forbid would be worse than capturing nothing).
    configure() raises the same error as ConfigError.
    """
    global _current
    if _current is None:
        try:
            _current = load_settings()
        except ConfigError as exc:
            from . import guard

            guard.record_error("config.load", exc)
            _current = Settings(llm_tracking_enabled=False)
    return _current


def set_current(settings: Settings | None) -> None:
    """Install the active Settings (configure() does this; None reloads lazily on next use)."""
    global _current
    _current = settings
