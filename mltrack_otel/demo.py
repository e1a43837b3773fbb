"""`mltrack-otel demo`: a scripted multi-turn session through the real openai and anthropic SDKs against the bundled
offline fake provider (an agent run with a sub-agent), exported to an embedded MLflow store, then read back and
printed as cost tables by model and by agent; then the
same support conversations under two versions of a prompt, compared per version, and a picture of the cost over time
(mltrack-cost.png, when matplotlib is installed: the `plot` extra).

No API key and no network: the fake provider listens on 127.0.0.1 and the keys below are placeholders.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC
from decimal import Decimal
from pathlib import Path

QUESTIONS = [
    "What is prompt caching and when does it pay off?",
    "Give me an example with a long system prompt.",
    "How would I measure the savings in production?",
]
SYSTEM = "You are a concise assistant for an observability team."
# Two versions of one prompt: v2 adds worked examples to the system prompt, so every call sends more tokens.
PROMPT_NAME = "support-answer"
PROMPT_VERSIONS = {
    "v1": "You are a concise assistant for an observability team. Answer {{question}}",
    "v2": (
        "You are a concise assistant for an observability team. Answer with one concrete step the team can take, "
        "then the metric that shows it worked. Example: Q: Why did our bill double? A: Group yesterday's cost by "
        "model; the metric is USD per model per day. Example: Q: Is caching worth it? A: Compare cached and "
        "uncached input tokens per call; the metric is the cache-read share. Now answer {{question}}"
    ),
}
CONVERSATIONS_PER_VERSION = 6
PLOT_PATH = "mltrack-cost.png"
COMPARE_PLOT_PATH = "mltrack-compare.png"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _session(openai_client, anthropic_client) -> None:
    import mltrack_otel

    with (
        mltrack_otel.track_llm_context("support-session", conversation_id="demo-conversation-1"),
        mltrack_otel.agent("support-agent"),
    ):
        # Multi-turn chat: each call carries the whole history so far.
        messages = [{"role": "system", "content": SYSTEM}]
        for question in QUESTIONS:
            messages.append({"role": "user", "content": question})
            reply = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})

        # A streamed answer: the span ends when the stream does, with usage even though we did not ask for it.
        stream = openai_client.chat.completions.create(
            model="gpt-4o", messages=[*messages, {"role": "user", "content": "Summarise in one line."}], stream=True
        )
        "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

        # A sub-agent on Anthropic: a tool call, with a budget of its own for each run.
        with mltrack_otel.agent("weather-agent", cost_limit="0.05"):
            anthropic_client.messages.create(
                model="claude-3-5-haiku-latest",
                max_tokens=200,
                system=SYSTEM,
                tools=[WEATHER_TOOL],
                messages=[{"role": "user", "content": "What's the weather in Lisbon? [[scenario:tool]]"}],
            )
        # A streamed follow-up through the SDK's stream helper.
        with anthropic_client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=200,
            system=SYSTEM,
            messages=[{"role": "user", "content": "Write a haiku about token budgets."}],
        ) as stream:
            stream.get_final_text()

        openai_client.embeddings.create(model="text-embedding-3-small", input=QUESTIONS)


def _prompt_versions(openai_client) -> None:
    """The support conversations once per prompt version: the calls made in `use()` carry its name and version."""
    import mltrack_otel

    for version, text in PROMPT_VERSIONS.items():
        template = mltrack_otel.prompt(PROMPT_NAME, text, version=version)
        for n in range(CONVERSATIONS_PER_VERSION):
            conversation = f"demo-{version}-{n + 1}"
            with mltrack_otel.track_llm_context(PROMPT_NAME, conversation_id=conversation), template.use():
                messages: list[dict[str, str]] = []
                for question in QUESTIONS[: n % len(QUESTIONS) + 1]:  # conversations of 1, 2 and 3 turns
                    messages.append({"role": "user", "content": template.format(question=question)})
                    reply = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                    messages.append({"role": "assistant", "content": reply.choices[0].message.content})


def run_demo(tracking_uri: str | None = None, experiment: str = "mltrack-otel-demo") -> int:
    import anthropic
    import mlflow  # imported here so its logger exists and its schema-creation INFO lines can be quietened
    import openai

    import mltrack_otel
    from mltrack_otel.report import aggregate, cost_table, counted_calls, read_spans
    from mltrack_otel.testing.fake_provider import FakeProvider

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger(mlflow.__name__).setLevel(logging.WARNING)
    uri = tracking_uri or f"sqlite:///{Path('mlflow.db').resolve()}"
    started = time.perf_counter()
    session_start = time.time()
    with FakeProvider() as fake:
        mltrack_otel.configure(
            exporters=["mlflow"],
            mlflow_tracking_uri=uri,
            mlflow_experiment_name=experiment,
            shutdown_timeout_seconds=120,  # the demo reads back every span: wait for MLflow to create its store
            cloud_hosts=[fake.host],  # the fake on loopback stands for the cloud APIs it imitates: price it so
        )
        mltrack_otel.instrument(["openai", "anthropic"])
        openai_client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-demo-placeholder")
        anthropic_client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-demo-placeholder")
        _session(openai_client, anthropic_client)
        _prompt_versions(openai_client)
        mltrack_otel.shutdown()  # flush every span to MLflow before reading them back

    from datetime import datetime

    since = datetime.fromtimestamp(session_start - 1, tz=UTC)
    spans = list(read_spans(uri, experiment, since))
    calls = list(counted_calls(spans))
    live = mltrack_otel.totals()
    stored_cost = sum((c.cost_usd for c in calls if c.cost_usd is not None), Decimal(0))
    print(f"\nmltrack-otel demo: {live.calls} model calls, read back from MLflow ({uri})\n")
    print(cost_table(aggregate(calls, "model"), "model"))
    print("\nBy agent (the calls each agent run made itself; '-' outside any agent):\n")
    print(cost_table(aggregate(calls, "agent"), "agent"))
    # Span attributes carry float USD; a billionth of a dollar is far below any price's precision.
    same = abs(stored_cost - live.cost_usd) < Decimal("1e-9") and len(calls) == live.calls
    match = "matches" if same else "DIFFERS FROM"
    print(f"\nPrompt {PROMPT_NAME!r}, version v1 against v2 (read back from MLflow):\n")
    table, records = _compare_versions(spans)
    print(table)
    print(f"\nMLflow total ${stored_cost:.6f} {match} the live ledger total ${live.cost_usd:.6f}")
    print(_draw(calls, records))
    print(f"finished in {time.perf_counter() - started:.1f} s")
    print(f"\nBrowse the traces:  {browse_hint(uri)}")
    return 0 if match == "matches" else 1


def _compare_versions(spans) -> tuple[str, list]:
    """The compare table of the prompt's versions, and the per-call records its picture draws."""
    from mltrack_otel.compare import compare_calls, needed_attributes, table
    from mltrack_otel.report import counted_calls

    where = {"prompt.name": PROMPT_NAME}
    calls = counted_calls(spans, keep=needed_attributes("prompt.version", where), failed=True)
    result = compare_calls(calls, "prompt.version", where=where)
    return table(result), result.records


def _draw(calls, records) -> str:
    """Cost over time stacked by model, and v1 against v2, into PNGs; without matplotlib, one line saying how."""
    from mltrack_otel.plot import PlotError, compare_distributions, cost_over_time

    try:
        cost_over_time(calls, by="model", path=PLOT_PATH, title="mltrack-otel demo")
        compare_distributions(records, path=COMPARE_PLOT_PATH, by="prompt version", title=f"Prompt {PROMPT_NAME!r}")
    except PlotError as exc:
        return f"no plots: {exc}"
    return (
        f"cost over time, stacked by model:  {Path(PLOT_PATH).resolve()}\n"
        f"v1 against v2, cost and latency:   {Path(COMPARE_PLOT_PATH).resolve()}"
    )


def browse_hint(tracking_uri: str) -> str:
    """A command that opens the traces: a server already serves its UI (`mlflow ui` takes a store, not a server)."""
    if tracking_uri.lower().startswith(("http://", "https://")):
        return f"open {tracking_uri.rstrip('/')} in a browser (the MLflow server's own UI)"
    return f"mlflow ui --backend-store-uri {tracking_uri}"
