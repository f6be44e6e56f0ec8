package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// DefaultSampling is Istio's default trace sampling ratio (1%).
const DefaultSampling = 0.01

// TracingConfig configures span export.
type TracingConfig struct {
	// OTLPEndpoint is the OTLP/gRPC collector ("host:port"); empty turns
	// export off (trace context is still propagated).
	OTLPEndpoint string
	// Insecure sends OTLP without TLS.
	Insecure bool
	// Sampling is the ratio of new traces sampled; an incoming sampled
	// flag is honoured. Default DefaultSampling.
	Sampling float64
	// ServiceName names the waypoint in spans.
	ServiceName string
	// Exporter overrides OTLP and is called synchronously as spans end
	// (tests use an in-memory exporter).
	Exporter sdktrace.SpanExporter
}

// Tracing starts request spans and propagates W3C trace context.
type Tracing struct {
	tracer   trace.Tracer // nil when export is off
	prop     propagation.TextMapPropagator
	shutdown func(context.Context) error
}

// NewTracing builds the tracer. The OTLP client connects lazily: nothing is
// dialed here.
func NewTracing(cfg TracingConfig) (*Tracing, error) {
	t := &Tracing{
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		shutdown: func(context.Context) error { return nil },
	}
	exp := cfg.Exporter
	if exp == nil && cfg.OTLPEndpoint != "" {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		var err error
		if exp, err = otlptracegrpc.New(context.Background(), opts...); err != nil {
			return nil, fmt.Errorf("OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
		}
	}
	if exp == nil {
		return t, nil
	}
	ratio := cfg.Sampling
	if ratio == 0 {
		ratio = DefaultSampling
	}
	name := cfg.ServiceName
	if name == "" {
		name = "waypoint"
	}
	export := sdktrace.WithBatcher(exp)
	if cfg.Exporter != nil {
		export = sdktrace.WithSyncer(exp)
	}
	tp := sdktrace.NewTracerProvider(
		export,
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(name))),
	)
	t.tracer = tp.Tracer("github.com/ambit-mesh/ambit/waypoint")
	t.shutdown = tp.Shutdown
	return t, nil
}

// Start starts the server span of a request, continuing the trace in its
// headers. With export off the span records nothing but carries the
// incoming context, so Inject passes it on unchanged.
func (t *Tracing) Start(ctx context.Context, r *http.Request) (context.Context, trace.Span) {
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	if t.tracer == nil {
		// Nothing to record: the incoming span context, if any, is what
		// Inject passes on; its span (non-recording) ends as a no-op.
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, r.Method+" "+r.Host, trace.WithSpanKind(trace.SpanKindServer))
}

// Inject writes ctx's trace context into outgoing headers.
func (t *Tracing) Inject(ctx context.Context, h http.Header) {
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// Shutdown flushes and stops span export.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}
