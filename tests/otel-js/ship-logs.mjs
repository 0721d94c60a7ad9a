// Ships two log records with the OpenTelemetry JS SDK (sdk-logs and the
// OTLP/HTTP JSON exporter) to the endpoint the standard environment names:
//   OTEL_EXPORTER_OTLP_LOGS_ENDPOINT   e.g. http://127.0.0.1:8080/api/v1/otlp/v1/logs
//   OTEL_EXPORTER_OTLP_HEADERS         Authorization=Bearer <PAT>
// and, for this test, SERVICE (the resource's service.name), TRACE_ID and
// SPAN_ID (hex: the trace context the records are emitted in).
// Run by tests/test_otel_sdks.py; prints "flushed" once the exporter is done.
import { context, diag, DiagConsoleLogger, DiagLogLevel, trace, TraceFlags } from "@opentelemetry/api";
import { SeverityNumber } from "@opentelemetry/api-logs";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchLogRecordProcessor, LoggerProvider } from "@opentelemetry/sdk-logs";

// Export failures are reported through diag: make them visible on stderr.
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);

const exporter = new OTLPLogExporter(); // endpoint, headers: from the environment
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ "service.name": process.env.SERVICE, "deployment.environment": "test" }),
  processors: [new BatchLogRecordProcessor({ exporter })],
});
const logger = provider.getLogger("checkout-js", "2.0.1");

const spanContext = { traceId: process.env.TRACE_ID, spanId: process.env.SPAN_ID, traceFlags: TraceFlags.SAMPLED };
const inSpan = trace.setSpanContext(context.active(), spanContext);

logger.emit({
  context: inSpan,
  severityNumber: SeverityNumber.ERROR,
  severityText: "ERROR",
  body: "card declined for order 77",
  attributes: { "order.id": 77, "http.status_code": 402, retry: false, "user.tier": "gold", tags: ["a", "b"] },
});
logger.emit({
  context: inSpan,
  severityNumber: SeverityNumber.INFO2,
  severityText: "INFO",
  body: "charge attempt finished",
  attributes: { "latency.ms": 812.5 },
});

await provider.forceFlush();
await provider.shutdown();
console.log("flushed");
