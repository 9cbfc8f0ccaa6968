"""The sidecar with a client nobody here wrote in Python: the Node OpenTelemetry SDK
(``@opentelemetry/sdk-trace-node`` + ``@opentelemetry/exporter-trace-otlp-grpc``, pinned in
``tests/node/package-lock.json``). Install once with ``npm --prefix tests/node ci``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpGrpcReceiver, attrs
from tests.sidecar_helpers import (
    RawGrpcReceiver,
    eval_spans,
    export_to,
    forward_to,
    running_sidecar,
    sidecar_config,
    wait_until,
)

NODE_DIR = Path(__file__).parent / "node"
INSTALL = "npm --prefix tests/node ci"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not on PATH (then run: {INSTALL})")
    if not (NODE_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-grpc").is_dir():
        print(f"tests/node/node_modules is missing; install it with: {INSTALL}")
        pytest.skip(f"tests/node/node_modules is missing; install it with: {INSTALL}")
    return node


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_node_sdk_spans_are_forwarded_and_evaluated(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, compression: str
) -> None:
    node = _node()
    with RawGrpcReceiver() as forward:
        config = sidecar_config(
            export=export_to(otlp_grpc_receiver), forward=forward_to(forward.endpoint)
        )
        with running_sidecar(tmp_path, config) as sc:
            result = subprocess.run(
                [node, str(NODE_DIR / "send_spans.js"), f"http://{sc.grpc_endpoint}"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=NODE_DIR,
                env={**os.environ, "SIDECAR_COMPRESSION": compression},
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            sent = json.loads(result.stdout.strip().splitlines()[-1])
            assert [e["code"] for e in sent["exports"]] == [0]
            trace_id = int(sent["traceId"], 16)
            ids = {int(s["spanId"], 16): s for s in sent["spans"]}
            chat = {i for i, s in ids.items() if s["name"] == "chat"}
            assert len(ids) == 3 and len(chat) == 2

            # Forwarded: every span the Node SDK made, with its resource.
            forward.wait_for_bodies(1)
            forwarded = forward.spans()
            assert set(forward.span_ids()) == set(ids)
            resource = forwarded[0][0]
            assert resource["service.name"] == "node-support-app"
            assert resource["telemetry.sdk.language"] == "nodejs"
            for _, scope, span in forwarded:
                assert scope == "node-support-app"
                parent = ids[int.from_bytes(span.span_id, "big")]["parentSpanId"]
                assert span.parent_span_id == (bytes.fromhex(parent) if parent else b"")

            # Evaluated: one eval per chat span, child of and linked to it, same resource.
            got = otlp_grpc_receiver.wait_for_spans(6)
            evals = eval_spans(got, trace_id)
            assert {int.from_bytes(s.parent_span_id, "big") for _, _, s in evals} == chat
            for eval_resource, _, span in evals:
                assert eval_resource == resource
                (link,) = span.links
                assert link.span_id == span.parent_span_id
                assert attrs(span.attributes)["online_eval.span.name"] == "chat"
            labels = sorted(
                attrs(s.attributes)["gen_ai.evaluation.score.label"]
                for _, _, s in got
                if s.name == "score category"
            )
            assert labels == ["billing", "other"]
            m = wait_until(lambda: (m := sc.metrics()).value("online_eval_evals_total") == 2 and m)
            assert m.value("otlp_receiver_requests_total", transport="grpc", outcome="ok") == 1
            assert m.value("otlp_receiver_spans_total", result="accepted") == 3
