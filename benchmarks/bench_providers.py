"""CPU cost per SDK call, raw vs instrumented: OpenAI chat / stream, Anthropic chat / stream.

    python -m benchmarks.bench_providers            # table of median CPU microseconds per call
    python -m benchmarks.bench_providers --json     # the same as JSON
    python -m benchmarks.bench_providers --profile openai-stream   # cProfile of the instrumented run

Each (operation, mode) runs in its own process, so import state and caches do not leak between them. The SDKs
talk to an in-process httpx2.MockTransport serving canned bodies (streams of ~30 chunks), so the network does
not blur the figure. "instrumented" = mltrack_otel.instrument() + a TracerProvider with a SimpleSpanProcessor
over an in-memory exporter, content capture on (the default). CPU is time.process_time(); the figure is the
median over rounds of (CPU of n calls) / n, then the median over --repeats processes run interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

OPERATIONS = ("openai-chat", "openai-stream", "anthropic-chat", "anthropic-stream")
MODES = ("raw", "instrumented")
# Same process contents as "instrumented" (OpenTelemetry SDK, mltrack_otel imported) with instrumentation off:
# separates the per-call cost of instrumentation from a bigger heap making the SDK's own garbage collection dearer.
IMPORTS_BASELINE = "raw+imports"
CHUNKS = 30
PROMPT = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Tell me about OpenTelemetry spans in three sentences."},
]


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = []
    for event, data in events:
        if event:
            out.append(f"event: {event}\n")
        out.append(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n")
    return "".join(out).encode()


def _openai_bodies() -> tuple[bytes, bytes]:
    base = {"id": "chatcmpl-1", "created": 1, "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1"}
    usage = {"prompt_tokens": 25, "completion_tokens": CHUNKS, "total_tokens": 25 + CHUNKS}
    text = "".join(f" word{i}" for i in range(CHUNKS))
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    chat = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "object": "chat.completion.chunk", "choices": [choice], "usage": None}

    events = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": f" word{i}"})) for i in range(CHUNKS - 2)]
    events += [
        (None, chunk({}, "stop")),
        (None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}),
    ]
    events.append((None, "[DONE]"))
    return json.dumps(chat).encode(), _sse(events)


def _anthropic_bodies() -> tuple[bytes, bytes]:
    usage = {
        "input_tokens": 25,
        "output_tokens": CHUNKS,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    text = "".join(f" word{i}" for i in range(CHUNKS))
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    events.append(
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for i in range(CHUNKS - 4):
        delta = {"type": "text_delta", "text": f" word{i}"}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": CHUNKS},
    }
    events.append(("message_delta", final))
    events.append(("message_stop", {"type": "message_stop"}))
    return json.dumps(message).encode(), _sse(events)


def _client(operation: str) -> Any:
    import httpx2

    stream = operation.endswith("stream")
    if operation.startswith("openai"):
        import openai

        body = _openai_bodies()[1 if stream else 0]
        kind = "text/event-stream" if stream else "application/json"
        transport = httpx2.MockTransport(
            lambda request: httpx2.Response(200, content=body, headers={"content-type": kind})
        )
        client = openai.OpenAI(api_key="x", max_retries=0, http_client=openai.DefaultHttpxClient(transport=transport))
        if stream:
            return lambda: list(client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True))
        return lambda: client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    import anthropic

    body = _anthropic_bodies()[1 if stream else 0]
    kind = "text/event-stream" if stream else "application/json"
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=body, headers={"content-type": kind}))
    client = anthropic.Anthropic(
        api_key="x", max_retries=0, http_client=anthropic.DefaultHttpxClient(transport=transport)
    )
    system, messages = PROMPT[0]["content"], PROMPT[1:]
    if stream:
        return lambda: list(
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=256, system=system, messages=messages, stream=True
            )
        )
    return lambda: client.messages.create(model="claude-haiku-4-5", max_tokens=256, system=system, messages=messages)


def worker(operation: str, mode: str, n: int, rounds: int, profile: bool = False) -> dict[str, float]:
    exporter = None
    if mode in ("instrumented", IMPORTS_BASELINE):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from mltrack_otel import config
        from mltrack_otel.instrumentation import instrument

        config.set_current(config.Settings())
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        if mode == "instrumented":
            instrument([operation.split("-")[0]], tracer_provider=provider)
        else:
            import mltrack_otel.instrumentation.anthropic
            import mltrack_otel.instrumentation.openai  # noqa: F401
    call = _client(operation)
    for _ in range(max(50, n // 10)):  # warm up caches and lazy imports
        call()
    if exporter is not None:
        assert bool(exporter.get_finished_spans()) == (mode == "instrumented")
        exporter.clear()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(lambda: [call() for _ in range(n)])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return {}
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            call()
        samples.append((time.process_time() - start) / n * 1e6)
        if exporter is not None:
            exporter.clear()
    return {"median_us": statistics.median(samples), "min_us": min(samples)}


def run(n: int, rounds: int, repeats: int, modes: tuple[str, ...] = MODES) -> dict[str, dict[str, float]]:
    """Each (operation, mode) in its own process, the modes interleaved, `repeats` times over; the figure is
    the median of the processes' medians (a shared machine drifts between processes)."""
    samples: dict[str, dict[str, list[float]]] = {op: {mode: [] for mode in modes} for op in OPERATIONS}
    for _ in range(repeats):
        for operation in OPERATIONS:
            for mode in modes:
                command = [sys.executable, "-m", "benchmarks.bench_providers", "--worker", operation, mode]
                command += ["-n", str(n), "--rounds", str(rounds)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                samples[operation][mode].append(json.loads(out.strip().splitlines()[-1])["median_us"])
    results: dict[str, dict[str, float]] = {}
    for operation, by_mode in samples.items():
        row = {mode: statistics.median(values) for mode, values in by_mode.items()}
        row["added"] = row["instrumented"] - row["raw"]
        if IMPORTS_BASELINE in row:
            row["added vs raw+imports"] = row["instrumented"] - row[IMPORTS_BASELINE]
        results[operation] = row
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="processes per (operation, mode)")
    parser.add_argument("--imports-baseline", action="store_true", help=f"also measure the {IMPORTS_BASELINE} mode")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("OPERATION", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", choices=OPERATIONS, help="cProfile the instrumented operation")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.n, args.rounds)))  # one line, parsed by run()
        return
    if args.profile:
        worker(args.profile, "instrumented", args.n, 1, profile=True)
        return
    modes = (*MODES, IMPORTS_BASELINE) if args.imports_baseline else MODES
    results = run(args.n, args.rounds, args.repeats, modes)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    columns = list(next(iter(results.values())))
    print(f"{'operation (CPU µs/call)':<24}" + "".join(f"{c:>22}" for c in columns))
    for operation, row in results.items():
        print(f"{operation:<24}" + "".join(f"{row[c]:>22.1f}" for c in columns))


if __name__ == "__main__":
    main()
