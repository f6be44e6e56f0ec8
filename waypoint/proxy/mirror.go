package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/lb"
)

// mirrorTimeout bounds a mirrored request.
const mirrorTimeout = 10 * time.Second

// mirror sends copies of a served request to the rule's mirrors, fire and
// forget. Only requests whose body was read whole and kept (up to
// RetryBufferBytes) are mirrored with their body; larger ones are not
// mirrored. At most DefaultMirrorConcurrency mirrors run at once; more
// are dropped rather than queued.
func (p *Proxy) mirror(r *http.Request, ex *exchange, st *state) {
	if ex.rule == nil || len(ex.rule.Filters.Mirrors) == 0 {
		return
	}
	var body []byte
	if ex.body != nil {
		b, ok := ex.body.complete()
		if !ok {
			return
		}
		body = b
	}
	for _, m := range ex.rule.Filters.Mirrors {
		if m.Percent > 0 && m.Percent < 100 {
			p.rndMu.Lock()
			skip := p.rnd.Float64()*100 >= m.Percent
			p.rndMu.Unlock()
			if skip {
				continue
			}
		}
		b := st.backends[m.Backend.Key()]
		if b == nil || m.Backend.Unresolved != "" {
			continue
		}
		select {
		case p.mirrors <- struct{}{}:
		default:
			continue
		}
		req := r.Clone(p.shutdown)
		req.URL.Scheme, req.Host = "http", ex.host+"-shadow"
		outPath(req.URL, ex.path)
		req.RequestURI = ""
		req.Body, req.ContentLength = nil, int64(len(body))
		if len(body) > 0 {
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.mirrors }()
			p.sendMirror(req, b)
		}()
	}
}

func (p *Proxy) sendMirror(req *http.Request, b *backend) {
	h, ok := b.pool.Pick()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), mirrorTimeout)
	defer cancel()
	req = req.WithContext(ctx)
	req.URL.Host = h.Value().addr.String()
	rt := http.RoundTripper(p.upH1)
	if req.ProtoMajor == 2 {
		rt = p.upH2
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		h.Done(lb.ConnectFailure)
		p.log.Debug("mirror failed", "dst", b.key, "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		h.Done(lb.ServerError)
	} else {
		h.Done(lb.Success)
	}
}
