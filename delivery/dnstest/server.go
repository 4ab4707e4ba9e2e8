package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server is an authoritative DNS server on 127.0.0.1 serving UDP and TCP
// on one port. All methods are safe for concurrent use; the records can be
// changed while it serves.
type Server struct {
	udp, tcp *dns.Server
	addr     string
	closing  chan struct{}  // closed by Close: releases hung queries
	wg       sync.WaitGroup // the two serve goroutines

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex // guards the fields below
	records map[rrKey][]dns.RR
	rcodes  map[string]int // name -> forced RCODE
	hung    map[string]bool
	queries int
}

type rrKey struct {
	name  string // lower-case, fully qualified
	qtype uint16
}

// NewServer starts a server answering with records, each a zone-file line
// such as "example.com. 300 IN MX 10 mx.example.com.".
func NewServer(records ...string) (*Server, error) {
	s := &Server{
		closing: make(chan struct{}),
		records: make(map[rrKey][]dns.RR),
		rcodes:  make(map[string]int),
		hung:    make(map[string]bool),
	}
	if err := s.Add(records...); err != nil {
		return nil, err
	}
	pc, l, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve)}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			errc <- srv.ActivateAndServe()
		}()
		select {
		case <-started:
		case err := <-errc:
			s.Close()
			return nil, fmt.Errorf("dnstest: serve: %w", err)
		}
	}
	return s, nil
}

// listenPair opens UDP and TCP sockets on the same 127.0.0.1 port, trying
// a few ports in case the TCP port is taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("dnstest: listen udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("dnstest: listen tcp: %w", lastErr)
}

// Addr returns the server's address, "127.0.0.1:PORT", for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Add adds records, each a zone-file line.
func (s *Server) Add(records ...string) error {
	rrs := make([]dns.RR, 0, len(records))
	for _, line := range records {
		rr, err := dns.NewRR(line)
		if err != nil {
			return fmt.Errorf("dnstest: record %q: %w", line, err)
		}
		if rr == nil {
			return fmt.Errorf("dnstest: record %q: empty", line)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		h := rr.Header()
		k := rrKey{canonical(h.Name), h.Rrtype}
		s.records[k] = append(s.records[k], rr)
	}
	return nil
}

// Remove deletes the records of name with type qtype (dns.TypeMX, ...);
// dns.TypeANY removes all records of name.
func (s *Server) Remove(name string, qtype uint16) {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.records {
		if k.name == name && (qtype == dns.TypeANY || k.qtype == qtype) {
			delete(s.records, k)
		}
	}
}

// SetRcode makes every query for name fail with rcode (such as
// dns.RcodeServerFailure or dns.RcodeNameError). dns.RcodeSuccess clears it.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, canonical(name))
		return
	}
	s.rcodes[canonical(name)] = rcode
}

// Hang makes the server never answer queries for name, so that clients'
// deadlines can be tested.
func (s *Server) Hang(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hung[canonical(name)] = true
}

// Queries returns the number of queries received so far.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Close stops the server, releases hung queries and waits for its
// goroutines. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if srv == nil {
				continue
			}
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("dnstest: close: %w", err)
		}
	})
	return s.closeErr
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp, hang := s.answer(req)
	if hang {
		<-s.closing
		return
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// answer builds the reply to req, or reports that it must not be answered.
func (s *Server) answer(req *dns.Msg) (*dns.Msg, bool) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp, false
	}
	q := req.Question[0]
	name := canonical(q.Name)
	if s.hung[name] {
		return nil, true
	}
	if rc, ok := s.rcodes[name]; ok {
		resp.Rcode = rc
		return resp, false
	}
	exists := false
	for k, rrs := range s.records {
		if k.name != name {
			continue
		}
		exists = true
		if k.qtype == q.Qtype || q.Qtype == dns.TypeANY {
			for _, rr := range rrs {
				resp.Answer = append(resp.Answer, dns.Copy(rr))
			}
		}
	}
	if !exists {
		resp.Rcode = dns.RcodeNameError
	}
	if len(resp.Answer) == 0 {
		if soa := s.soaLocked(name); soa != nil {
			resp.Ns = append(resp.Ns, dns.Copy(soa))
		}
	}
	return resp, false
}

// soaLocked returns the SOA record owned by name or by its closest
// ancestor that has one, for the authority section of a negative answer
// (RFC 2308 section 3).
func (s *Server) soaLocked(name string) dns.RR {
	for n := name; ; {
		if rrs := s.records[rrKey{n, dns.TypeSOA}]; len(rrs) > 0 {
			return rrs[0]
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return nil
		}
		n = n[i+1:]
	}
}

func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }
