"""Pre-fork servers (gunicorn-style): configure() in the parent, os.fork() workers that make instrumented calls and
exit, while the parent keeps working on other threads.

The application runs in a fresh interpreter (a script), so that what is forked is an application and not pytest;
the OTLP receiver (keep-alive connections, like a collector's) and the fake provider run here. Each child must
finish within a timeout (a lock inherited held would hang it), export exactly its own spans, once each, and count
its own work; the parent's spans, before and after the forks, must all arrive too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict

from tests.otlp_receiver import OtlpReceiver

CHILDREN = 6
CHILD_CALLS = 10  # instrumented openai calls
CHILD_LOGGED = 150  # calls logged by hand: quick, so the child exports while the parent does
WORK = (CHILDREN, CHILD_CALLS, CHILD_LOGGED)

APP = """
import json, os, sys, threading, time
import openai
import mltrack_otel

receiver_url, provider_url = sys.argv[1], sys.argv[2]
children, child_calls, child_logged = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mltrack_otel.configure(exporters=["otlp"], otlp_endpoint=receiver_url, export_delay_ms=5, export_batch_size=4,
                       shutdown_timeout_seconds=5)
mltrack_otel.instrument(["openai"])


def calls(client, n, who):
    for i in range(n):
        with mltrack_otel.track_llm_context(f"{who}:{os.getpid()}:{i}"):
            answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content.startswith("Echo: hi")


def logged(n, who):
    for i in range(n):
        with mltrack_otel.track_llm_context(f"{who}:{os.getpid()}:{i}") as tracker:
            tracker.log_prompt_response("hi", "Echo: hi", model="gpt-4o", provider="openai",
                                        token_usage={"prompt_tokens": 4, "completion_tokens": 2})


def client():
    return openai.OpenAI(base_url=provider_url, api_key="sk-test", max_retries=0)


parent_client = client()
calls(parent_client, 5, "before")
time.sleep(0.3)  # exported: the parent's exporter now holds a pooled connection to the receiver

def worker(n):  # its own HTTP client, as an app makes after forking
    calls(client(), child_calls, "child")
    logged(child_logged, "child-logged")
    with open(f"child-{os.getpid()}.json", "w") as report:
        json.dump({"child": os.getpid(), "health": mltrack_otel.health()}, report)
    if n % 2 == 0:
        mltrack_otel.shutdown()
        os._exit(0)
    sys.exit(0)  # relies on the exit hook


def fork(n):
    pid = os.fork()
    if pid == 0:
        worker(n)
    return pid


pids = [fork(0)]  # forked while the parent's exporter connection sits idle in its pool

stop = threading.Event()
busy_calls = [0, 0]


def busy(k):  # the parent keeps working while it forks: its locks are taken and released all the time
    while not stop.is_set():
        calls(parent_client, 1, "busy")
        busy_calls[k] += 1


threads = [threading.Thread(target=busy, args=(k,)) for k in range(2)]
for thread in threads:
    thread.start()
for n in range(1, children):
    time.sleep(0.02)
    pids.append(fork(n))

statuses = {}
deadline = time.monotonic() + 30
while len(statuses) < len(pids) and time.monotonic() < deadline:
    for pid in pids:
        if pid not in statuses:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = os.waitstatus_to_exitcode(status)
    time.sleep(0.02)
for pid in pids:
    if pid not in statuses:  # hung: a deadlock
        os.kill(pid, 9)
        statuses[pid] = "hung"
stop.set()
for thread in threads:
    thread.join()
calls(parent_client, 5, "after")
mltrack_otel.shutdown()
with open("parent.json", "w") as report:
    json.dump({"parent": os.getpid(), "statuses": statuses, "busy": sum(busy_calls), "health": mltrack_otel.health()},
              report)
"""


def _run_app(receiver_url: str, provider_url: str, tmp_path) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(APP), receiver_url, provider_url, *map(str, WORK)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]


def test_forked_workers_each_export_their_own_spans_and_the_parent_keeps_working(isolated_env, fake):
    with OtlpReceiver() as receiver:
        reports = _run_app(receiver.url, fake.openai_base_url, isolated_env)
        spans = receiver.accepted_spans()
        connection_of = {s.span_id: r.connection for r in receiver.trace_requests() for s in r.spans}
    (parent,) = [r for r in reports if "parent" in r]
    children = {r["child"]: r for r in reports if "child" in r}

    # No child hung or failed, and each counted its own work only (two spans a call: its context and itself).
    assert set(parent["statuses"].values()) == {0}, parent["statuses"]
    assert len(children) == CHILDREN
    for report in children.values():
        assert report["health"]["spans.processed"] == 2 * (CHILD_CALLS + CHILD_LOGGED)

    # Every span arrived, exactly once.
    copies = Counter(s.span_id for s in spans)
    assert max(copies.values()) == 1, f"{sum(copies.values()) - len(copies)} spans arrived twice"
    by_trace: dict[str, list] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    calls_of: Counter[tuple[str, int]] = Counter()
    connections_of: dict[int, set[int]] = defaultdict(set)
    for trace_spans in by_trace.values():
        (root,) = [s for s in trace_spans if ":" in s.name]
        assert sorted(s.name for s in trace_spans) == sorted([root.name, "chat gpt-4o"])  # the call is inside it
        who, pid, _ = root.name.split(":")
        calls_of[who, int(pid)] += 1
        connections_of[int(pid)].update(connection_of[s.span_id] for s in trace_spans)
    for pid in children:
        assert calls_of["child", pid] == CHILD_CALLS
        assert calls_of["child-logged", pid] == CHILD_LOGGED
    assert calls_of["before", parent["parent"]] == 5
    assert calls_of["after", parent["parent"]] == 5
    assert calls_of["busy", parent["parent"]] == parent["busy"] > 0
    assert len(calls_of) == 2 * CHILDREN + 3  # nothing from anyone else
    # Each process exported over connections of its own: none reused the pooled one it inherited from the parent.
    users: dict[int, set[int]] = defaultdict(set)
    for pid, connections in connections_of.items():
        for connection in connections:
            users[connection].add(pid)
    shared = {connection: pids for connection, pids in users.items() if len(pids) > 1}
    assert not shared, f"connections used by more than one process: {shared}"
    assert parent["health"]["spans.exported.otlp"] == 2 * (10 + parent["busy"])
    assert not {k: v for k, v in parent["health"].items() if k.startswith(("errors", "spans.dropped"))}
    print(f"\nfork: {CHILDREN} children x {2 * (CHILD_CALLS + CHILD_LOGGED)} spans, parent {2 * (10 + parent['busy'])}")


HELD_AT_FORK = """
import os, signal, threading
from mltrack_otel import estimate

held, go = threading.Event(), threading.Event()


def loader():  # a thread loading a tokenizer (tens of ms, under the estimator's lock) just as the worker forks
    with estimate._lock:
        held.set()
        go.wait()


threading.Thread(target=loader, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(5)  # a lock inherited held would hang the estimate: the alarm kills the child instead
    estimate.input_tokens({"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o-never-seen")
    os._exit(0)
go.set()
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_while_the_estimator_loads_a_tokenizer_does_not_hang():
    done = subprocess.run([sys.executable, "-c", HELD_AT_FORK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # the child estimated and exited (-14 would be the alarm)
