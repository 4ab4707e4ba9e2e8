package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"
)

// certificate holds the current certificate of STARTTLS and implicit TLS,
// swapped by ReloadCertificate while connections use the old one.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func (c *certificate) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("smtp: certificate: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// newTLSConfig returns the server's TLS settings, or nil without a
// certificate.
func newTLSConfig(cfg *config, cert *certificate) *tls.Config {
	var tc *tls.Config
	switch {
	case cfg.tlsConfig != nil:
		tc = cfg.tlsConfig.Clone()
	case cert != nil:
		tc = &tls.Config{}
	default:
		return nil
	}
	if cert != nil {
		tc.Certificates = nil
		tc.GetCertificate = cert.get
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	return tc
}

// ReloadCertificate reads the certificate and key files of
// [WithCertificate] again; new TLS handshakes use them, and connections
// already encrypted keep the old ones. On error the old certificate stays
// in use. The binary calls it on SIGHUP.
func (s *Server) ReloadCertificate() error {
	if s.cert == nil {
		return errors.New("smtp: reload certificate: no certificate files configured")
	}
	if err := s.cert.load(); err != nil {
		return err
	}
	s.log.Info("certificate reloaded", "cert", s.cert.certFile)
	return nil
}
