package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Response is the JSON body of every HTTP answer: what the server is and what
// it received.
type Response struct {
	Pod        string              `json:"pod"`
	Namespace  string              `json:"namespace,omitempty"`
	Hostname   string              `json:"hostname"`
	Version    string              `json:"version,omitempty"`
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	Path       string              `json:"path"`
	Query      string              `json:"query,omitempty"`
	Proto      string              `json:"proto"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
	Status     int                 `json:"status"`
}

// newHandler serves /healthz with 200 "ok", /status/<code> with that status
// code, and every other path with 200; all but /healthz answer with a Response
// as one line of JSON.
func newHandler(cfg Config) http.Handler {
	hostname, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			code, err := strconv.Atoi(rest)
			if err != nil || code < 200 || code > 599 {
				http.Error(w, "bad status code "+strconv.Quote(rest), http.StatusBadRequest)
				return
			}
			status = code
		}
		resp := Response{
			Pod:        cfg.Pod,
			Namespace:  cfg.Namespace,
			Hostname:   hostname,
			Version:    cfg.Version,
			Method:     r.Method,
			Host:       r.Host,
			Path:       r.URL.Path,
			Query:      r.URL.RawQuery,
			Proto:      r.Proto,
			RemoteAddr: r.RemoteAddr,
			Headers:    r.Header,
			Status:     status,
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		// One line per response, so `client http -n N` output parses line by line.
		_ = json.NewEncoder(w).Encode(resp) // On error the client went away; nothing to do.
	})
	return mux
}
