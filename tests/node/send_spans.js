// A small Node app traced with the OpenTelemetry JS SDK, exporting OTLP/gRPC to the sidecar.
//
//   node send_spans.js http://127.0.0.1:4317        (or SIDECAR_GRPC_ENDPOINT=...)
//   (run `npm --prefix tests/node ci` once first)
//
// It makes one trace: a SERVER root "POST /support" with two GenAI "chat" children (current
// semantic conventions: gen_ai.operation.name, gen_ai.request.model, gen_ai.input.messages,
// gen_ai.output.messages, token usage). It flushes, shuts down, and prints one JSON line:
// {"traceId", "spans": [{"name", "spanId", "parentSpanId"}], "exports": [{"code", "error"}]}.
// The exit status is 0 only if every export call succeeded.
"use strict";

const { trace, context, SpanKind } = require("@opentelemetry/api");
const { NodeTracerProvider } = require("@opentelemetry/sdk-trace-node");
const { BatchSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-grpc");
const { resourceFromAttributes } = require("@opentelemetry/resources");

const endpoint = process.argv[2] || process.env.SIDECAR_GRPC_ENDPOINT;
if (!endpoint) {
  console.error("usage: node send_spans.js http://127.0.0.1:<grpc port>");
  process.exit(2);
}

// Records every export call's result, then passes it on.
class RecordingExporter {
  constructor(inner) {
    this.inner = inner;
    this.results = [];
  }
  export(spans, done) {
    this.inner.export(spans, (result) => {
      this.results.push({
        code: result.code,
        spans: spans.length,
        error: result.error ? String(result.error) : null,
      });
      done(result);
    });
  }
  forceFlush() {
    return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve();
  }
  shutdown() {
    return this.inner.shutdown();
  }
}

// SIDECAR_COMPRESSION=gzip compresses the gRPC messages.
const compression = process.env.SIDECAR_COMPRESSION || "none";
const exporter = new RecordingExporter(
  new OTLPTraceExporter({ url: endpoint, timeoutMillis: 10000, compression }),
);
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({
    "service.name": "node-support-app",
    "telemetry.sdk.language": "nodejs",
    "deployment.environment": "test",
  }),
  spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 50 })],
});
const tracer = provider.getTracer("node-support-app", "1.0.0");

function messages(role, text) {
  return JSON.stringify([{ role, parts: [{ type: "text", content: text }] }]);
}

const made = [];
function record(span, name, parent) {
  const ctx = span.spanContext();
  made.push({ name, spanId: ctx.spanId, parentSpanId: parent ? parent.spanContext().spanId : null });
}

async function main() {
  const root = tracer.startSpan("POST /support", {
    kind: SpanKind.SERVER,
    attributes: { "http.request.method": "POST", "http.route": "/support" },
  });
  record(root, "POST /support", null);
  const rootContext = trace.setSpan(context.active(), root);
  for (const answer of ["billing", "weather"]) {
    const chat = tracer.startSpan(
      "chat",
      {
        kind: SpanKind.CLIENT,
        attributes: {
          "gen_ai.operation.name": "chat",
          "gen_ai.system": "openai",
          "gen_ai.request.model": "gpt-4o-mini",
          "gen_ai.input.messages": messages("user", "Which team handles my question?"),
          "gen_ai.output.messages": messages("assistant", answer),
          "gen_ai.usage.input_tokens": 21,
          "gen_ai.usage.output_tokens": 1,
        },
      },
      rootContext,
    );
    record(chat, "chat", root);
    chat.end();
  }
  root.end();
  await provider.forceFlush();
  await provider.shutdown();
  const ok = exporter.results.length > 0 && exporter.results.every((r) => r.code === 0);
  console.log(
    JSON.stringify({ traceId: root.spanContext().traceId, spans: made, exports: exporter.results }),
  );
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
