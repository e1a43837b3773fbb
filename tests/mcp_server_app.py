"""A real MCP server for tests/test_mcp.py, run as a stdio subprocess (``python tests/mcp_server_app.py``).

An ``MCPServer`` (the SDK's FastMCP) with our instrumentation on in this process: configure() with the memory
exporter, instrument(["openai", "mcp"]). Every span the pipeline exports (the enriched copy: priced, counted) is
also written as one JSON line to $MCP_SPANS_FILE at once, so the test reads this process's spans while the server
runs or after it exits. Tools:

* ``research(topic)``: asks the model (the real openai SDK against the fake provider at $MCP_FAKE_URL) and
  returns its answer: a model call made inside the server's tools/call span, in the caller's trace.
* ``fail(reason)``: raises, so MCPServer answers ``isError: true``.

A resource ``notes://today`` and a prompt ``summarize(topic)``. With $MCP_HTTP_PORT it serves streamable HTTP on
127.0.0.1 at that port (path /mcp) instead of stdio.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import openai
from mcp.server.mcpserver import MCPServer

from mltrack_otel import provider
from mltrack_otel.instrumentation import instrument

_lock = threading.Lock()


def _record(path: str) -> None:
    """Write every exported span to `path` too (the memory exporter is synchronous: at each span's end)."""
    memory = provider.runtime().memory_exporter
    export = memory.export

    def export_and_write(spans: Any) -> Any:
        lines = []
        for span in spans:
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(span.context.trace_id, "032x"),
                        "span_id": format(span.context.span_id, "016x"),
                        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
                        "status": span.status.status_code.name,
                        "attributes": dict(span.attributes or {}),
                    },
                    default=list,
                )
            )
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return export(spans)

    memory.export = export_and_write


provider.configure(exporters=["memory"])
_record(os.environ["MCP_SPANS_FILE"])
instrument(["openai", "mcp"])

model = openai.AsyncOpenAI(base_url=os.environ["MCP_FAKE_URL"], api_key="sk-test", max_retries=0)
server = MCPServer("research-server")


@server.tool()
async def research(topic: str) -> str:
    """Research a topic with the model."""
    reply = await model.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Research {topic} briefly"}]
    )
    return reply.choices[0].message.content or ""


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot: {reason}")


@server.resource("notes://today")
def notes() -> str:
    return "Spans nest under agents."


@server.prompt()
def summarize(topic: str) -> str:
    return f"Summarize what is known about {topic}."


if __name__ == "__main__":
    if port := os.environ.get("MCP_HTTP_PORT"):  # streamable HTTP on loopback instead of stdio
        server.run("streamable-http", host="127.0.0.1", port=int(port))
    else:
        server.run("stdio")
