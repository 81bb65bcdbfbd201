package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
)

// Path is where the metrics are served.
const Path = "/metrics"

// NewGatherer returns a Prometheus registry holding the collector for reg,
// the source-updated metrics of this package and the Go runtime and process
// collectors.
func NewGatherer(reg *imans.Registry) (*prometheus.Registry, error) {
	pr := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		NewRegistryCollector(reg),
		denials, eventLatency, sourcesCollector{},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := pr.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return pr, nil
}

// Handler returns an http.Handler serving reg's metrics in the Prometheus
// exposition formats.
func Handler(reg *imans.Registry, log *logrus.Logger) (http.Handler, error) {
	g, err := NewGatherer(reg)
	if err != nil {
		return nil, err
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errorLog{log}}), nil
}

// Serve listens on addr (host:port; keep it on a loopback or node-internal
// address: the figures name every container) and serves reg's metrics at
// /metrics until ctx is done. It returns nil after ctx ends, or the error
// that stopped it.
func Serve(ctx context.Context, addr string, reg *imans.Registry, log *logrus.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, reg, log)
}

// ServeListener is Serve on a listener the caller opened (and that
// ServeListener closes).
func ServeListener(ctx context.Context, ln net.Listener, reg *imans.Registry, log *logrus.Logger) error {
	if log == nil {
		log = logrus.StandardLogger()
	}
	h, err := Handler(reg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer reg.AddObserver(forgetter{})()
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.WithField("addr", ln.Addr().String()).Info("metrics listening")
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("metrics: shutdown %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// errorLog adapts logrus to promhttp.Logger.
type errorLog struct{ log *logrus.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn(append([]any{"metrics: "}, v...)...) }
