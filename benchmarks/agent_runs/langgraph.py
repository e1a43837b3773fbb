"""LangGraph: one supervisor run for benchmarks.bench_agents.

The graph ``boss`` has a ``supervisor`` node that makes its own model call (ChatOpenAI) and then invokes the
``weather_agent`` sub-agent (a langgraph.prebuilt ReAct agent: model -> get_weather tool -> model). Four model calls,
one tool call, one sub-agent per run, against the fake provider (the ``[[scenario:tool]]`` token makes it call the
tool once, then answer). Ours: the LangChain instrumentation (which records LangGraph) and the OpenAI one under it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

VENV = ".venv-fw"  # langgraph and langchain-openai live in the frameworks venv

LIBRARIES = ["langchain", "openai"]
ASK = {"messages": [("user", "weather in Paris? [[scenario:tool]]")]}


def setup(base_url: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, MessagesState, StateGraph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents (not installed here)
        from langgraph.prebuilt import create_react_agent

    from mltrack_otel.instrumentation import instrument, uninstrument

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(model="gpt-4o-mini", base_url=base_url.rstrip("/") + "/v1", api_key="sk-bench", max_retries=0)
    weather = create_react_agent(model, [get_weather], name="weather_agent")

    def supervisor(state: MessagesState) -> dict:
        model.invoke([("user", "who should answer?")])
        out = weather.invoke(ASK)
        return {"messages": [out["messages"][-1]]}

    graph = StateGraph(MessagesState)
    graph.add_node("supervisor", supervisor)
    graph.add_edge(START, "supervisor")
    graph.add_edge("supervisor", END)
    boss = graph.compile(name="boss")

    def run() -> None:
        out = boss.invoke({"messages": [("user", "go")]})
        assert out["messages"][-1].type == "ai"

    def on() -> None:
        instrument(LIBRARIES)

    def off() -> None:
        uninstrument(LIBRARIES)

    return run, on, off
