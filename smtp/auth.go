package smtp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"
)

// Authenticator checks the credentials of an AUTH command. It returns nil
// if they are good, an error wrapping [ErrBadCredentials] if they are not
// (535 5.7.8), and any other error if it could not tell (454 4.7.0, the
// client tries again later). The password must never be logged.
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) error
}

// ErrBadCredentials is wrapped by an [Authenticator]'s error when the
// username or the password is wrong.
var ErrBadCredentials = errors.New("smtp: bad credentials")

// PasswordFile is an [Authenticator] reading "username:bcrypt-hash" lines
// from a file (blank lines and lines starting with # are ignored), such as
// "alice:$2a$10$..." made with htpasswd -B or Go's x/crypto/bcrypt.
// Reload rereads it; a bad file keeps the users loaded before.
type PasswordFile struct {
	path string

	mu    sync.RWMutex // guards users and dummy
	users map[string][]byte
	dummy []byte // a hash of the file's highest cost, compared against for unknown users
}

var _ Authenticator = (*PasswordFile)(nil)

// NewPasswordFile loads the password file at path. Errors name the file
// and the line.
func NewPasswordFile(path string) (*PasswordFile, error) {
	p := &PasswordFile{path: path}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload rereads the file; on error the users loaded before stay.
func (p *PasswordFile) Reload() error {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("smtp: password file: %w", err)
	}
	users, err := parsePasswords(p.path, data)
	if err != nil {
		return err
	}
	// An unknown username must cost as much time as a wrong password, so
	// the dummy hash has the cost of the file's own hashes.
	cost := bcrypt.MinCost
	for _, h := range users {
		c, _ := bcrypt.Cost(h) // checked by parsePasswords
		cost = max(cost, c)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("sluice"), cost)
	if err != nil {
		return fmt.Errorf("smtp: password file: %w", err)
	}
	p.mu.Lock()
	p.users, p.dummy = users, dummy
	p.mu.Unlock()
	return nil
}

func parsePasswords(name string, data []byte) (map[string][]byte, error) {
	users := make(map[string][]byte)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%s:%d: want username:bcrypt-hash", name, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s:%d: user %s: not a bcrypt hash", name, n, user)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("%s:%d: user %s listed twice", name, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return users, nil
}

// Authenticate checks password against the user's bcrypt hash.
func (p *PasswordFile) Authenticate(ctx context.Context, username, password string) error {
	p.mu.RLock()
	hash, ok := p.users[username]
	dummy := p.dummy
	p.mu.RUnlock()
	if !ok {
		bcrypt.CompareHashAndPassword(dummy, []byte(password))
		return ErrBadCredentials
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return ErrBadCredentials
	}
	return nil
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login), which go-sasl does not provide: the
// prompts "Username:" and "Password:", then the check.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // initial response: the username
			l.username = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.step++
		l.username = string(response)
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.check(l.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
