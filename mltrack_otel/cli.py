"""The `mltrack-otel` command: `demo`, `price`, `report`, `compare`."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pricing import Pricer

# What each command needs beyond the core install, module -> the extra that brings it.
_NEEDS = {"report": ("mlflow",), "compare": ("mlflow",), "demo": ("mlflow", "openai", "anthropic")}


def _price(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .pricing import Pricer, Usage

    if args.cached + args.cache_write > args.input:
        print(
            f"--cached ({args.cached}) + --cache-write ({args.cache_write}) exceed --input ({args.input}): "
            "--input counts every input token, cached ones included",
            file=sys.stderr,
        )
        return 2
    settings = load_settings()
    pricer = Pricer(settings.price_overrides, settings.provider_aliases)
    usage = Usage(
        input_tokens=args.input,
        output_tokens=args.output,
        cache_read_tokens=args.cached,
        cache_write_tokens=args.cache_write,
    )
    cost = pricer.price(args.provider, args.model, usage)
    if args.provider and (cost is None or not cost.source.startswith("override:")):
        wrong = _provider_mismatch(pricer, args.provider, args.model, cost.source if cost else None)
        if wrong:
            print(wrong, file=sys.stderr)
            return 2
    if cost is None:
        print(f"{args.model}: no known price (provider {args.provider or 'inferred'}); add a price_overrides entry")
        return 1
    print(f"model      {args.model}")
    print(f"source     {cost.source}")
    print(f"input      {args.input} tokens ({args.cached} cache read, {args.cache_write} cache write)")
    print(f"output     {args.output} tokens")
    print(f"input USD  {_usd(cost.input)}")
    print(f"output USD {_usd(cost.output)}")
    print(f"total USD  {_usd(cost.total)}")
    return 0


def _provider_mismatch(pricer: Pricer, provider: str, model: str, source: str | None) -> str | None:
    """Why --provider cannot be right, or None: a name genai-prices and the aliases do not know, or a provider
    whose price list lacks the model that another provider's list priced."""
    known = pricer.find_provider(provider, fuzzy=True)  # aliases first, then genai-prices' own provider matching
    if known is None:
        import difflib

        from genai_prices.data import providers

        from .pricing import BUILTIN_PROVIDER_ALIASES

        names = sorted({p.id for p in providers} | set(BUILTIN_PROVIDER_ALIASES))
        close = difflib.get_close_matches(provider.strip().lower(), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (add a provider_aliases entry for it)"
        return f"--provider {provider!r}: unknown provider{hint}"
    priced_by = source.removeprefix("genai-prices:").split("/", 1)[0] if source else None
    if priced_by is not None and priced_by != known.id:
        return (
            f"--provider {provider!r}: {known.id} has no price for {model!r} "
            f"(genai-prices prices it as {priced_by}: use --provider {priced_by}, or leave --provider out)"
        )
    return None


def _usd(value: Decimal) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".") if value else "0"


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(tracking_uri=args.tracking_uri, experiment=args.experiment)


def _report(args: argparse.Namespace) -> int:
    from .report import run_report

    return run_report(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        since=args.since,
        by=args.by,
        fmt=args.format,
        timeout_seconds=args.timeout,
        plot=args.plot,
    )


def _compare(args: argparse.Namespace) -> int:
    from .compare import run_compare

    where = dict(args.where)
    if args.prompt is not None:
        where["gen_ai.prompt.name"] = args.prompt
    if args.ab is not None:
        where["mltrack.ab.experiment"] = args.ab
    return run_compare(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        since=args.since,
        by=args.by,
        where=where,
        baseline=args.baseline,
        resamples=args.resamples,
        seed=args.seed,
        fmt=args.format,
        timeout_seconds=args.timeout,
        plot=args.plot,
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected ATTRIBUTE=VALUE, e.g. gen_ai.request.model=gpt-4o")
    return key.strip(), value


def _resamples(text: str) -> int:
    if not text.isdigit() or not 100 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 100 to 1000000")
    return int(text)


def _since(text: str) -> datetime:
    from .report import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grouping(text: str) -> str:
    from .report import check_grouping

    try:
        return check_grouping(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of seconds, at least 1")
    return int(text)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing, or the module is blocked (None in sys.modules)
        return False
    except ValueError:  # imported already, without a spec: it is there
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltrack-otel", description="LLM call tracing, pricing and totals")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run an offline multi-turn session and print its cost table")
    demo.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    demo.add_argument("--experiment", default="mltrack-otel-demo")
    demo.set_defaults(run=_demo)

    price = commands.add_parser("price", help="what a call costs, and where the price comes from")
    price.add_argument("model")
    price.add_argument("--provider", default=None, help="GenAI provider name, e.g. openai, anthropic")
    price.add_argument("--input", type=int, required=True, help="input tokens, cache included")
    price.add_argument("--output", type=int, required=True)
    price.add_argument("--cached", type=int, default=0, help="input tokens read from cache")
    price.add_argument("--cache-write", type=int, default=0, help="input tokens written to cache")
    price.set_defaults(run=_price)

    report = commands.add_parser("report", help="totals read back from MLflow traces")
    _reading_options(report, "also draw cost over time, stacked by the --by key, into this image")
    report.add_argument(
        "--by",
        type=_grouping,
        default="model",
        metavar="{model,provider,day,conversation,user,agent,tag.<key>}",
        help="group by model, provider, day, conversation, user (user.id), agent (gen_ai.agent.name) or a tag "
        "(tag.feature: mltrack.tag.feature)",
    )
    report.set_defaults(run=_report)

    compare = commands.add_parser(
        "compare",
        help="variants side by side (prompt versions, models, A/B variants), with bootstrap confidence intervals",
        description="Per variant of --by: calls, tokens, cost per call, latency, errors and unpriced calls, read "
        "back from MLflow traces as report does; then each variant against the baseline with a bootstrap CI.",
    )
    _reading_options(compare, "also draw each variant's cost and latency per call into this image")
    compare.add_argument(
        "--by",
        required=True,
        help="what tells the variants apart: prompt.version, model, provider, variant (mltrack.ab.variant), user, "
        "tag.KEY, or any span attribute (gen_ai.request.model, ...)",
    )
    compare.add_argument(
        "--prompt", default=None, metavar="NAME", help="only calls of this prompt (gen_ai.prompt.name)"
    )
    compare.add_argument(
        "--ab", default=None, metavar="NAME", help="only calls of this A/B experiment (mltrack.ab.experiment)"
    )
    compare.add_argument(
        "--where",
        type=_key_value,
        action="append",
        default=[],
        metavar="ATTR=VALUE",
        help="only calls whose attribute has this value (repeatable)",
    )
    compare.add_argument("--baseline", default=None, help="the variant the others are compared with (default: first)")
    compare.add_argument("--resamples", type=_resamples, default=2000, help="bootstrap resamples (default 2000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0: the same data, same CI)")
    compare.set_defaults(run=_compare)
    return parser


def _reading_options(command: argparse.ArgumentParser, plot_help: str) -> None:
    """The options every command that reads traces back from MLflow takes (report, compare)."""
    command.add_argument("--tracking-uri", default=None)
    command.add_argument("--experiment", default=None, help="MLflow experiment (default: all)")
    command.add_argument(
        "--since",
        type=_since,
        default=None,
        help="only traces started after it: today, yesterday (UTC), an age (30m, 24h, 7d, 2w), or an ISO date/time",
    )
    command.add_argument("--format", choices=["table", "csv", "json"], default="table")
    command.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        help="seconds to wait for an MLflow server's answer (default: MLFLOW_HTTP_REQUEST_TIMEOUT, else 10)",
    )
    command.add_argument("--plot", metavar="PNG", default=None, help=f"{plot_help} (needs mltrack-otel[plot])")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for value in ("input", "output", "cached", "cache_write"):
        if getattr(args, value, 0) is not None and getattr(args, value, 0) < 0:
            print(f"--{value.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    missing = [module for module in _NEEDS.get(args.command, ()) if not _installed(module)]
    if missing:
        print(
            f"mltrack-otel {args.command} needs {', '.join(missing)}, not installed here: "
            f"pip install 'mltrack-otel[{','.join(missing)}]'",
            file=sys.stderr,
        )
        return 1
    try:
        return args.run(args)
    except ModuleNotFoundError as exc:  # a broken install: one of the extras' own dependencies is missing
        print(f"mltrack-otel {args.command}: cannot import {exc.name or 'a module'}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
