"""MCP (the mcp SDK 2.x), client and server: spans per the MCP conventions, the trace carried in ``params._meta``.

A real stdio server (tests/mcp_server_app.py, an MCPServer run as a subprocess by the SDK's stdio_client) with our
instrumentation on in its own process; its spans come back through a file. The client side runs here, inside
agent runs, its model calls (the real openai SDK against the fake provider) instrumented too. The in-process tests
use the SDK's in-memory Client(server).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.session import ClientSession as SessionClass
from mcp.client.stdio import stdio_client
from opentelemetry.trace import SpanKind, StatusCode

import mltrack_otel
from mltrack_otel import guard, ledger, semconv
from mltrack_otel.errors import BudgetExceededError
from mltrack_otel.instrumentation import instrument, uninstrument
from mltrack_otel.instrumentation import mcp as mcp_instrumentation

APP = Path(__file__).with_name("mcp_server_app.py")
ROOT = APP.parent.parent
MODEL = "gpt-4o-mini"
RESEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "research",
        "description": "Research a topic",
        "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
    },
}


@pytest.fixture
def traced(pipeline, fake):
    fake.clear()
    instrument(["openai", "mcp"])
    yield pipeline
    uninstrument(["openai", "mcp"])


def spans(rt) -> list[Any]:
    return sorted(rt.memory_exporter.get_finished_spans(), key=lambda s: s.start_time)


def named(rt, name: str) -> list[Any]:
    return [s for s in spans(rt) if s.name == name]


def server_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def hex_id(span_id: int) -> str:
    return format(span_id, "016x")


async def with_stdio_server(fake, spans_file: Path, body) -> Any:
    """Run `body(session)` against the stdio server app in a subprocess, the session initialized."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MCP_FAKE_URL": fake.openai_base_url,
        "MCP_SPANS_FILE": str(spans_file),
    }
    params = StdioServerParameters(command=sys.executable, args=[str(APP)], env=env, cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await body(session)


async def planner_turn(aoai, session: ClientSession) -> str:
    """One agent turn: the model asks for the research tool, the tool runs on the MCP server, the model answers."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "[[scenario:tool]] what are spans"}]
    first = await aoai.chat.completions.create(model=MODEL, messages=messages, tools=[RESEARCH_TOOL])
    call = first.choices[0].message.tool_calls[0]
    result = await session.call_tool(call.function.name, json.loads(call.function.arguments))
    assert not result.is_error
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content[0].text})
    final = await aoai.chat.completions.create(model=MODEL, messages=messages, tools=[RESEARCH_TOOL])
    return final.choices[0].message.content


# -- a real stdio server: the trace crosses the process boundary ---------------------------------------------------


def test_a_stdio_tool_call_nests_under_the_agent_and_its_server_model_call_joins_the_trace(
    traced, aoai, fake, tmp_path
):
    spans_file = tmp_path / "server-spans.jsonl"

    async def body(session):
        with mltrack_otel.agent("planner"):
            answer = await planner_turn(aoai, session)
            notes = await session.read_resource("notes://today")
            prompt = await session.get_prompt("summarize", {"topic": "spans"})
        return answer, notes, prompt

    answer, notes, prompt = asyncio.run(with_stdio_server(fake, spans_file, body))
    assert answer.startswith("Echo:") and notes.contents[0].text == "Spans nest under agents."
    assert prompt.messages[0].content.text == "Summarize what is known about spans."

    # The client process: the tools/call span is a CLIENT span under the agent span, named per the convention.
    (root,) = named(traced, "invoke_agent planner")
    (client,) = named(traced, "tools/call research")
    assert client.kind is SpanKind.CLIENT and client.parent.span_id == root.context.span_id
    a = client.attributes
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.tool.name"] == "research"
    assert a["gen_ai.operation.name"] == "execute_tool" and a["network.transport"] == "pipe"
    assert a["jsonrpc.request.id"].isdigit() and a["mcp.protocol.version"]
    assert json.loads(a["gen_ai.tool.call.arguments"]) == {"topic": "example"}
    assert "Echo: Research example briefly" in a["gen_ai.tool.call.result"]
    assert client.status.status_code is StatusCode.UNSET
    (read,) = named(traced, "resources/read")  # a uri is not a low-cardinality name: an attribute only
    assert read.attributes["mcp.resource.uri"] == "notes://today" and read.parent.span_id == root.context.span_id
    (get,) = named(traced, "prompts/get summarize")
    assert get.attributes["gen_ai.prompt.name"] == "summarize" and get.kind is SpanKind.CLIENT
    assert named(traced, "initialize")[0].kind is SpanKind.CLIENT
    # One CLIENT span per request: the SDK's own "MCP send ..." span is not made beside ours.
    assert not [s for s in spans(traced) if s.name.startswith("MCP send")]

    # The server process: its SERVER span is the child of our CLIENT span (through _meta), in the same trace, and
    # the model call its tool made is a child of that, priced and counted there.
    remote = server_spans(spans_file)
    (server,) = [s for s in remote if s["name"] == "tools/call research"]
    trace_id = format(client.context.trace_id, "032x")
    assert server["kind"] == "SERVER" and server["trace_id"] == trace_id
    assert server["parent_span_id"] == hex_id(client.context.span_id)
    sa = server["attributes"]
    assert sa["gen_ai.tool.name"] == "research" and sa["network.transport"] == "pipe"
    assert sa["jsonrpc.request.id"] == a["jsonrpc.request.id"]
    assert json.loads(sa["gen_ai.tool.call.arguments"]) == {"topic": "example"}
    (tool_model_call,) = [s for s in remote if s["name"] == f"chat {MODEL}"]
    assert tool_model_call["trace_id"] == trace_id and tool_model_call["parent_span_id"] == server["span_id"]
    assert tool_model_call["attributes"][semconv.MLTRACK_USAGE_COUNTED] is True
    assert tool_model_call["attributes"][semconv.LLM_COST_TOTAL] > 0
    # The calling agent's name came along in _meta: the server's model call is the planner's in report --by agent.
    assert tool_model_call["attributes"]["gen_ai.agent.name"] == "planner"
    (server_read,) = [s for s in remote if s["name"] == "resources/read"]
    assert server_read["parent_span_id"] == hex_id(read.context.span_id)
    assert server_read["attributes"]["mcp.resource.uri"] == "notes://today"
    (server_get,) = [s for s in remote if s["name"] == "prompts/get summarize"]
    assert server_get["parent_span_id"] == hex_id(get.context.span_id)
    assert not [s for s in remote if s["name"].startswith("MCP send")]

    # Counted once: the client process counts its own two model calls (the planner's); the server's call is
    # counted by the server's process only, so the planner's totals here do not include it.
    client_calls = [s for s in named(traced, f"chat {MODEL}") if s.attributes.get(semconv.MLTRACK_USAGE_COUNTED)]
    assert len(client_calls) == 2 and all(s.parent.span_id == root.context.span_id for s in client_calls)
    assert mltrack_otel.totals(agent="planner").calls == 2
    assert ledger.LEDGER.process_totals().calls == 2
    assert root.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == sum(
        s.attributes[semconv.LLM_TOKENS_TOTAL] for s in client_calls
    )


def test_a_failing_tool_marks_both_sides_tool_error_and_a_protocol_error_carries_its_code(traced, fake, tmp_path):
    spans_file = tmp_path / "server-spans.jsonl"

    async def body(session):
        failed = await session.call_tool("fail", {"reason": "on purpose"})
        with pytest.raises(Exception) as info:
            await session.read_resource("notes://missing")
        return failed, info.value

    failed, error = asyncio.run(with_stdio_server(fake, spans_file, body))
    assert failed.is_error
    (client,) = named(traced, "tools/call fail")
    assert client.attributes["error.type"] == "tool_error" and client.status.status_code is StatusCode.ERROR
    assert "gen_ai.tool.call.result" not in client.attributes  # a result is recorded only for a success
    remote = server_spans(spans_file)
    (server,) = [s for s in remote if s["name"] == "tools/call fail"]
    assert server["attributes"]["error.type"] == "tool_error" and server["status"] == "ERROR"
    assert server["parent_span_id"] == hex_id(client.context.span_id)
    # A JSON-RPC error: error.type and rpc.response.status_code are its code, on both sides.
    code = str(error.error.code)
    (read,) = named(traced, "resources/read")
    assert read.attributes["error.type"] == code and read.attributes["rpc.response.status_code"] == code
    assert read.status.status_code is StatusCode.ERROR
    (server_read,) = [s for s in remote if s["name"] == "resources/read"]
    assert server_read["attributes"]["error.type"] == code and server_read["status"] == "ERROR"


def test_over_streamable_http_the_spans_carry_the_session_id_and_the_addresses(traced, aoai, fake, tmp_path):
    import socket
    import subprocess
    import time

    from mcp.client.streamable_http import streamable_http_client

    from tests.servers import free_port, stopper

    spans_file, port = tmp_path / "server-spans.jsonl", free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MCP_FAKE_URL": fake.openai_base_url,
        "MCP_SPANS_FILE": str(spans_file),
        "MCP_HTTP_PORT": str(port),
    }
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed by stop())
    proc = subprocess.Popen(
        [sys.executable, str(APP)], env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
    )
    stop = stopper(proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the server listens (not a timing assertion: a bound on a broken start)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)

        async def main():
            url = f"http://127.0.0.1:{port}/mcp"
            async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                with mltrack_otel.agent("planner"):
                    return await planner_turn(aoai, session)

        assert asyncio.run(main()).startswith("Echo:")
    finally:
        stop()
    (client,) = named(traced, "tools/call research")
    a = client.attributes
    assert a["network.transport"] == "tcp" and a["server.address"] == "127.0.0.1" and a["server.port"] == port
    remote = server_spans(spans_file)
    (server,) = [s for s in remote if s["name"] == "tools/call research"]
    sa = server["attributes"]
    assert sa["mcp.session.id"] and sa["mcp.session.id"] == a["mcp.session.id"]  # the Mcp-Session-Id, both sides
    assert sa["network.transport"] == "tcp" and sa["client.address"] == "127.0.0.1"
    assert server["parent_span_id"] == hex_id(client.context.span_id)
    (tool_model_call,) = [s for s in remote if s["name"] == f"chat {MODEL}"]
    assert tool_model_call["parent_span_id"] == server["span_id"]
    assert tool_model_call["attributes"]["gen_ai.agent.name"] == "planner"


# -- in process (the SDK's in-memory Client(server)) ---------------------------------------------------------------


def in_process_server(aoai=None):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("in-process")

    @server.tool()
    async def lookup(topic: str) -> str:
        """Look a topic up (asks the model when a client is given)."""
        if aoai is None:
            return f"{topic}: nothing new"
        reply = await aoai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": topic}])
        return reply.choices[0].message.content

    return server


def test_in_process_the_server_span_and_its_model_call_are_under_the_client_span_counted_once(traced, aoai):
    from mcp import Client

    async def main():
        async with Client(in_process_server(aoai)) as client:
            with mltrack_otel.agent("planner"):
                return await client.call_tool("lookup", {"topic": "spans"})

    result = asyncio.run(main())
    assert result.content[0].text.startswith("Echo: spans")
    (root,) = named(traced, "invoke_agent planner")
    (client,) = [s for s in named(traced, "tools/call lookup") if s.kind is SpanKind.CLIENT]
    (server,) = [s for s in named(traced, "tools/call lookup") if s.kind is SpanKind.SERVER]
    (call,) = named(traced, f"chat {MODEL}")
    assert client.parent.span_id == root.context.span_id
    assert server.parent.span_id == client.context.span_id and call.parent.span_id == server.context.span_id
    # In one process the tool's model call is the planner's: counted once, in its run.
    assert call.attributes[semconv.MLTRACK_USAGE_COUNTED] is True
    assert mltrack_otel.totals(agent="planner").calls == 1 == ledger.LEDGER.process_totals().calls
    assert root.attributes[semconv.LLM_TOKENS_CUMULATIVE_TOTAL] == call.attributes[semconv.LLM_TOKENS_TOTAL]


def test_a_cancelled_tool_call_ends_both_spans_without_an_error(traced):
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("slow")

    @server.tool()
    async def wait(seconds: float) -> str:
        """Wait a while."""
        await asyncio.sleep(seconds)
        return "done"

    async def main():
        async with Client(server) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.call_tool("wait", {"seconds": 30}), 0.2)

    asyncio.run(main())
    ended = named(traced, "tools/call wait")
    assert {s.kind for s in ended} == {SpanKind.CLIENT, SpanKind.SERVER}  # both ended (exported), once each
    for span in ended:
        assert "error.type" not in span.attributes and span.status.status_code.name != "ERROR"


def test_an_agent_budget_stops_an_mcp_tool_loop_before_its_next_model_call(traced, aoai):
    from mcp import Client

    steps: list[str] = []

    async def loop(client) -> None:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "[[scenario:tool]] keep looking " * 10}]
        for _ in range(50):
            reply = await aoai.chat.completions.create(
                model=MODEL, messages=messages, tools=[RESEARCH_TOOL], max_tokens=64
            )
            steps.append("model")
            call = reply.choices[0].message.tool_calls[0]
            result = await client.call_tool("lookup", json.loads(call.function.arguments))
            steps.append("tool")
            messages.append({"role": "user", "content": f"[[scenario:tool]] {result.content[0].text} " * 10})

    async def main():
        async with Client(in_process_server()) as client:
            # Caught inside the client's block: one leaving it comes out of the SDK's task group as an ExceptionGroup.
            try:
                with mltrack_otel.agent("looper", cost_limit="0.0005"):
                    await loop(client)
            except BudgetExceededError as exc:
                return exc
        return None

    assert isinstance(asyncio.run(main()), BudgetExceededError)
    # Stopped before a model call, after a tool call: the loop ran a few rounds, not fifty.
    assert steps[-1] == "tool" and 2 <= steps.count("tool") < 50
    assert len(named(traced, "tools/call lookup")) == 2 * steps.count("tool")  # client + server span each
    (root,) = named(traced, "invoke_agent looper")
    assert root.attributes["error.type"].endswith("BudgetExceededError")


# -- never break the session -------------------------------------------------------------------------------------


def test_a_failure_inside_the_hooks_leaves_the_session_working(traced, monkeypatch):
    from mcp import Client

    def broken(*_args: Any) -> Any:
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(mcp_instrumentation, "request_attributes", broken)
    guard.reset()

    async def main():
        async with Client(in_process_server()) as client:
            return await client.call_tool("lookup", {"topic": "spans"})

    assert asyncio.run(main()).content[0].text == "spans: nothing new"
    health = guard.health()
    assert health.get("errors.instrumentation.mcp.client.start", 0) >= 1
    assert health.get("errors.instrumentation.mcp.server.start", 0) >= 1
    # Our server span could not start: the SDK's own middleware span stands in (the server still has one).
    assert [s for s in named(traced, "tools/call lookup") if s.kind is SpanKind.SERVER]


def test_uninstrument_restores_the_sdk_and_its_own_spans(traced):
    from mcp import Client

    uninstrument(["mcp"])
    assert not hasattr(SessionClass.send_request, "__wrapped__")

    async def main():
        async with Client(in_process_server()) as client:
            return await client.call_tool("lookup", {"topic": "spans"})

    asyncio.run(main())
    names = [s.name for s in spans(traced)]
    assert "tools/call lookup" in names  # the SDK's server middleware span
    assert not any(s.instrumentation_scope.name == mcp_instrumentation.__name__ for s in spans(traced))
    instrument(["mcp"])  # the fixture uninstruments again


def test_a_framework_execute_tool_span_for_the_same_tool_gets_the_mcp_attributes_instead_of_a_second_span(traced):
    from mcp import Client
    from opentelemetry import trace

    from mltrack_otel import config
    from mltrack_otel.instrumentation import _spans

    tracer = trace.get_tracer("a.framework")

    async def main():
        async with Client(in_process_server()) as client:
            tool = _spans.start(tracer, "execute_tool", "lookup", settings=config.current())
            with trace.use_span(tool.span):
                result = await client.call_tool("lookup", {"topic": "spans"})
            tool.finish()
            return result

    assert asyncio.run(main()).content[0].text == "spans: nothing new"
    (outer,) = [s for s in named(traced, "execute_tool lookup")]
    assert outer.kind is SpanKind.INTERNAL and outer.attributes["mcp.method.name"] == "tools/call"
    assert json.loads(outer.attributes["gen_ai.tool.call.arguments"]) == {"topic": "spans"}
    # No CLIENT span of ours beside it; the server's span is its child.
    (server,) = named(traced, "tools/call lookup")
    assert server.kind is SpanKind.SERVER and server.parent.span_id == outer.context.span_id


def test_instrument_before_the_app_imports_mcp_patches_it_on_import():
    import subprocess
    import textwrap

    code = """
        import json, sys
        from mltrack_otel.instrumentation import instrument
        armed = instrument(["mcp"])
        loaded = "mcp" in sys.modules
        from mcp import ClientSession
        from mcp.server._otel import OpenTelemetryMiddleware
        print(json.dumps({"armed": armed, "loaded": loaded, "wrapped": [
            hasattr(ClientSession.__dict__["send_request"], "__wrapped__"),
            hasattr(OpenTelemetryMiddleware.__dict__["__call__"], "__wrapped__"),
        ]}))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"armed": ["mcp"], "loaded": False, "wrapped": [True, True]}
