// An app using the Vercel AI SDK with its OpenTelemetry integration, against the fake
// OpenAI-compatible server of tests/fake_openai.py. Used by tests/test_genai_vercel_ai.py.
//
//   node app.mjs BASE_URL legacy|otel
//
// legacy: @ai-sdk/otel's LegacyOpenTelemetry (ai.* attributes: ai.prompt.messages,
//         ai.response.text, ai.toolCall.*, ...);
// otel:   @ai-sdk/otel's OpenTelemetry (GenAI semantic conventions: gen_ai.input.messages, ...).
//
// Prints one JSON object per line: {"scenario", "result"} with what the app got back, then
// {"scenario", "span"} for every span the scenario produced (from an in-memory exporter).
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { LegacyOpenTelemetry, OpenTelemetry } from '@ai-sdk/otel';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { z } from 'zod';

const [baseURL, mode] = process.argv.slice(2);
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
const tracer = provider.getTracer('app');
const integration =
  mode === 'legacy' ? new LegacyOpenTelemetry({ tracer }) : new OpenTelemetry({ tracer });
const telemetry = { isEnabled: true, integrations: [integration] };
const model = createOpenAI({ baseURL, apiKey: 'test' }).chat('gpt-4o-mini');
const common = { model, maxRetries: 0, experimental_telemetry: telemetry };

const weather = tool({
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});

const scenarios = {
  async plain() {
    const r = await generateText({ ...common, system: 'be brief', prompt: 'Capital of France?' });
    return { text: r.text };
  },
  async parent() {
    return tracer.startActiveSpan('handle-request', async (span) => {
      try {
        const r = await generateText({ ...common, prompt: 'Capital of Italy?' });
        return { text: r.text, parentSpanId: span.spanContext().spanId };
      } finally {
        span.end();
      }
    });
  },
  async stream() {
    const s = streamText({ ...common, prompt: 'Stream it' });
    let text = '';
    for await (const piece of s.textStream) text += piece;
    return { text };
  },
  async tools() {
    const r = await generateText({
      ...common,
      prompt: 'Weather in Paris?',
      tools: { get_weather: weather },
      stopWhen: stepCountIs(2),
    });
    return {
      text: r.text,
      toolCalls: r.steps[0].toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
      toolResults: r.steps[0].toolResults.map((t) => ({ id: t.toolCallId, output: t.output })),
    };
  },
  async error() {
    try {
      await generateText({ ...common, prompt: 'fail please' });
      return { error: null };
    } catch (e) {
      return { error: e.statusCode ?? String(e) };
    }
  },
};

const spanRecord = (s) => ({
  name: s.name,
  traceId: s.spanContext().traceId,
  spanId: s.spanContext().spanId,
  parentSpanId: s.parentSpanContext?.spanId ?? null,
  kind: s.kind,
  status: s.status,
  attributes: s.attributes,
  events: s.events.map((e) => ({ name: e.name, attributes: e.attributes ?? {} })),
});

const lines = [];
for (const [scenario, run] of Object.entries(scenarios)) {
  const result = await run();
  await provider.forceFlush();
  lines.push(JSON.stringify({ scenario, result }));
  for (const span of exporter.getFinishedSpans()) {
    lines.push(JSON.stringify({ scenario, span: spanRecord(span) }));
  }
  exporter.reset();
}
await provider.shutdown();
// Exit once the output is written: idle keep-alive connections would hold the process ~4 s.
process.stdout.write(lines.join('\n') + '\n', () => process.exit(0));
