"""The sidecar's /metrics text, read back with Prometheus's own parser (prometheus_client)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from otel_online_eval.engine import EngineStats
from otel_online_eval.sidecar.ingest import ReceiverStats
from otel_online_eval.sidecar.prometheus import exposition, families, render
from otel_online_eval.sidecar.shipper import ShipperStats


def _counts(seen: int) -> tuple[EngineStats, ReceiverStats, dict[str, ShipperStats]]:
    engine = EngineStats(
        seen=seen,
        sampled={"quality": 3},
        scores={("quality", 'say "hi"\n', "ok"): 2},
        queue_size=4,
    )
    receiver = ReceiverStats()
    receiver.request("grpc", "ok", 1000)
    receiver.add(accepted=10, rejected=1, reason="invalid_span")
    return engine, receiver, {"export": ShipperStats(sent_spans=7, queued_bytes=512)}


def test_one_process_parses_with_exact_counts_and_escaped_labels() -> None:
    text = render(*_counts(seen=123_456_789))
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    [seen] = parsed["online_eval_spans_seen"].samples
    assert seen.value == 123_456_789  # not rounded to six digits
    assert "online_eval_spans_seen_total 123456789\n" in text
    [score] = parsed["online_eval_scores"].samples
    assert score.labels == {"rule": "quality", "scorer": 'say "hi"\n', "outcome": "ok"}
    assert parsed["online_eval_scores"].type == "counter"
    assert parsed["online_eval_queue_size"].type == "gauge"
    [queued] = parsed["online_eval_shipper_queued_bytes"].samples
    assert (queued.labels, queued.value) == ({"pipeline": "export"}, 512)
    [rejects] = parsed["otlp_receiver_rejects"].samples
    assert (rejects.labels, rejects.value) == ({"reason": "invalid_span"}, 1)


def test_several_sources_make_one_family_each_with_their_labels() -> None:
    text = exposition(
        [
            ({"worker": "0"}, families(*_counts(seen=5))),
            ({"worker": "1"}, families(*_counts(seen=7))),
        ]
    )
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))  # Prometheus refuses a family declared twice
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    seen = {s.labels["worker"]: s.value for s in parsed["online_eval_spans_seen"].samples}
    assert seen == {"0": 5, "1": 7}
    sampled = parsed["online_eval_spans_sampled"].samples
    assert [(s.labels, s.value) for s in sampled] == [
        ({"worker": "0", "rule": "quality"}, 3),
        ({"worker": "1", "rule": "quality"}, 3),
    ]
