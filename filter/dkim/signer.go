package dkim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sluicemta/sluice/filter"
)

// HeaderName is the name of the header field a [Signer] adds.
const HeaderName = "DKIM-Signature"

// maxHeaderBytes bounds the message header a Signer reads into memory.
const maxHeaderBytes = 1 << 20

// errNoHeaderEnd means the message has no empty line ending its header.
var errNoHeaderEnd = errors.New("dkim: message header has no end")

// Signer is a [filter.Filter] that signs messages with DKIM (RFC 6376) for
// the domain of their From address. It runs at the end of DATA and returns
// the DKIM-Signature fields as headers of an accepting verdict; it never
// rejects. A Signer is safe for concurrent use.
type Signer struct {
	keys map[string][]Key // by lower-case domain, without a trailing dot
	cfg  config
}

var _ filter.Filter = (*Signer)(nil)

// New returns a Signer with keys. A domain may have several keys (an RSA
// and an Ed25519 one, as RFC 8463 section 4 suggests while verifiers learn
// Ed25519): a message is then signed with each. It fails on an invalid or
// duplicate key (same domain and selector) and on invalid options.
func New(keys []Key, opts ...Option) (*Signer, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("dkim: no keys")
	}
	s := &Signer{keys: make(map[string][]Key), cfg: cfg}
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return nil, err
		}
		d := normDomain(k.Domain)
		for _, o := range s.keys[d] {
			if strings.EqualFold(o.Selector, k.Selector) {
				return nil, fmt.Errorf("dkim: two keys for %s with selector %s", k.Domain, k.Selector)
			}
		}
		s.keys[d] = append(s.keys[d], k)
	}
	return s, nil
}

// Check signs m when the [WithSignIf] predicate accepts its envelope and
// its From domain has a key; it returns the DKIM-Signature fields as
// headers of an accepting verdict, or an empty verdict. An error (a
// message it cannot read, a cancelled ctx) means the message is not
// signed; the chain's failure policy says what then happens to it.
func (s *Signer) Check(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if m.Body == nil || !s.cfg.signIf(m.Envelope) {
		return filter.Verdict{}, nil
	}
	hdrs, err := s.Sign(ctx, m.Reader())
	if err != nil {
		return filter.Verdict{}, err
	}
	return filter.Verdict{Headers: hdrs}, nil
}

// Sign reads a message (header and body, CRLF line endings) from r and
// returns its DKIM-Signature fields, one per key of the domain of its From
// address, ready to prepend; none if that domain (or a parent domain) has
// no key or the message has no From. Sign does not apply the WithSignIf
// predicate: it is for callers that decide themselves.
func (s *Signer) Sign(ctx context.Context, r io.Reader) ([]filter.Header, error) {
	br := bufio.NewReader(r)
	raw, err := readHeader(br)
	if errors.Is(err, errNoHeaderEnd) {
		s.cfg.logger.LogAttrs(ctx, slog.LevelDebug, "message not signed: header without end")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		s.cfg.logger.LogAttrs(ctx, slog.LevelDebug, "message not signed: bad header", slog.Any("error", err))
		return nil, nil
	}
	keys := s.keysFor(ctx, mail.Header{Header: message.Header{Header: h}})
	if len(keys) == 0 {
		return nil, nil
	}
	return s.sign(ctx, keys, s.fields(h), raw, br)
}

// keysFor returns the keys for the domain of the first From address that
// has any, trying each address's domain and then its parent domains (a
// key for example.com signs for news.example.com: DMARC's relaxed
// alignment, RFC 7489 section 3.1.1, accepts it).
func (s *Signer) keysFor(ctx context.Context, h mail.Header) []Key {
	from, err := h.AddressList("From")
	if err != nil || len(from) == 0 {
		s.cfg.logger.LogAttrs(ctx, slog.LevelDebug, "message not signed: no From address", slog.Any("error", err))
		return nil
	}
	for _, a := range from {
		_, domain, ok := strings.Cut(a.Address, "@")
		if !ok {
			continue
		}
		for d := normDomain(domain); strings.Contains(d, "."); d = d[strings.IndexByte(d, '.')+1:] {
			if keys := s.keys[d]; len(keys) > 0 {
				return keys
			}
		}
	}
	s.cfg.logger.LogAttrs(ctx, slog.LevelDebug, "message not signed: no key for the From domain",
		slog.String("from", from[0].Address))
	return nil
}

// fields returns the h= list for a header: each configured field as many
// times as the header has it, the oversigned ones once more.
func (s *Signer) fields(h textproto.Header) []string {
	var names []string
	seen := make(map[string]bool)
	add := func(name string, extra bool) {
		key := strings.ToLower(name)
		if seen[key] {
			return
		}
		seen[key] = true
		n := len(h.Values(name))
		if extra {
			n++
		}
		for range n {
			names = append(names, name)
		}
	}
	for _, name := range s.cfg.headers {
		add(name, containsFold(s.cfg.oversigned, name))
	}
	for _, name := range s.cfg.oversigned {
		add(name, true)
	}
	return names
}

// sign feeds the message to one go-msgauth signer per key and returns
// their signatures as unfolded header fields.
func (s *Signer) sign(ctx context.Context, keys []Key, fields []string, header []byte, body io.Reader) ([]filter.Header, error) {
	now := time.Now()
	signers := make([]*msgauth.Signer, 0, len(keys))
	defer func() {
		for _, sg := range signers {
			sg.Close() // a no-op after a successful Close; else stops its goroutine
		}
	}()
	writers := make([]io.Writer, 0, len(keys))
	for _, k := range keys {
		opts := &msgauth.SignOptions{
			Domain:                 strings.TrimSuffix(k.Domain, "."), // d= has no root dot (RFC 6376 section 3.5)
			Selector:               k.Selector,
			Signer:                 k.Signer,
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
			BodyCanonicalization:   msgauth.Canonicalization(s.cfg.bodyCanon),
			HeaderKeys:             fields,
		}
		if s.cfg.expiration > 0 {
			opts.Expiration = now.Add(s.cfg.expiration)
		}
		sg, err := msgauth.NewSigner(opts)
		if err != nil {
			return nil, fmt.Errorf("dkim: sign for %s: %w", k.Domain, err)
		}
		signers = append(signers, sg)
		writers = append(writers, sg)
	}
	w := io.MultiWriter(writers...)
	if _, err := w.Write(header); err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	if _, err := io.Copy(w, ctxReader{ctx, body}); err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	hdrs := make([]filter.Header, 0, len(keys))
	for i, sg := range signers {
		if err := sg.Close(); err != nil {
			return nil, fmt.Errorf("dkim: sign for %s: %w", keys[i].Domain, err)
		}
		hdrs = append(hdrs, filter.Header{Name: HeaderName, Value: unfold(sg.Signature())})
	}
	return hdrs, nil
}

// readHeader returns the header of a message, the empty line that ends it
// included (added when the message is header fields only), leaving r at
// the start of the body.
func readHeader(r *bufio.Reader) ([]byte, error) {
	var raw []byte
	lineStart := true
	for {
		chunk, err := r.ReadSlice('\n')
		end := lineStart && (string(chunk) == "\r\n" || string(chunk) == "\n")
		raw = append(raw, chunk...)
		switch {
		case end:
			return raw, nil
		case len(raw) > maxHeaderBytes:
			return nil, fmt.Errorf("dkim: message header longer than %d bytes", maxHeaderBytes)
		case errors.Is(err, bufio.ErrBufferFull):
			lineStart = false
			continue
		case errors.Is(err, io.EOF) && len(raw) > 0 && raw[len(raw)-1] == '\n':
			// A message of header fields only (RFC 5322 section 3.5:
			// the body, and the empty line before it, are optional): its
			// body is empty, which is what it is signed with.
			return append(raw, "\r\n"...), nil
		case errors.Is(err, io.EOF):
			return nil, errNoHeaderEnd
		case err != nil:
			return nil, fmt.Errorf("dkim: read message: %w", err)
		}
		lineStart = true
	}
}

// unfold turns the "DKIM-Signature: ..." field go-msgauth formats into its
// value on one line. Whitespace in tag values is insignificant (RFC 6376
// section 3.2), and the relaxed header canonicalization the signature
// was computed under ignores how it is folded.
func unfold(field string) string {
	_, v, _ := strings.Cut(field, ":")
	return strings.Join(strings.Fields(v), " ")
}

func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
