"""Price LLM calls: genai-prices lookup, provider aliases, user overrides and a memoised fast path.

Usage semantics (read from genai-prices 0.2.3's unit registry, pinned by tests): its ``input_tokens`` is
the *total* input; ``cache_read_tokens`` and ``cache_write_tokens`` are parts of it, priced at their own rate
when the model has one. ``output_reasoning_tokens`` is likewise part of ``output_tokens``. That is the
OpenTelemetry GenAI convention too, so our :class:`Usage` maps across field by field.

Only genai-prices' bundled data is used (no update fetching). The first lookup of a (provider, model) pair
walks genai-prices' tables (~100 µs); after that the resolved prices are cached and the cost computed here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from . import providers
from .hosts import HostKey, is_local, parse_host
from .providers import serves_its_own_models

__all__ = ["BUILTIN_PROVIDER_ALIASES", "LOCAL", "Cost", "PriceOverride", "Pricer", "Usage", "override_key"]

_log = logging.getLogger("mltrack_otel.pricing")

_PER_MTOK = Decimal(1_000_000)
_NS_PER_DAY = 86_400 * 10**9
_US_PER_DAY = 86_400 * 10**6
_EPOCH = date(1970, 1, 1)
_CACHE_MAX = 4096  # resolved (provider, model) pairs kept; oldest evicted first
_MAX_MODEL_LEN = 512  # longer "model names" are junk: not looked up, not cached
_MAX_PRICE_PER_MTOK = 1_000_000  # $1 a token: beyond any real price, and costs stay finite as floats

# Every name of a priced provider (gen_ai.provider.name, LangChain, LlamaIndex and LiteLLM names) -> its genai-prices
# id, from the provider registry. Names missing here fall back to an exact genai-prices id, then to genai-prices' own
# provider matching. "ibm.watsonx.ai" has no genai-prices data: its models are priced only if the model name
# identifies a provider, or by an override.
BUILTIN_PROVIDER_ALIASES: Mapping[str, str] = MappingProxyType(providers.pricing_aliases())


class Usage(NamedTuple):
    """Token usage of one call, normalised to the OTel GenAI convention (totals include their parts).

    NamedTuples (like Cost): immutable, and built on every priced span at a third of a frozen dataclass's cost.
    """

    input_tokens: int  # includes cache read + cache creation tokens
    output_tokens: int  # includes reasoning tokens
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Cost(NamedTuple):
    """The price of one call in USD (exact Decimals) and where the price came from."""

    input: Decimal  # all input, including cache read/write
    output: Decimal
    total: Decimal  # input + output, plus any per-request fee (e.g. Perplexity's search fee)
    source: str  # "genai-prices:<provider id>/<model id>", "override:<key>" or "local"


# A call served from this machine or a private network, with no override pricing it: it adds nothing to spend and
# carries no cost attributes (mltrack.cost.local instead). Compare by identity.
LOCAL = Cost(Decimal(0), Decimal(0), Decimal(0), "local")


class PriceOverride(BaseModel):
    """A user-supplied price (USD per 1M tokens); wins over genai-prices.

    Keyed in ``price_overrides`` by a model name, by ``host:<host>[:<port>]`` (every model served there, e.g. a
    GPU-hour or shadow price for ``host:localhost:11434``) or by ``provider:<gen_ai.provider.name>``
    (``provider:ollama``). A model key wins over a host key, a host key over a provider key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Decimal = Field(ge=0, le=_MAX_PRICE_PER_MTOK)
    output_per_mtok: Decimal = Field(ge=0, le=_MAX_PRICE_PER_MTOK)
    cache_read_per_mtok: Decimal | None = Field(default=None, ge=0, le=_MAX_PRICE_PER_MTOK)  # None: the input price
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0, le=_MAX_PRICE_PER_MTOK)  # None: the input price
    provider: str | None = None  # model keys only: apply only when the call's provider is this one


def override_key(key: str, override: PriceOverride | None = None) -> tuple[str, Any]:
    """Parse a ``price_overrides`` key: ("model", name), ("host", (host, port)) or ("provider", name).

    ValueError, saying what is expected, for a malformed host or provider key.
    """
    if not isinstance(key, str):
        raise ValueError(f"price_overrides key {key!r}: expected a string")
    kind, sep, rest = key.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ("host", "provider"):
        return "model", key  # model names may contain ':' (llama3.1:8b), only these two prefixes are special
    if override is not None and override.provider is not None:
        raise ValueError(f"price_overrides key {key!r}: 'provider' only restricts a model key")
    if kind == "host":
        try:
            return "host", parse_host(rest)
        except ValueError as exc:
            raise ValueError(f"price_overrides key {key!r}: {exc} (write host:<host> or host:<host>:<port>)") from None
    name = rest.strip().lower()
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"price_overrides key {key!r}: expected provider:<gen_ai.provider.name>, e.g. provider:ollama")
    return "provider", name


# --- compiled prices ---------------------------------------------------------------------------------------

_FAST_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "output_reasoning_mtok"})


class _Tiered:
    """genai-prices' TieredPrices, per token: the highest tier whose start the *total* input exceeds wins."""

    __slots__ = ("base", "tiers")

    def __init__(self, base: Decimal, tiers: tuple[tuple[int, Decimal], ...]) -> None:
        self.base = base
        self.tiers = tiers  # (start, per-token price), highest start first

    def at(self, total_input: int) -> Decimal:
        for start, price in self.tiers:
            if total_input > start:
                return price
        return self.base


@dataclass(frozen=True, slots=True)
class _Rates:
    """One period's prices, per token; with `genai_price` set, genai-prices prices it (a shape we skip)."""

    input: Decimal | _Tiered | None
    output: Decimal | _Tiered | None
    cache_read: Decimal | _Tiered | None
    cache_write: Decimal | _Tiered | None
    reasoning: Decimal | _Tiered | None
    tiered: bool
    genai_price: Any  # genai_prices.types.ModelPrice | None
    label: str
    per_request: Decimal | None = None  # a fee on every call (Perplexity's requests_kcount / 1000)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A resolved model: its prices over time (`periods` last rule first, as genai-prices tries them)."""

    source: str
    default: _Rates
    periods: tuple[tuple[str, int, int, Any, _Rates], ...]  # (kind, a, b, raw constraint, rates)
    detail: str


def _per_token(value: Any) -> Decimal | _Tiered:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        tiers = sorted(value.tiers, key=lambda t: t.start, reverse=True)
        return _Tiered(value.base / _PER_MTOK, tuple((t.start, t.price / _PER_MTOK) for t in tiers))
    return value / _PER_MTOK


def _compile_rates(model_price: Any) -> _Rates:
    from genai_prices.types import TieredPrices

    prices = {k: v for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}
    fast = {k: v for k, v in prices.items() if k in _FAST_KEYS}
    # Other price keys (audio, images, web searches...) price usage we never report, so they add nothing --
    # except a per-request price, which genai-prices charges on every call (in the total, not input or output).
    per_request = prices.get("requests_kcount")
    simple = all(
        isinstance(v, TieredPrices) or (isinstance(v, Decimal) and v.is_finite() and v >= 0) for v in fast.values()
    ) and (per_request is None or (isinstance(per_request, Decimal) and per_request.is_finite() and per_request >= 0))
    if not simple:
        return _Rates(None, None, None, None, None, False, model_price, str(model_price))
    rates = {k: _per_token(v) for k, v in fast.items()}
    return _Rates(
        rates.get("input_mtok"),
        rates.get("output_mtok"),
        rates.get("cache_read_mtok"),
        rates.get("cache_write_mtok"),
        rates.get("output_reasoning_mtok"),
        any(isinstance(v, _Tiered) for v in rates.values()),
        None,
        str(model_price),
        per_request / 1000 if per_request is not None else None,
    )


def _utc_us_of_day(value: dt_time) -> int:
    if value.tzinfo is not None:
        value = datetime.combine(_EPOCH, value).astimezone(UTC).time()
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 10**6 + value.microsecond


def _compile_constraint(constraint: Any) -> tuple[str, int, int]:
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    if constraint is None:
        return "always", 0, 0
    if isinstance(constraint, StartDateConstraint):
        return "date", (constraint.start_date - _EPOCH).days, 0
    if isinstance(constraint, TimeOfDateConstraint):
        return "time", _utc_us_of_day(constraint.start_time), _utc_us_of_day(constraint.end_time)
    return "other", 0, 0  # a constraint type we do not know: ask the constraint itself


def _compile_model(provider: Any, model: Any) -> _Entry:
    """Turn a genai-prices (Provider, ModelInfo) into an _Entry: each price period compiled once."""
    from genai_prices import __version__

    source = f"genai-prices:{provider.id}/{model.id}"
    detail = f"{provider.name} {model.name or model.id}, bundled genai-prices {__version__} data"
    if not isinstance(model.prices, list):
        return _Entry(source, _compile_rates(model.prices), (), detail)
    periods = tuple(
        (*_compile_constraint(c.constraint), c.constraint, _compile_rates(c.prices)) for c in reversed(model.prices)
    )
    return _Entry(source, _compile_rates(model.prices[0].prices), periods, detail + ", price varies with time")


def _rates_at(entry: _Entry, at_ns: int) -> _Rates:
    # Same rule as genai-prices' ModelInfo.get_prices: the last price whose constraint holds, else the first.
    for kind, a, b, raw, rates in entry.periods:
        if kind == "always":
            return rates
        if kind == "date":
            if at_ns // _NS_PER_DAY >= a:
                return rates
        elif kind == "time":
            us = (at_ns // 1000) % _US_PER_DAY
            if (a <= us < b) if a <= b else (us >= a or us < b):
                return rates
        elif raw.active(datetime.fromtimestamp(at_ns / 1e9, tz=UTC)):
            return rates
    return entry.default


def _usage_ok(u: Usage) -> bool:
    # Our convention: ints, parts within their totals. Anything else is a caller bug, priced as "unpriced".
    i, o, cr, cw, rs = (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    )
    return (
        type(i) is int
        and type(o) is int
        and type(cr) is int
        and type(cw) is int
        and type(rs) is int
        and cr >= 0
        and cw >= 0
        and rs >= 0
        and cr + cw <= i
        and rs <= o
    )


def _cost(rates: _Rates, usage: Usage, source: str) -> Cost | None:
    if rates.genai_price is not None:
        return _genai_cost(rates.genai_price, usage, source)
    inp = usage.input_tokens
    out = usage.output_tokens
    r_in, r_out, r_cr, r_cw, r_rs = (
        rates.input,
        rates.output,
        rates.cache_read,
        rates.cache_write,
        rates.reasoning,
    )
    if r_in is None and r_out is None:
        return None  # no token prices at all (e.g. per-page OCR): unpriced, not free
    # Parts without their own price stay inside their total and pay its rate, as in genai-prices.
    cr = usage.cache_read_tokens if r_cr is not None else 0
    cw = usage.cache_write_tokens if r_cw is not None else 0
    rs = usage.reasoning_tokens if r_rs is not None else 0
    plain_in = inp - cr - cw
    plain_out = out - rs
    if rates.tiered:  # the tier is chosen by the total input, cache tokens included
        r_in, r_out, r_cr, r_cw, r_rs = (
            r.at(inp) if isinstance(r, _Tiered) else r for r in (r_in, r_out, r_cr, r_cw, r_rs)
        )
    cost_in = plain_in * r_in if r_in is not None and plain_in else Decimal(0)
    if cr:
        cost_in += cr * r_cr
    if cw:
        cost_in += cw * r_cw
    cost_out = plain_out * r_out if r_out is not None and plain_out else Decimal(0)
    if rs:
        cost_out += rs * r_rs
    total = cost_in + cost_out if rates.per_request is None else cost_in + cost_out + rates.per_request
    return Cost(cost_in, cost_out, total, source)


def _genai_cost(model_price: Any, usage: Usage, source: str) -> Cost:
    from genai_prices import Usage as GenaiUsage

    calc = model_price.calc_price(
        GenaiUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_reasoning_tokens=usage.reasoning_tokens,
        )
    )
    return Cost(calc["input_price"], calc["output_price"], calc["total_price"], source)


@functools.cache
def _genai_data() -> tuple[list[Any], dict[str, Any]]:
    # Imported on first use: genai-prices takes ~0.2 s to import, and pricing may never be needed. The bundled
    # table is used directly, so neither an UpdatePrices someone started nor genai-prices' own (unbounded)
    # lookup caches are involved.
    from genai_prices.data import providers

    return providers, {p.id: p for p in providers}


_UNKNOWN: Any = object()  # cache marker for a pair we could not price
_LOCAL_ENTRY: Any = object()  # cache marker for a call served locally, with no override


class Pricer:
    """Prices model calls from genai-prices' bundled data, with user overrides and provider aliases.

    Thread-safe. Lookups are memoised per (provider, model) in a bounded cache, so pricing a known model costs
    a few microseconds and an unknown one a dict lookup.
    """

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        aliases: Mapping[str, str] | None = None,
        cloud_hosts: Iterable[str] = (),
    ) -> None:
        """`cloud_hosts`: local or private hosts (``host[:port]``) that forward to a cloud provider, such as an LLM
        gateway or proxy on localhost: their calls get the cloud price. Bad keys or hosts raise ValueError."""
        self._aliases = dict(BUILTIN_PROVIDER_ALIASES)
        self._aliases.update({k.strip().lower(): v.strip().lower() for k, v in (aliases or {}).items()})
        self._overrides: dict[str, PriceOverride] = {}  # by model name
        self._host_overrides: dict[HostKey, tuple[str, PriceOverride]] = {}
        self._provider_overrides: dict[str, tuple[str, PriceOverride]] = {}
        for key, value in (overrides or {}).items():
            override = PriceOverride.model_validate(value)
            kind, parsed = override_key(key, override)
            if kind == "host":
                self._host_overrides[parsed] = (key, override)
            elif kind == "provider":
                self._provider_overrides[self._provider_id(parsed)] = (key, override)
            else:
                self._overrides[key] = override
        self._cloud_hosts = frozenset(parse_host(h) for h in cloud_hosts)
        self._cache: dict[tuple[Any, ...], Any] = {}  # (provider, model[, address, port]) -> entry
        self._lock = threading.Lock()
        self._warned: set[Any] = set()

    def price(
        self,
        provider: str | None,
        model: str,
        usage: Usage,
        at_ns: int | None = None,
        address: str | None = None,
        port: int | None = None,
    ) -> Cost | None:
        """The cost of one call at time `at_ns` (ns since the epoch; None = now); None if it cannot be priced.

        `address` and `port` are the call's server (``server.address`` / ``server.port``): a host or provider
        override may price it, and a local or private address never gets a cloud price (:data:`LOCAL` unless an
        override prices it).

        None means an unknown model or provider, a model without token prices, or invalid usage (not ints,
        negative, or parts larger than their totals, e.g. cache tokens not counted in input_tokens); each is
        logged once per (provider, model). Never raises.
        """
        try:
            key = (provider, model) if address is None else (provider, model, address, port)
            entry = self._cache.get(key)
            if entry is None:
                entry = self._lookup(provider, model, address, port)
            if entry is _UNKNOWN:
                return None
            if entry is _LOCAL_ENTRY:
                return LOCAL
            if not _usage_ok(usage):
                self._warn_once(
                    ("usage", provider, model),
                    "invalid token usage for %.200r: %r; call left unpriced",
                    model,
                    usage,
                )
                return None
            now = time.time_ns() if at_ns is None else at_ns
            rates = _rates_at(entry, now) if entry.periods else entry.default
            cost = _cost(rates, usage, entry.source)
            if cost is None:
                self._warn_once(
                    ("noprice", provider, model), "%s has no token prices; call left unpriced", entry.source
                )
            return cost
        except Exception:
            self._warn_once(
                ("error", provider, model), "pricing %.200r failed; call left unpriced", model, exc_info=True
            )
        return None

    def describe(self, provider: str | None, model: str) -> str | None:
        """Where the price of `model` comes from and what it is now, for humans; None if unknown."""
        try:
            entry = self._cache.get((provider, model)) or self._lookup(provider, model, None, None)
            if entry is _UNKNOWN or entry is _LOCAL_ENTRY:
                return None
            rates = _rates_at(entry, time.time_ns()) if entry.periods else entry.default
            return f"{entry.source}: {rates.label} ({entry.detail})"
        except Exception:
            return None

    # --- resolution (cache misses only) --------------------------------------------------------------------

    def _lookup(self, provider: str | None, model: str, address: str | None, port: int | None) -> Any:
        if not isinstance(model, str) or len(model) > _MAX_MODEL_LEN:
            # Not cached (could be large and endless); logged once per Pricer.
            self._warn_once(
                "junk-model",
                "ignoring a model name that is not a string of at most %d characters",
                _MAX_MODEL_LEN,
            )
            return _UNKNOWN
        provider = provider if isinstance(provider, str) else None
        entry = self._resolve(provider, model)
        if entry is None or not entry.source.startswith("override:"):  # a model key is the most specific price
            host = address if isinstance(address, str) else None
            entry = self._server_entry(provider, host, port if isinstance(port, int) else None) or entry
        if entry is None:
            entry = _UNKNOWN
            self._warn_once(
                ("unknown", provider, model),
                "no price for model %.200r (provider %.100r); its calls stay unpriced (add a price override)",
                model,
                provider,
            )
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[(provider, model) if address is None else (provider, model, address, port)] = entry
        return entry

    def _server_entry(self, provider: str | None, address: str | None, port: int | None) -> _Entry | None:
        """A host or provider override for this call; _LOCAL_ENTRY for a local server without one."""
        host = address.strip().lower().rstrip(".") if address else None
        found = None
        if host is not None and self._host_overrides:
            found = self._host_overrides.get((host, port)) or self._host_overrides.get((host, None))
        if found is None and provider and self._provider_overrides:
            found = self._provider_overrides.get(self._provider_id(provider) or "")
        if found is not None:
            key, override = found
            return self._override_entry(key, override)
        if host is None or not is_local(host):
            return None
        if (host, port) not in self._cloud_hosts and (host, None) not in self._cloud_hosts:
            return _LOCAL_ENTRY
        return None

    def _resolve(self, provider: str | None, model: str) -> _Entry | None:
        name = model.strip()
        if not name:
            return None
        prefix, sep, rest = name.partition("/")
        # "openai/gpt-4o", "bedrock/anthropic.claude-...": a known provider before the first slash.
        prefixed = self.find_provider(prefix, fuzzy=False) if sep and rest else None
        stripped = rest.strip() if prefixed is not None else None

        for key in dict.fromkeys(k for k in (model, name, stripped) if k):
            override = self._overrides.get(key)
            if override is not None and self._override_applies(override, provider, prefix if stripped else None):
                return self._override_entry(key, override)

        providers, _ = _genai_data()
        given = self.find_provider(provider, fuzzy=True) if provider else None
        attempts: list[tuple[Any, str]] = []
        if given is not None:
            attempts.append((given, name))
            if stripped:
                attempts.append((given, stripped))
        if prefixed is not None and prefixed is not given:
            attempts.append((prefixed, stripped))
        for prov, ref in attempts:
            found = prov.find_model(ref, all_providers=providers)
            if found is not None:
                return _compile_model(prov, found)
        if provider and serves_its_own_models(provider):
            return None
        # As genai-prices does without a provider: the first provider whose model pattern matches the name.
        # Also used when the given provider lacks the model (e.g. an OpenAI SDK pointed at another vendor).
        for ref in dict.fromkeys(r.lower() for r in (name, stripped) if r):
            for prov in providers:
                if prov.model_match is not None and prov.model_match.is_match(ref):
                    found = prov.find_model(ref, all_providers=providers)
                    if found is not None:
                        return _compile_model(prov, found)
                    break
        return None

    def find_provider(self, name: str, *, fuzzy: bool) -> Any:
        """The genai-prices provider for a name: the aliases first, then its id, then (fuzzy) its own matching."""
        from genai_prices.data_snapshot import find_provider_by_id

        providers, by_id = _genai_data()
        key = name.strip().lower()
        if key in self._aliases:
            target = by_id.get(self._aliases[key])
            if target is None:
                self._warn_once(
                    ("alias", key),
                    "provider alias %r -> %r: no such genai-prices provider",
                    key,
                    self._aliases[key],
                )
            return target
        if key in by_id:
            return by_id[key]
        return find_provider_by_id(providers, key) if fuzzy and key else None

    def _provider_id(self, name: str | None) -> str | None:
        if not name:
            return None
        key = name.strip().lower()
        return self._aliases.get(key, key)

    def _override_applies(self, override: PriceOverride, provider: str | None, prefix: str | None) -> bool:
        if override.provider is None:
            return True
        wanted = self._provider_id(override.provider)
        return wanted in (self._provider_id(provider), self._provider_id(prefix))

    @staticmethod
    def _override_entry(key: str, o: PriceOverride) -> _Entry:
        cache_read = o.input_per_mtok if o.cache_read_per_mtok is None else o.cache_read_per_mtok
        cache_write = o.input_per_mtok if o.cache_write_per_mtok is None else o.cache_write_per_mtok
        label = (
            f"${o.input_per_mtok}/input MTok, ${o.output_per_mtok}/output MTok, "
            f"${cache_read}/cache read MTok, ${cache_write}/cache write MTok"
        )
        rates = _Rates(
            o.input_per_mtok / _PER_MTOK,
            o.output_per_mtok / _PER_MTOK,
            cache_read / _PER_MTOK,
            cache_write / _PER_MTOK,
            None,
            False,
            None,
            label,
        )
        if override_key(key)[0] != "model":
            scope = "every call it names"
        else:
            scope = f"provider {o.provider} only" if o.provider else "any provider"
        return _Entry(f"override:{key}", rates, (), f"user price override, {scope}")

    def _warn_once(self, key: Any, msg: str, *args: Any, exc_info: bool = False) -> None:
        try:
            hash(key)
        except TypeError:  # an unhashable "provider" or "model" from a misbehaving caller
            key = repr(key)[:300]
        with self._lock:
            if key in self._warned:
                return
            if len(self._warned) >= _CACHE_MAX:
                self._warned.clear()
            self._warned.add(key)
        _log.warning(msg, *args, exc_info=exc_info)
