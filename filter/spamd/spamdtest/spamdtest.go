// Package spamdtest provides a loopback server that speaks SpamAssassin's
// spamd protocol (SPAMC/1.5: PING, CHECK, SYMBOLS, REPORT, HEADERS), for
// tests and benchmarks of spamd clients that cannot wait for a real spamd.
//
// Its "rules" are two: a message containing the GTUBE string scores 1000
// (symbol GTUBE), anything else scores 0. Like spamd 4.0.1 it waits for
// more input when a message does not end with a newline (seed 004), and
// [Server.SetHung] makes it accept connections and never answer them
// (seed 000), so clients can be tested against both faults.
package spamdtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GTUBE is the Generic Test for Unsolicited Bulk Email: any message that
// contains it is spam to SpamAssassin (and to this server).
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Server is a spamd-protocol server on 127.0.0.1. Its methods are safe
// for concurrent use.
type Server struct {
	l      net.Listener
	hung   atomic.Bool
	scans  atomic.Int64
	pings  atomic.Int64
	stalls atomic.Int64

	done  chan struct{} // closed by Close: hung connections end
	mu    sync.Mutex    // guards conns
	conns map[net.Conn]bool
	wg    sync.WaitGroup

	closeOnce sync.Once
}

// NewServer starts a Server on 127.0.0.1 at a port the system chooses.
func NewServer() (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("spamdtest: %w", err)
	}
	s := &Server{l: l, conns: make(map[net.Conn]bool), done: make(chan struct{})}
	s.wg.Go(s.accept)
	return s, nil
}

// Addr returns the server's "host:port".
func (s *Server) Addr() string { return s.l.Addr().String() }

// SetHung makes the server, while on, accept connections and never read
// from or answer them; connections accepted while on stay hung until the
// client closes them.
func (s *Server) SetHung(on bool) { s.hung.Store(on) }

// Scans returns how many messages the server has answered (counted just
// before the answer is written, so a client holding an answer sees it).
func (s *Server) Scans() int64 { return s.scans.Load() }

// Pings returns how many PINGs the server has answered.
func (s *Server) Pings() int64 { return s.pings.Load() }

// Stalls returns how many connections the server accepted while hung.
func (s *Server) Stalls() int64 { return s.stalls.Load() }

// Close stops the server, closes every connection and waits for their
// goroutines.
func (s *Server) Close() error {
	err := s.l.Close()
	s.closeOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		})
	}
}

func (s *Server) serve(c net.Conn) {
	if s.hung.Load() {
		s.stalls.Add(1)
		s.hang(c)
		return
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	req, err := readRequest(r)
	if err != nil {
		fmt.Fprintf(c, "SPAMD/1.5 76 Bad header line: %v\r\n", err)
		return
	}
	if req.method == "PING" {
		s.pings.Add(1) // before the answer, so a client that has it sees the count
		io.WriteString(c, "SPAMD/1.5 0 PONG\r\n")
		return
	}
	body := make([]byte, req.length)
	if _, err := io.ReadFull(r, body); err != nil {
		return
	}
	if len(body) > 0 && body[len(body)-1] != '\n' {
		s.hang(c) // spamd 4.0.1 waits here for a line end
		return
	}
	s.scans.Add(1)
	c.Write(answer(req.method, body))
}

// hang reads and ignores what the client sends and answers nothing, even
// after the client half-closes, until the client or the server closes.
func (s *Server) hang(c net.Conn) {
	c.SetDeadline(time.Time{})
	io.Copy(io.Discard, c)
	<-s.done
}

type request struct {
	method string
	length int
}

func readRequest(r *bufio.Reader) (request, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return request{}, err
	}
	method, proto, ok := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	if !ok || !strings.HasPrefix(proto, "SPAMC/") {
		return request{}, fmt.Errorf("request line %q", line)
	}
	req := request{method: method}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return request{}, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return req, nil
		}
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(name, "Content-length") {
			req.length, err = strconv.Atoi(strings.TrimSpace(value))
			if err != nil || req.length < 0 || req.length > 64<<20 {
				return request{}, fmt.Errorf("content-length %q", value)
			}
		}
	}
}

func answer(method string, body []byte) []byte {
	score, symbols := 0.0, ""
	if bytes.Contains(body, []byte(GTUBE)) {
		score, symbols = 1000, "GTUBE"
	}
	spam := "False"
	if score >= 5 {
		spam = "True"
	}
	var content string
	switch method {
	case "SYMBOLS":
		content = symbols
	case "REPORT":
		content = fmt.Sprintf("Content analysis details:   (%.1f points, 5.0 required)\n", score)
	case "HEADERS":
		flag := "No"
		if spam == "True" {
			flag = "Yes"
		}
		content = fmt.Sprintf("X-Spam-Status: %s, score=%.1f required=5.0 tests=%s\r\n\r\n", flag, score, symbols)
	}
	var b bytes.Buffer
	b.WriteString("SPAMD/1.1 0 EX_OK\r\n")
	if method != "CHECK" {
		fmt.Fprintf(&b, "Content-length: %d\r\n", len(content))
	}
	fmt.Fprintf(&b, "Spam: %s ; %.1f / 5.0\r\n\r\n%s", spam, score, content)
	return b.Bytes()
}
