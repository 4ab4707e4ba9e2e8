package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/admin"
	"github.com/sluicemta/sluice/delivery"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/health"
	"github.com/sluicemta/sluice/internal/logbuf"
	"github.com/sluicemta/sluice/internal/sched"
	"github.com/sluicemta/sluice/maillog"
	"github.com/sluicemta/sluice/queue"
	"github.com/sluicemta/sluice/smtp"
)

// The binary's own defaults: settings the library has no default for
// because only a process has addresses and a working directory.
const (
	defaultListen = "127.0.0.1:2525"
	defaultSpool  = "./sluice-spool"
	defaultHTTP   = "127.0.0.1:8025"
)

// Bounds of a graceful shutdown and of the readiness probe.
const (
	drainTimeout = 30 * time.Second
	probeTimeout = 2 * time.Second
)

// serveFlags are the command-line settings of serve; a flag given on the
// command line overrides the configuration file.
type serveFlags struct {
	config, listen, spool, smarthost, http, hostname, logLevel, logFormat string
}

func serveFlagSet(out io.Writer) (*flag.FlagSet, *serveFlags) {
	f := &serveFlags{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.config, "config", "", "TOML configuration `file`")
	fs.StringVar(&f.listen, "listen", defaultListen, "SMTP listen `address`")
	fs.StringVar(&f.spool, "spool", defaultSpool, "spool `directory`")
	fs.StringVar(&f.smarthost, "smarthost", "", "relay all mail to `host:port` instead of the MX hosts")
	fs.StringVar(&f.http, "http", defaultHTTP, "`address` for /livez, /readyz and /metrics")
	fs.StringVar(&f.hostname, "hostname", "", "`name` in the greeting, EHLO and Received (default: the host name)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log `format`: json or text")
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: sluice serve [flags]\n\nRun the relay. Flags override the configuration file.\n\nflags:")
		fs.PrintDefaults()
	}
	return fs, f
}

func runServe(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) int {
	fs, f := serveFlagSet(stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	s, err := serveSettings(fs, f)
	if err != nil {
		// Configuration errors start with "file:line:", like a
		// compiler's, one per line.
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	// Log lines go out in batches at most logDelay old (a busy relay logs
	// a line or two per message); warnings and errors at once.
	lw := logbuf.New(stderr, logDelay, 64<<10, nil) // a failed write has nowhere to be told
	defer lw.Close()
	log := slog.New(lw.Handler(newHandler(lw, s), slog.LevelWarn))
	setScheduling(s.cpuScheduling, log)
	// SIGHUP reloads the routes table from the configuration file.
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	defer signal.Stop(reload)
	s.configFile, s.reload = f.config, reload
	if err := serve(ctx, s, log); err != nil {
		log.Error("serve failed", "err", err)
		return exitFailure
	}
	return exitOK
}

// setScheduling moves the process's threads to SCHED_BATCH unless
// process.cpu_scheduling is "inherit" (see internal/sched for why). A
// failure is logged and the process runs on under the policy it was
// started with; off Linux the default says nothing.
func setScheduling(policy string, log *slog.Logger) {
	if policy == "inherit" {
		return
	}
	n, err := sched.SetBatch()
	switch {
	case errors.Is(err, sched.ErrUnsupported) && policy == "":
	case err != nil:
		log.Warn("cannot run under SCHED_BATCH; running under the policy the process was started with", "err", err)
	default:
		log.Debug("threads moved to SCHED_BATCH", "threads", n)
	}
}

// serveSettings reads the configuration file, if any, and applies the
// flags given on the command line over it, then the binary's defaults.
func serveSettings(fs *flag.FlagSet, f *serveFlags) (*settings, error) {
	s := &settings{}
	if f.config != "" {
		var err error
		if s, err = loadConfig(f.config); err != nil {
			return nil, err
		}
	}
	var errs []error
	fs.Visit(func(fl *flag.Flag) {
		if err := applyFlag(s, fl.Name, fl.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("sluice serve: --%s: %w", fl.Name, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	setDefault(&s.smtpListen, defaultListen)
	setDefault(&s.spool, defaultSpool)
	setDefault(&s.httpListen, defaultHTTP)
	if s.adminToken == "" && !loopbackAddress(s.httpListen) {
		return nil, fmt.Errorf("sluice serve: the HTTP listener %s is not on loopback, and its admin API changes the queue: set http.token_file", s.httpListen)
	}
	return s, nil
}

// probeIsProxy reports whether the readiness probe's connections to the
// listener at addr come from an address in proxies, which the listener
// then expects a PROXY header from: the listener's own address, or
// loopback when it listens on every address.
func probeIsProxy(addr net.Addr, proxies []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	src := ap.Addr().Unmap()
	switch {
	case src.IsUnspecified() && src.Is4():
		src = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case src.IsUnspecified():
		src = netip.IPv6Loopback()
	}
	for _, p := range proxies {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// loopbackAddress reports whether host:port names a loopback address
// ("localhost" included); "" and wildcard hosts are not.
func loopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func setDefault(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func applyFlag(s *settings, name, value string) error {
	switch name {
	case "listen":
		s.smtpListen = value
		return checkHostPort(value, true)
	case "http":
		s.httpListen = value
		return checkHostPort(value, true)
	case "smarthost":
		s.smarthost = value
		if value == "" {
			return nil // overrides a smarthost of the file: deliver by MX
		}
		return checkHostPort(value, false)
	case "spool":
		s.spool = value
		if value == "" {
			return errors.New("empty spool directory")
		}
	case "hostname":
		s.hostname = value
		if err := sluice.CheckDomain(value, false); err != nil {
			return err
		}
	case "log-level":
		return s.logLevel.UnmarshalText([]byte(value))
	case "log-format":
		s.logFormat = value
		return checkLogFormat(value)
	}
	return nil
}

// logDelay is the longest an info or debug line waits to be written.
const logDelay = 100 * time.Millisecond

func newHandler(w io.Writer, s *settings) slog.Handler {
	opts := &slog.HandlerOptions{Level: s.logLevel}
	if s.logFormat == "text" {
		return slog.NewTextHandler(w, opts)
	}
	return slog.NewJSONHandler(w, opts)
}

// serve runs the relay until ctx is cancelled (SIGTERM or SIGINT), then
// drains: readiness goes to 503, the SMTP listener stops and sessions
// finish, deliveries in flight finish; queued mail stays in the spool.
func serve(ctx context.Context, s *settings, log *slog.Logger) error {
	h, err := health.New(health.WithLogger(log))
	if err != nil {
		return err
	}
	reg := h.Registerer()
	q, err := queue.New(s.spool, queueOptions(s, log, reg)...)
	if err != nil {
		return err
	}
	defer q.Close()
	fopts, pools, err := buildFilters(s.filters, log, reg)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	chain, err := filter.New(append(fopts, filter.WithLogger(log), filter.WithRegisterer(reg))...)
	if err != nil {
		return err
	}
	rates := admin.NewRates(nil)
	recorders := admin.Tee{rates}
	var mlog *maillog.Log
	if path := deliveryLogPath(s); path != "" {
		if mlog, err = maillog.Open(path, maillog.WithLogger(log), maillog.WithWriteDelay(logDelay)); err != nil {
			return err
		}
		defer mlog.Close()
		recorders = append(recorders, mlog)
	}
	agent, err := delivery.New(q, append(deliveryOptions(s, log, reg), delivery.WithRecorder(recorders), delivery.WithPostQueue(chain))...)
	if err != nil {
		return err
	}
	defer agent.Close()
	aopts := []admin.Option{admin.WithExplainer(agent), admin.WithToken(s.adminToken), admin.WithLogger(log),
		admin.WithRates(rates), admin.WithComponents(readinessComponents(h)), admin.WithFilters(chain),
		admin.WithComponents(filterComponents(chain, pools))}
	if mlog != nil {
		aopts = append(aopts, admin.WithDeliveryLog(mlog))
	}
	api, err := admin.New(q, aopts...)
	if err != nil {
		return err
	}
	watcher, err := newWatcher(s.alerts, q, agent, s.spool, log, reg)
	if err != nil {
		return err
	}
	reloadDone := make(chan struct{})
	defer func() { <-reloadDone }()
	reloadCtx, stopReload := context.WithCancel(ctx)
	defer stopReload() // runs before the wait above
	go func() {
		defer close(reloadDone)
		reloadRoutes(reloadCtx, s, agent, log)
	}()
	sopts, users, err := smtpOptions(s, q, log, reg)
	if err != nil {
		return err
	}
	sopts = append(sopts, smtp.WithFilters(chain))
	srv, err := smtp.New(q, sopts...)
	if err != nil {
		return err
	}
	// Listen before serving anything, so a bad or busy address fails
	// fast with a clear error.
	listeners, err := listen(s)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", s.httpListen)
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return fmt.Errorf("http listener: %w", err)
	}
	sl := listeners[0]
	h.AddReadiness("queue", health.CheckerFunc(q.Check))
	smtpProbe := health.SMTPProbe
	if probeIsProxy(sl.Addr(), s.proxyNetworks) {
		smtpProbe = health.SMTPProbeBehindProxy // the listener wants a PROXY header from it
	}
	h.AddReadiness("smtp", smtpProbe(sl.Addr().String(), probeTimeout))
	h.AddReadiness("admission", health.CheckerFunc(srv.Check))
	hs := &http.Server{
		Handler:           httpHandler(h, api, s.pprof),
		ReadHeaderTimeout: 10 * time.Second,
		// Every stage has a deadline (DESIGN rule 3): a slow or stalled
		// client cannot hold a connection; the longest answers (a log
		// search, a 30 s CPU profile) fit well within these.
		ReadTimeout:  time.Minute,
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); watcher.Run(watchCtx) }()
	defer func() { stopWatch(); <-watchDone }()

	queueDone := make(chan error, 1)
	go func() { queueDone <- q.Serve(agent) }()
	smtpDone := make(chan error, len(listeners))
	for i, l := range listeners {
		kind := smtp.KindSMTP
		if i > 0 {
			kind = s.listeners[i-1].kind
		}
		go func() { smtpDone <- srv.ServeKind(l, kind) }()
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Serve(hl) }()
	hupDone := make(chan struct{})
	hupCtx, stopHUP := context.WithCancel(ctx)
	go func() {
		defer close(hupDone)
		reloadOnHUP(hupCtx, srv, users, s, log)
	}()
	var extra []string
	for _, l := range listeners[1:] {
		extra = append(extra, l.Addr().String())
	}
	log.Info("listening", "smtp", sl.Addr().String(), "smtp_listeners", extra, "http", hl.Addr().String(),
		"spool", s.spool, "smarthost", s.smarthost)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-smtpDone:
		runErr = fmt.Errorf("smtp server stopped: %w", err)
		smtpDone <- nil // for the drain below
	case err := <-httpDone:
		runErr = fmt.Errorf("http server stopped: %w", err)
		httpDone <- nil
	case err := <-queueDone:
		runErr = fmt.Errorf("queue stopped: %w", err)
		queueDone <- nil
	}
	stopHUP()
	<-hupDone
	if err := drain(h, srv, q, hs, s.lameDuck, log); err != nil && runErr == nil {
		runErr = err
	}
	for range listeners {
		<-smtpDone
	}
	<-httpDone
	<-queueDone
	return runErr
}

// httpHandler serves the health endpoints, the admin API and the status
// page (when api is not nil) and, when withPprof is set, the runtime
// profiles of net/http/pprof under /debug/pprof/ (for benchmarks and
// investigations; they expose internals, so they are off by default).
func httpHandler(h *health.Health, api *admin.API, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h.Handler())
	if api != nil {
		mux.Handle("/api/", api.Handler())
		mux.Handle("/status", api.StatusPage())
	}
	if withPprof {
		// Behind the admin API's check: with a token set, the profiles
		// need it too (they show the process's internals).
		protect := func(h http.HandlerFunc) http.Handler {
			if api == nil {
				return h
			}
			return api.Protect(h)
		}
		mux.Handle("/debug/pprof/", protect(pprof.Index))
		mux.Handle("/debug/pprof/cmdline", protect(pprof.Cmdline))
		mux.Handle("/debug/pprof/profile", protect(pprof.Profile))
		mux.Handle("/debug/pprof/symbol", protect(pprof.Symbol))
		mux.Handle("/debug/pprof/trace", protect(pprof.Trace))
	}
	return mux
}

// readinessComponents shows the graded readiness and its failing checks
// on the status page.
func readinessComponents(h *health.Health) admin.ComponentsFunc {
	return func(ctx context.Context) []admin.Component {
		rd := h.Ready(ctx)
		cs := []admin.Component{{Kind: "readiness", Name: "sluice", State: rd.Status}}
		names := make([]string, 0, len(rd.Failing))
		for n := range rd.Failing {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			cs = append(cs, admin.Component{Kind: "check", Name: n, State: "failing", Detail: rd.Failing[n]})
		}
		return cs
	}
}

// filterComponents shows the filters' circuit breakers and the replicas of
// the scanners' pools on the status page.
func filterComponents(chain *filter.Chain, pools []*health.Pool) admin.ComponentsFunc {
	return func(context.Context) []admin.Component {
		var cs []admin.Component
		for _, f := range chain.Status() {
			if f.Breaker == "" {
				continue
			}
			c := admin.Component{Kind: "breaker", Name: f.Name, State: f.Breaker}
			if !f.OpenedAt.IsZero() {
				c.Detail = "opened " + f.OpenedAt.Format(time.RFC3339)
			}
			cs = append(cs, c)
		}
		for _, p := range pools {
			for _, e := range p.Endpoints() {
				c := admin.Component{Kind: "replica", Name: p.Name() + " " + e.Addr, State: "up",
					Detail: fmt.Sprintf("%d outstanding", e.Outstanding)}
				if !e.Up {
					c.State = "down"
					if e.Err != nil {
						c.Detail = e.Err.Error()
					}
				}
				cs = append(cs, c)
			}
		}
		return cs
	}
}

// deliveryLogPath is where the delivery log is kept: the configured file,
// by default delivery.log in the spool directory, or "" for none.
func deliveryLogPath(s *settings) string {
	if s.deliveryFile != nil {
		return *s.deliveryFile
	}
	return filepath.Join(s.spool, "delivery.log")
}

// listen opens the main SMTP listener and the extra ones, in the order of
// the configuration.
func listen(s *settings) ([]net.Listener, error) {
	addrs := []string{s.smtpListen}
	for _, l := range s.listeners {
		addrs = append(addrs, l.address)
	}
	var ls []net.Listener
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, fmt.Errorf("smtp listener: %w", err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// reloadOnHUP reloads the certificate and the password file on SIGHUP
// until ctx ends.
func reloadOnHUP(ctx context.Context, srv *smtp.Server, users *smtp.PasswordFile, s *settings, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading certificate and users")
		if s.tlsCert != "" {
			if err := srv.ReloadCertificate(); err != nil {
				log.Error("reload certificate", "err", err)
			}
		}
		if users != nil {
			if err := users.Reload(); err != nil {
				log.Error("reload users", "err", err)
			}
		}
	}
}

// drain shuts the parts down in order, all within drainTimeout: stop
// being ready, stop taking mail, let deliveries in flight finish, stop
// answering HTTP.
func drain(h *health.Health, srv *smtp.Server, q *queue.Queue, hs *http.Server, lameDuck time.Duration, log *slog.Logger) error {
	h.SetDraining(true)
	if lameDuck > 0 {
		// Not ready, still serving: load balancers see 503 and move new
		// sessions elsewhere before the listeners close.
		log.Info("lame duck: not ready, still serving", "for", lameDuck.String())
		time.Sleep(lameDuck)
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("smtp shutdown: %w", err))
		srv.Close()
	}
	if err := q.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("queue shutdown: %w", err))
	}
	if err := q.Close(); err != nil {
		errs = append(errs, fmt.Errorf("queue close: %w", err))
	}
	if err := hs.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		hs.Close()
	}
	err := errors.Join(errs...)
	if err == nil {
		log.Info("stopped")
	}
	return err
}

func queueOptions(s *settings, log *slog.Logger, reg prometheus.Registerer) []queue.Option {
	opts := []queue.Option{queue.WithLogger(log), queue.WithRegisterer(reg)}
	if s.workers > 0 {
		opts = append(opts, queue.WithWorkers(s.workers))
	}
	if s.retryMin > 0 {
		opts = append(opts, queue.WithRetry(s.retryMin, s.retryMax))
	}
	if s.maxAge > 0 {
		opts = append(opts, queue.WithMaxAge(s.maxAge))
	}
	if s.backoffFactor > 0 {
		opts = append(opts, queue.WithBackoffFactor(s.backoffFactor))
	}
	if s.retryBudget > 0 {
		opts = append(opts, queue.WithRetryBudget(s.retryBudget))
	}
	if s.paceBacklog > 0 {
		opts = append(opts, queue.WithPaceBacklog(s.paceBacklog))
	}
	if s.restartSpread != nil {
		opts = append(opts, queue.WithRestartSpread(*s.restartSpread))
	}
	if s.delayWarning > 0 {
		opts = append(opts, queue.WithDelayWarning(s.delayWarning))
	}
	return opts
}

func deliveryOptions(s *settings, log *slog.Logger, reg prometheus.Registerer) []delivery.Option {
	opts := []delivery.Option{delivery.WithLogger(log), delivery.WithRegisterer(reg)}
	if s.hostname != "" {
		opts = append(opts, delivery.WithHostname(s.hostname))
	}
	if s.smarthost != "" {
		opts = append(opts, delivery.WithSmarthost(s.smarthost))
	}
	if s.resolvers != nil {
		opts = append(opts, delivery.WithResolvers(s.resolvers...))
	}
	if s.mxPort > 0 {
		opts = append(opts, delivery.WithPort(s.mxPort))
	}
	// Zero fields keep the library's defaults.
	opts = append(opts, delivery.WithTimeouts(delivery.Timeouts{
		Connect: s.connect, Greeting: s.greeting, Hello: s.hello, StartTLS: s.startTLS, Mail: s.mail,
		Rcpt: s.rcpt, DataStart: s.dataStart, Command: s.command, Data: s.data, DNS: s.dns,
		DataRate: s.dataRate,
	}), delivery.WithShaping(s.shaping), delivery.WithShapeBy(s.shapeBy))
	if s.dnsCache != nil {
		opts = append(opts, delivery.WithDNSCache(*s.dnsCache))
	}
	if s.deadHost > 0 {
		opts = append(opts, delivery.WithDeadHostTime(s.deadHost))
	}
	if s.routes != nil {
		opts = append(opts, delivery.WithRoutes(s.routes))
	}
	if s.limits != nil {
		opts = append(opts, delivery.WithShapingRules(s.limits...))
	}
	if s.replies != nil {
		opts = append(opts, delivery.WithReplyRules(s.replies...))
	}
	return opts
}

// smtpOptions turns the settings into the acceptor's options; zero
// settings keep the library's defaults. It also returns the password file,
// for reloads.
func smtpOptions(s *settings, q *queue.Queue, log *slog.Logger, reg prometheus.Registerer) ([]smtp.Option, *smtp.PasswordFile, error) {
	opts := []smtp.Option{smtp.WithLogger(log), smtp.WithRegisterer(reg)}
	add := func(set bool, o smtp.Option) {
		if set {
			opts = append(opts, o)
		}
	}
	add(s.hostname != "", smtp.WithHostname(s.hostname))
	add(s.trustedNetworks != nil, smtp.WithTrustedNetworks(s.trustedNetworks...))
	add(s.localDomains != nil, smtp.WithLocalDomains(s.localDomains...))
	add(s.maxMessageSize > 0, smtp.WithMaxMessageBytes(s.maxMessageSize))
	add(s.maxRecipients > 0, smtp.WithMaxRecipients(s.maxRecipients))
	add(s.proxyNetworks != nil, smtp.WithProxyNetworks(s.proxyNetworks...))
	add(s.dnsblZones != nil, smtp.WithDNSBL(s.dnsblResolver, s.dnsblThreshold, s.dnsblZones...))
	add(s.dnsblTimeout > 0, smtp.WithDNSBLTimeout(s.dnsblTimeout))
	add(s.tlsCert != "", smtp.WithCertificate(s.tlsCert, s.tlsKey))
	add(s.filterBudget > 0, smtp.WithFilterBudget(s.filterBudget))

	l := s.smtpLimits
	add(l.maxConns > 0, smtp.WithMaxConnections(l.maxConns))
	add(l.maxConnsPerIP > 0, smtp.WithMaxConnectionsPerIP(l.maxConnsPerIP))
	add(l.connRate > 0, smtp.WithConnectionRate(rate.Limit(l.connRate), l.connBurst))
	add(l.msgRate > 0, smtp.WithMessageRate(rate.Limit(l.msgRate), l.msgBurst))
	add(l.maxErrors > 0, smtp.WithMaxErrors(l.maxErrors))
	add(l.maxIdle > 0, smtp.WithMaxCommandsWithoutMail(l.maxIdle))
	add(l.maxLineLength > 0, smtp.WithMaxLineLength(l.maxLineLength))
	add(l.maxHops > 0, smtp.WithMaxHops(l.maxHops))
	add(l.normalize, smtp.WithNormalizeLineEndings(true))
	add(l.authFailures > 0, smtp.WithAuthFailureLimit(l.authFailures, l.authWindow))
	if l.inFlowDelay != nil {
		opts = append(opts, smtp.WithInFlowDelay(*l.inFlowDelay))
	}

	t := s.smtpTimeouts
	add(t.greeting > 0, smtp.WithGreetingTimeout(t.greeting))
	add(t.command > 0, smtp.WithCommandTimeout(t.command))
	add(t.data > 0, smtp.WithDataTimeout(t.data))
	add(t.session > 0, smtp.WithSessionTimeout(t.session))
	add(t.handshake > 0, smtp.WithHandshakeTimeout(t.handshake))
	add(t.stress > 0, smtp.WithStressTimeout(t.stress))
	add(t.stressConnections > 0, smtp.WithStressConnections(t.stressConnections))

	for _, g := range s.gate {
		var gauge smtp.Gauge
		switch g.gauge {
		case "queue_depth":
			gauge = smtp.GaugeFunc(func(context.Context) (float64, error) { return float64(q.Depth()), nil })
		case "queue_age":
			gauge = smtp.GaugeFunc(func(context.Context) (float64, error) {
				if t := q.Oldest(); !t.IsZero() {
					return time.Since(t).Seconds(), nil
				}
				return 0, nil
			})
		case "disk":
			gauge = smtp.DiskUsage(s.spool)
		case "open_files":
			gauge = smtp.OpenFiles()
		}
		opts = append(opts, smtp.WithGate(g.gauge, gauge, g.high, g.low))
	}

	var users *smtp.PasswordFile
	if s.authUsersFile != "" {
		var err error
		if users, err = smtp.NewPasswordFile(s.authUsersFile); err != nil {
			return nil, nil, err
		}
		opts = append(opts, smtp.WithAuthenticator(users))
	}
	return opts, users, nil
}

// reloadRoutes replaces the agent's routes table, per-destination limits
// and reply rules with those of the configuration file at every signal on
// s.reload, until ctx ends. A file with errors is logged and changes
// nothing. Only these are reloaded; other settings need a restart.
func reloadRoutes(ctx context.Context, s *settings, agent *delivery.Agent, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reload:
		}
		if s.configFile == "" {
			log.Warn("reload: no configuration file to reload")
			continue
		}
		ns, err := loadConfig(s.configFile)
		if err != nil {
			log.Error("reload failed, routes unchanged", "err", err)
			continue
		}
		// loadConfig checked the rules; the agent checks them again
		// against the limits it runs with, which a reload does not
		// change. All of the file's routes and rules apply, or none.
		if err := agent.CheckRules(ns.limits, ns.replies); err != nil {
			log.Error("reload failed, routes and rules unchanged", "err", err)
			continue
		}
		if err := errors.Join(agent.SetShapingRules(ns.limits...), agent.SetReplyRules(ns.replies...)); err != nil {
			log.Error("reload: rules not applied", "err", err) // not reached: checked above
		}
		agent.SetRoutes(ns.routes)
		log.Info("routes and rules reloaded", "file", s.configFile)
	}
}
