package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// retryInterval is the pause between attempts of a request under -wait.
const retryInterval = 250 * time.Millisecond

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags http.Header

func (h headerFlags) String() string { return fmt.Sprint(http.Header(h)) }

func (h headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("header %q is not Name: value", v)
	}
	http.Header(h).Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

// httpOptions are the http command's flags.
type httpOptions struct {
	url       string
	count     int
	method    string
	body      string
	host      string
	header    http.Header
	timeout   time.Duration
	wait      time.Duration
	keepAlive bool
	verbose   bool
	// interval is the pause between attempts under -wait: retryInterval but in tests.
	interval time.Duration
}

func httpCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := httpOptions{header: http.Header{}, interval: retryInterval}
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	fs.IntVar(&o.count, "n", 1, "number of requests")
	fs.StringVar(&o.method, "X", http.MethodGet, "request method")
	fs.StringVar(&o.body, "d", "", "request body")
	fs.StringVar(&o.host, "host", "", "Host header (default from URL)")
	fs.Var(headerFlags(o.header), "H", `request header "Name: value" (repeatable)`)
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "timeout of each request")
	fs.DurationVar(&o.wait, "wait", 0, "retry each failed request until it succeeds or this much time passed")
	fs.BoolVar(&o.keepAlive, "keepalive", false, "reuse connections (default: a new connection per request, so L4 load balancing shows)")
	fs.BoolVar(&o.verbose, "v", false, "print the status line and headers before each body")
	pos, err := parseFlags(fs, args, 1, stderr)
	if err != nil {
		return err
	}
	o.url = pos[0]
	if o.count < 1 {
		return fmt.Errorf("%w: -n must be at least 1", errUsage)
	}
	return doHTTP(ctx, o, stdout)
}

// doHTTP sends o.count requests one after another and prints each body,
// failing on the first request that fails or gets a status of 400 or more.
func doHTTP(ctx context.Context, o httpOptions, stdout io.Writer) error {
	client := &http.Client{
		Timeout:   o.timeout,
		Transport: &http.Transport{DisableKeepAlives: !o.keepAlive}, // No Proxy: HTTP_PROXY is ignored.
	}
	defer client.CloseIdleConnections()
	for i := range o.count {
		body, err := retry(ctx, o.wait, o.interval, func() (string, error) { return request(ctx, client, o) })
		if err != nil {
			if o.count > 1 {
				return fmt.Errorf("request %d of %d: %w", i+1, o.count, err)
			}
			return err
		}
		if _, err := io.WriteString(stdout, body); err != nil {
			return err
		}
	}
	return nil
}

// retry calls f, every interval, until it succeeds, ctx is done, or wait has
// passed since the first call, and returns f's last result.
func retry(ctx context.Context, wait, interval time.Duration, f func() (string, error)) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		out, err := f()
		if err == nil || !time.Now().Before(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, err
		case <-time.After(interval):
		}
	}
}

// request makes one request and returns what to print for it.
func request(ctx context.Context, client *http.Client, o httpOptions) (string, error) {
	var body io.Reader
	if o.body != "" {
		body = strings.NewReader(o.body)
	}
	req, err := http.NewRequestWithContext(ctx, o.method, o.url, body)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	req.Header = o.header.Clone()
	if o.host != "" {
		req.Host = o.host
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%s %s: read body: %w", o.method, o.url, err)
	}
	var out strings.Builder
	if o.verbose {
		fmt.Fprintf(&out, "%s %s\n", resp.Proto, resp.Status)
		_ = resp.Header.Write(&out) // A strings.Builder does not fail.
		out.WriteString("\n")
	}
	out.Write(data)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		out.WriteString("\n")
	}
	if resp.StatusCode >= 400 {
		return out.String(), fmt.Errorf("%s %s: HTTP %s: %s", o.method, o.url, resp.Status, strings.TrimSpace(string(data)))
	}
	return out.String(), nil
}
