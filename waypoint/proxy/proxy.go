package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of Config.
const (
	DefaultDetectTimeout     = time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultStreamIdleTimeout = 5 * time.Minute // Envoy's stream_idle_timeout
	DefaultMaxHeaderBytes    = 60 << 10        // Envoy's default limit
	DefaultRetryBufferBytes  = 64 << 10
	DefaultRetryBackoff      = 25 * time.Millisecond
	DefaultDrainTimeout      = 5 * time.Second
	DefaultMirrorConcurrency = 64
)

// Upstream connection pools: idle connections kept per endpoint, and how
// long.
const (
	upstreamMaxIdle     = 256
	upstreamIdleTimeout = 90 * time.Second
)

// Dialer opens HBONE tunnels to upstream endpoints; *hbone.Client is one.
type Dialer interface {
	Dial(ctx context.Context, req hbone.Request) (*hbone.Stream, error)
}

// RetryBudget bounds retries so they cannot multiply load: at any time the
// retries in flight to a backend may be at most Percent of its active
// requests, or MinConcurrency, whichever is larger (Envoy's retry budget).
type RetryBudget struct {
	Percent        float64
	MinConcurrency int
}

// Config is the proxy's static configuration. Identity and Dialer are
// required.
type Config struct {
	// Identity is the waypoint's SPIFFE id, presented to upstreams.
	Identity spiffeid.ID
	Dialer   Dialer
	// Metrics and Tracing may be nil (no metrics; propagation only).
	Metrics *telemetry.Metrics
	Tracing *telemetry.Tracing
	// Logger gets events and, at Info, one access log line per request.
	Logger *slog.Logger
	// DetectTimeout bounds protocol detection on ports not declared HTTP
	// or TCP; a client silent that long is proxied as TCP.
	DetectTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers (slow clients).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a client connection idle this long.
	IdleTimeout time.Duration
	// StreamIdleTimeout aborts a request whose body and response make no
	// progress this long (a client sending or reading slowly, an upstream
	// not answering): 408 while the request body is unfinished, else 504.
	// Negative disables it; WebSocket upgrades are exempt.
	StreamIdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers; larger ones get 431.
	MaxHeaderBytes int
	// RetryBufferBytes is how much of a request body is kept to replay it
	// on retry (and to mirror it); larger bodies are not retried.
	RetryBufferBytes int
	// RetryBackoff is the base interval between retries.
	RetryBackoff time.Duration
	RetryBudget  RetryBudget
	// DrainTimeout bounds the shutdown of open connections.
	DrainTimeout time.Duration
	// Seed seeds weighted backend choice (0: random), for tests.
	Seed uint64
}

func (c *Config) setDefaults() error {
	if c.Identity.IsZero() || c.Dialer == nil {
		return errors.New("proxy: Config needs Identity and Dialer")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tracing == nil {
		t, err := telemetry.NewTracing(telemetry.TracingConfig{})
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		c.Tracing = t
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DetectTimeout, DefaultDetectTimeout)
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.StreamIdleTimeout, DefaultStreamIdleTimeout)
	def(&c.RetryBackoff, DefaultRetryBackoff)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.RetryBufferBytes == 0 {
		c.RetryBufferBytes = DefaultRetryBufferBytes
	}
	if c.RetryBudget == (RetryBudget{}) {
		c.RetryBudget = RetryBudget{Percent: 20, MinConcurrency: 3}
	}
	return nil
}

// Proxy is the waypoint data path. It implements hbone.Handler.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	state atomic.Pointer[state]

	updateMu sync.Mutex

	srv   *http.Server
	conns *connListener
	rp    *httputil.ReverseProxy
	h1    *h1Client // HTTP/1.1 requests sent whole (no streaming)
	upH1  *http.Transport
	upH2  *http.Transport
	// dialer opens upstream connections for all three: dialUpstream, but
	// tests replace it.
	dialer   func(ctx context.Context, network, addr string) (net.Conn, error)
	rndMu    sync.Mutex
	rnd      *rand.Rand
	mirrors  chan struct{} // semaphore
	wg       sync.WaitGroup
	closed   chan struct{}
	runOnce  sync.Once
	shutdown context.Context // canceled when Run ends
	cancel   context.CancelFunc
}

// New builds a Proxy with an empty configuration (every destination
// unknown until Update). It starts nothing.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		conns:   newConnListener(),
		rnd:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		mirrors: make(chan struct{}, DefaultMirrorConcurrency),
		closed:  make(chan struct{}),
	}
	p.shutdown, p.cancel = context.WithCancel(context.Background())
	p.state.Store(emptyState())
	// One server for HTTP/1.1 and h2c (prior knowledge, which is what
	// HBONE clients send): net/http tells them apart by the preface.
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	p.srv = &http.Server{
		Handler:           p,
		Protocols:         &protos,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250},
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	var http1, h2c http.Protocols
	http1.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	p.dialer = p.dialUpstream
	p.h1 = newH1Client(p.dial, upstreamMaxIdle, upstreamIdleTimeout, int64(cfg.MaxHeaderBytes))
	p.upH1 = &http.Transport{
		DialContext:            p.dial,
		Protocols:              &http1,
		MaxIdleConnsPerHost:    upstreamMaxIdle,
		IdleConnTimeout:        upstreamIdleTimeout,
		DisableCompression:     true,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes),
	}
	p.upH2 = &http.Transport{
		DialContext:            p.dial,
		Protocols:              &h2c,
		IdleConnTimeout:        upstreamIdleTimeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes),
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	p.rp = p.reverseProxy()
	return p, nil
}

// Run serves the HTTP/1.1 and h2c connections ServeHBONE hands over until ctx is
// canceled, then drains them for DrainTimeout. Call it once.
func (p *Proxy) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(p.conns) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("proxy: serve: %w", err)
	}
	p.runOnce.Do(func() { close(p.closed) })
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DrainTimeout)
	defer cancel()
	if serr := p.srv.Shutdown(dctx); serr != nil {
		p.srv.Close()
	}
	p.cancel()
	p.wg.Wait()
	p.h1.CloseIdleConnections(true)
	p.upH1.CloseIdleConnections()
	p.upH2.CloseIdleConnections()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
