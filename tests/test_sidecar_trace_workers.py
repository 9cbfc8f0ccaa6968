"""Trace rules in the sidecar see whole traces: under ``serve --workers 2``, where the kernel
spreads connections (not traces) over the workers and spans of one trace reach both, each
trace is evaluated once, whole, by the worker that owns it (the others hand it their spans);
and in one worker, a trace sent in pieces by two clients out of order is evaluated once, a late
span ignored and counted."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from otel_online_eval.sidecar.handoff import key_owner, owner_of
from tests.otlp_receiver import OtlpGrpcReceiver, attrs
from tests.sidecar_helpers import (
    DEFAULT_RULES,
    Metrics,
    eval_spans,
    eventually,
    export_to,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

RULE = "whole-trace"
TRACE_RULE: dict[str, Any] = {
    "name": RULE,
    "scope": "trace",
    # Generous settle time: every span of a trace is sent well within it.
    "completion": {"settle_s": 1.0, "idle_s": 10, "max_wait_s": 30},
    "scorers": ["nonempty"],
}
SCORERS = {"nonempty": {"type": "not_empty"}}
SPAN_RULE = DEFAULT_RULES[0]["name"]  # chat-quality: the chat spans, one by one


def _evals(rx: OtlpGrpcReceiver, rule: str) -> list[Any]:
    return [span for _, _, span in eval_spans(rx.spans()) if span.name == f"eval {rule}"]


def _by_trace(spans: list[Any]) -> Counter[int]:
    return Counter(int.from_bytes(s.trace_id, "big") for s in spans)


@pytest.mark.slow
def test_two_workers_evaluate_each_trace_once_whole(tmp_path: Path) -> None:
    rng = random.Random(7)
    with OtlpGrpcReceiver() as rx:
        config = sidecar_config(
            rules=[TRACE_RULE, *DEFAULT_RULES], scorers=SCORERS, export=export_to(rx)
        )
        config["scorers"]["category"] = {"type": "one_of", "values": ["billing"]}
        with running_sidecar(tmp_path, config, args=["--workers", "2"], workers=2) as sc:
            traces = [make_trace(f"t{i}", ("billing",) * 4) for i in range(20)]  # 5 spans each
            for trace in traces:
                spans = list(trace.spans)
                rng.shuffle(spans)  # children before their root, in any order
                for n, span in enumerate(spans):
                    body = request_bytes([span])
                    # A new connection per request: the kernel spreads them over the workers.
                    if n % 2:
                        send_grpc(sc.grpc_endpoint, body)
                    else:
                        answer = post_http(sc, body, headers={"Connection": "close"})
                        assert answer.status_code == 200, answer.text
            ids = {t.trace_id for t in traces}
            assert {owner_of(t, 2) for t in ids} == {0, 1}  # both workers own some

            wait_until(lambda: len(_evals(rx, RULE)) >= 20, timeout=30, what="20 trace evals")
            wait_until(lambda: len(_evals(rx, SPAN_RULE)) >= 80, timeout=30, what="80 chat evals")
            time.sleep(2.5)  # past settle_s: a trace split in two would show a second eval now
            evals = _evals(rx, RULE)
            assert _by_trace(evals) == dict.fromkeys(ids, 1), "each trace evaluated exactly once"
            for ev in evals:
                a = attrs(ev.attributes)
                assert a["online_eval.trace.span_count"] == 5, a
                assert a["online_eval.trace.complete"] is True, a
            # The span rule ran once per chat span, where the span arrived, never again.
            assert _by_trace(_evals(rx, SPAN_RULE)) == dict.fromkeys(ids, 4)

            def settled() -> Metrics:
                m = sc.metrics(headers={"Connection": "close"})
                assert m.value("online_eval_evals_total", rule=RULE) == 20
                out = m.value("online_eval_handoff_spans_total", direction="out")
                assert out > 0, "no span was handed off: the test did not split a trace"
                assert m.value("online_eval_handoff_spans_total", direction="in") == out
                assert m.value("online_eval_handoff_dropped_spans_total") == 0
                assert m.value("online_eval_shipper_sent_spans_total", pipeline="handoff") == out
                # Counted once: seen where received, sampled where assembled.
                assert m.value("otlp_receiver_spans_total", result="accepted") == 100
                assert m.value("online_eval_spans_seen_total") == 100
                assert m.value("online_eval_spans_selected_total", rule=RULE) == 100
                assert m.value("online_eval_spans_sampled_total", rule=RULE) == 100
                assert m.value("online_eval_assembly_spans_total", rule=RULE) == 100
                assert m.value("online_eval_assembly_late_total", rule=RULE) == 0
                assert m.value("online_eval_spans_selected_total", rule=SPAN_RULE) == 80
                assert m.value("online_eval_spans_sampled_total", rule=SPAN_RULE) == 80
                assert m.value("online_eval_evals_total", rule=SPAN_RULE) == 80
                return m

            metrics = eventually(settled, timeout=10)
            workers = {ls.get("worker") for n, ls, _ in metrics.samples if n.startswith("online")}
            assert workers == {"0", "1"}
            code = sc.stop(timeout=30)
        assert code == 0, sc.stderr()[-3000:]
        drained = sc.log_messages("Drained")
        assert len(drained) == 2 and all(d["handoff_dropped"] == 0 for d in drained), drained
        assert len(_evals(rx, RULE)) == 20  # nothing more at shutdown


@pytest.mark.slow
def test_one_worker_two_senders_out_of_order_and_a_late_span(tmp_path: Path) -> None:
    with OtlpGrpcReceiver() as rx:
        config = sidecar_config(rules=[TRACE_RULE], scorers=SCORERS, export=export_to(rx))
        with running_sidecar(tmp_path, config) as sc:
            trace = make_trace("two-senders", ("billing", "weather", "a", "b", "c"))  # 6 spans
            root = next(s for s in trace.spans if s.parent is None)
            chats = [s for s in trace.spans if s.parent is not None]
            late = chats.pop(2)  # a sibling: the trace is structurally complete without it
            # Two clients at once, each with its pieces, children before the root.
            by_grpc = [[chats[3]], [chats[0], root]]
            by_http = [[chats[1]], [chats[2]]]

            def grpc_sender() -> None:
                for part in by_grpc:
                    send_grpc(sc.grpc_endpoint, request_bytes(part))

            def http_sender() -> None:
                for part in by_http:
                    assert post_http(sc, request_bytes(part)).status_code == 200

            threads = [threading.Thread(target=f) for f in (grpc_sender, http_sender)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)

            wait_until(lambda: _evals(rx, RULE), timeout=15, what="the trace's eval")
            (ev,) = _evals(rx, RULE)
            a = attrs(ev.attributes)
            assert a["online_eval.trace.span_count"] == 5, a
            assert a["online_eval.trace.complete"] is True, a
            assert int.from_bytes(ev.trace_id, "big") == trace.trace_id

            send_grpc(sc.grpc_endpoint, request_bytes([late]))  # late: ignore

            def counted() -> Metrics:
                m = sc.metrics()
                assert m.value("online_eval_assembly_late_total", rule=RULE) == 1
                assert m.value("online_eval_assembly_spans_total", rule=RULE) == 5
                assert m.value("online_eval_spans_sampled_total", rule=RULE) == 6
                assert m.value("online_eval_evals_total", rule=RULE) == 1
                return m

            eventually(counted, timeout=10)
            time.sleep(1.5)  # past settle_s: a late span must not bring a second evaluation
            assert len(_evals(rx, RULE)) == 1
            # A single worker has no handoff, and says so by not counting any.
            assert "online_eval_handoff_spans_total" not in sc.metrics().names()


SESSION_RULE: dict[str, Any] = {
    "name": "conversation",
    "scope": "session",
    "completion": {"settle_s": 0.5, "idle_s": 10, "max_wait_s": 30},
    "session": {"idle_s": 2.5},
    "scorers": ["nonempty"],
}


@pytest.mark.slow
def test_two_workers_evaluate_each_conversation_once_whole(tmp_path: Path) -> None:
    """Turns of one conversation are traces that different workers own; the worker that holds
    the conversation (a hash of its key) gets the others' turns and evaluates it once."""
    keys = [f"conversation-{k}" for k in range(8)]
    assert {key_owner(k, 2) for k in keys} == {0, 1}  # both workers hold some
    with OtlpGrpcReceiver() as rx:
        config = sidecar_config(rules=[SESSION_RULE], scorers=SCORERS, export=export_to(rx))
        with running_sidecar(tmp_path, config, args=["--workers", "2"], workers=2) as sc:
            n = 0
            for turn in range(3):
                for key in keys:
                    trace = make_trace(
                        f"turn{turn}", ("billing",), chat_attrs={"gen_ai.conversation.id": key}
                    )
                    for span in trace.spans:
                        body = request_bytes([span])
                        n += 1
                        if n % 2:
                            send_grpc(sc.grpc_endpoint, body)
                        else:
                            answer = post_http(sc, body, headers={"Connection": "close"})
                            assert answer.status_code == 200, answer.text
            wait_until(
                lambda: len(_evals(rx, "conversation")) >= 8, timeout=30, what="8 session evals"
            )
            time.sleep(3)  # past the session's idle_s: a split conversation shows a second eval
            evals = _evals(rx, "conversation")
            assert len(evals) == 8, [attrs(e.attributes) for e in evals]
            for ev in evals:
                a = attrs(ev.attributes)
                assert (a["online_eval.session.turns"], a["online_eval.session.reason"]) == (
                    3,
                    "idle",
                ), a
                assert len(ev.links) == 3  # the last turn's anchor and the two earlier turns'

            def settled() -> Metrics:
                m = sc.metrics(headers={"Connection": "close"})
                out = m.value("online_eval_handoff_turns_total", direction="out")
                assert out > 0, "no turn was handed off: the test did not split a conversation"
                assert m.value("online_eval_handoff_turns_total", direction="in") == out
                assert m.value("online_eval_handoff_turns_total", direction="kept") == 0
                assert m.value("online_eval_assembly_turns_total", outcome="added") == 24
                assert m.value("online_eval_assembly_turns_total", outcome="handed_off") == out
                return m

            eventually(settled, timeout=10)
            code = sc.stop(timeout=30)
        assert code == 0, sc.stderr()[-3000:]
        assert len(_evals(rx, "conversation")) == 8  # nothing more at shutdown


def test_a_turn_crosses_the_handoff_as_one_span_and_back_whole() -> None:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    from otel_online_eval.assembly import Turn
    from otel_online_eval.sidecar.handoff import TURN_SCOPE, turn_of, turn_request

    resource = Resource()
    kv = resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "support"
    turn = Turn(
        2**100 + 5, 2**60 + 7, "Where is my order?", None, 10, 20, 1, 30, None, False, resource
    )
    request = turn_request("conversation", "c-1", turn)
    (rs,) = request.resource_spans
    (ss,) = rs.scope_spans
    assert ss.scope.name == TURN_SCOPE and len(ss.spans) == 1
    assert turn_of(rs.resource, ss.spans[0]) == ("conversation", "c-1", turn)
