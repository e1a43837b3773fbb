"""The `mltrack-otel` command: `demo`, `price`, `report`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from decimal import Decimal


def _price(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .pricing import Pricer, Usage

    settings = load_settings()
    pricer = Pricer(settings.price_overrides, settings.provider_aliases)
    usage = Usage(
        input_tokens=args.input,
        output_tokens=args.output,
        cache_read_tokens=args.cached,
        cache_write_tokens=args.cache_write,
    )
    cost = pricer.price(args.provider, args.model, usage)
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
    )


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
    report.add_argument("--tracking-uri", default=None)
    report.add_argument("--experiment", default=None)
    report.add_argument("--since", default=None, help="ISO date or datetime; only traces started after it")
    report.add_argument("--by", choices=["model", "provider", "day", "conversation"], default="model")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.set_defaults(run=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for value in ("input", "output", "cached", "cache_write"):
        if getattr(args, value, 0) is not None and getattr(args, value, 0) < 0:
            print(f"--{value.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
