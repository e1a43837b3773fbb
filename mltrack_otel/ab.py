"""`mltrack_otel.ab(...)`: pick a variant of an A/B experiment and record the choice on the model calls it feeds.

    with mltrack_otel.ab("greeting", variants={"short": "Say hi.", "warm": "Greet warmly."}) as choice:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "system", "content": choice.value}, ...])

Every model call made inside the block carries ``mltrack.ab.experiment`` and ``mltrack.ab.variant`` (through
call_context, like attribution and prompt identity), so ``mltrack-otel compare --by mltrack.ab.variant`` compares
the variants' cost, tokens, latency and errors. The pick is random by the ``split`` weights, or sticky: the same
user (``user.id``) or conversation always gets the same variant, in any process, by a stable hash of its id.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from . import call_context

__all__ = ["Choice", "ab"]

log = logging.getLogger(__name__)

EXPERIMENT = "mltrack.ab.experiment"  # semconv.MLTRACK_AB_EXPERIMENT (not imported: ab() stays stdlib-cheap)
VARIANT = "mltrack.ab.variant"  # semconv.MLTRACK_AB_VARIANT
_USER = "user.id"
_CONVERSATION = "gen_ai.conversation.id"
_SESSION = "session.id"
STICKY = ("user", "conversation")

T = TypeVar("T")

_random = random.Random()
_warned: set[str] = set()  # what was already warned about (one log line each)


@dataclass
class Choice(Generic[T]):
    """The variant picked: `name` (a key of `variants`), `value` (its value). Use it as a context manager so the
    model calls made inside carry the experiment and variant; `sticky` is False when a sticky experiment found
    no id to stick to and picked at random. One choice is one pick: enter it from one thread or task at a time
    (call ab() again for another call, as `with mltrack_otel.ab(...) as choice:` does)."""

    experiment: str
    name: str
    value: T
    sticky: bool = False
    _blocks: list[ExitStack] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def attributes(self) -> dict[str, str]:
        """What a model call made under this choice carries."""
        return {EXPERIMENT: self.experiment, VARIANT: self.name}

    def __enter__(self) -> Choice[T]:
        stack = ExitStack()
        stack.enter_context(call_context.attached(self.attributes))
        self._blocks.append(stack)
        return self

    def __exit__(self, *exc: object) -> None:
        self._blocks.pop().close()

    def __iter__(self) -> Iterator[Any]:
        """`name, value = ab(...)`."""
        return iter((self.name, self.value))


def ab(
    name: str,
    variants: Mapping[str, T] | Sequence[str] | None = None,
    split: Mapping[str, float] | None = None,
    sticky: Literal["user", "conversation"] | None = None,
    *,
    key: str | None = None,
    rng: random.Random | None = None,
) -> Choice[T]:
    """Pick one of `variants` ({name: value}, or a list of names that are their own values) for experiment `name`.

    `.mltrack.yml` can set the experiment under ``ab_tests: {name: {variants, split, sticky, force}}``: its
    variants serve when the code passes none, and its split, sticky and force (every call gets that variant) win
    over the code's, so a split changes without a deploy. A configured split or force that does not fit the
    code's variants is logged once and ignored: a configuration change never breaks the call.

    split:  {variant name: weight}, the same names as `variants`, every weight positive (they need not sum to 1);
            None splits evenly.
    sticky: None picks at random per call; "user" sticks to the `user.id` attached around the call
            (`mltrack_otel.attributes(user_id=...)`), "conversation" to the current conversation id
            (`track_llm_context(conversation_id=...)`, else `session.id`). `key` gives the id to stick to directly.
            With no id to stick to, the pick is random and one warning is logged per experiment.
    rng:    the random.Random to pick with (tests seed one); ignored when the pick is sticky.

    Raises ValueError or TypeError for an empty name, no variants, split names that differ from the variants',
    or a weight that is not a positive number.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"ab(): the experiment name must be a non-empty string, not {name!r}")
    configured = _configured(name)
    if configured is not None and variants is None:
        variants = configured.variants  # type: ignore[assignment]
    if variants is None:
        raise ValueError(
            f"ab({name!r}): no variants: pass variants=..., or set ab_tests.{name}.variants in .mltrack.yml"
        )
    names, values = _variants(name, variants)
    force = None
    if configured is not None:
        split, sticky, force = _apply(name, names, configured, split, sticky)
    weights = _weights(names, split)
    if sticky is not None and sticky not in STICKY:
        raise ValueError(f"ab({name!r}): sticky must be None, 'user' or 'conversation', not {sticky!r}")
    if key is not None and not isinstance(key, str):
        raise TypeError(f"ab({name!r}): key must be a string, not {type(key).__name__}")
    stick_to = key if key is not None else _sticky_key(sticky) if sticky is not None else None
    if stick_to is not None:
        u = _unit(name, stick_to)
    else:
        if sticky is not None:
            _warn_once(
                f"{name}.sticky",
                "mltrack_otel.ab(%r, sticky=%r): no %s id here, so this pick (and any other without one) is random",
                name,
                sticky,
                sticky,
            )
        u = (rng or _random).random()
    index = names.index(force) if force is not None else _index(weights, u)
    return Choice(name, names[index], values[index], sticky=stick_to is not None)


def _configured(name: str) -> Any:
    """The `ab_tests` entry of the active settings for `name`, or None (also when the settings cannot be read)."""
    try:
        from . import config

        return config.current().ab_tests.get(name)
    except Exception as exc:  # the settings' own errors are reported where they load; never break the pick
        from . import guard

        guard.record_error("ab.settings", exc)
        return None


def _apply(
    name: str, names: list[str], configured: Any, split: Mapping[str, float] | None, sticky: Any
) -> tuple[Mapping[str, float] | None, Any, str | None]:
    """The configured split, sticky and force over the code's; a configured split or force that names other
    variants than the code's is logged once and left out."""
    force = configured.force
    if configured.split is not None:
        if set(configured.split) == set(names):
            split = configured.split
        else:
            _warn_once(
                f"{name}.split",
                "ab_tests.%s.split names %s, the code's variants are %s: split ignored",
                name,
                sorted(configured.split),
                names,
            )
    if force is not None and force not in names:
        _warn_once(
            f"{name}.force", "ab_tests.%s.force %r is not among the code's variants %s: ignored", name, force, names
        )
        force = None
    return split, configured.sticky or sticky, force


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _variants(name: Any, variants: Any) -> tuple[list[str], list[Any]]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"ab(): the experiment name must be a non-empty string, not {name!r}")
    if isinstance(variants, Mapping):
        names, values = list(variants), list(variants.values())
    elif isinstance(variants, Sequence) and not isinstance(variants, str | bytes):
        names, values = list(variants), list(variants)
        if len(set(names)) != len(names):
            raise ValueError(f"ab({name!r}): variant names repeat: {names!r}")
    else:
        raise TypeError(
            f"ab({name!r}): variants must be a mapping {{name: value}} or a list of names, "
            f"not {type(variants).__name__}"
        )
    if not names:
        raise ValueError(f"ab({name!r}): no variants to pick from")
    for variant in names:
        if not isinstance(variant, str) or not variant:
            raise ValueError(f"ab({name!r}): variant names must be non-empty strings, not {variant!r}")
    return names, values


def _weights(names: list[str], split: Mapping[str, float] | None) -> list[float]:
    if split is None:
        return [1.0] * len(names)
    if not isinstance(split, Mapping):
        raise TypeError(f"split must be a mapping {{variant name: weight}}, not {type(split).__name__}")
    missing = [n for n in names if n not in split]
    extra = [n for n in split if n not in names]
    if missing or extra:
        said = [f"no weight for {', '.join(map(repr, missing))}"] if missing else []
        said += [f"{', '.join(map(repr, extra))} not among the variants {names!r}"] if extra else []
        raise ValueError(f"split names must be the variants' names: {'; '.join(said)}")
    weights = []
    for n in names:
        weight = split[n]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"split weight of {n!r} must be a positive number, not {weight!r}")
        weights.append(float(weight))
    return weights


def _sticky_key(sticky: str) -> str | None:
    attached = call_context.current()
    if sticky == "user":
        found = attached.get(_USER)
    else:
        from .ledger import current_scope

        scope = current_scope()
        found = (scope.conversation_id if scope is not None else None) or attached.get(_CONVERSATION)
        found = found or attached.get(_SESSION)
    return str(found) if found not in (None, "") else None


def _unit(experiment: str, key: str) -> float:
    """A number in [0, 1) that depends only on the experiment and the id: the same in every process and run
    (Python's hash() is salted per process; SHA-256 is not), and independent between experiments."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _index(weights: list[float], u: float) -> int:
    target = u * sum(weights)
    running = 0.0
    for i, weight in enumerate(weights):
        running += weight
        if target < running:
            return i
    return len(weights) - 1  # u * total rounded up to the total


class _CallableModule(types.ModuleType):
    """`mltrack_otel.ab(...)` calls ab() whether the package attribute is the function (the lazy export) or this
    module (Python sets it to the submodule when `mltrack_otel.ab` is imported by name first)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Choice[Any]:
        return ab(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
