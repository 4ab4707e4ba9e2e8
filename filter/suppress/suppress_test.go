package suppress_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
	"github.com/sluicemta/sluice/filter/suppress"
)

const lists = `# account      list         address
example.org     bounce       Bob@Example.com
newsletter      unsubscribe  carol@example.net
*               bounce       spamtrap@example.net
`

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func openLists(t *testing.T, text string, opts ...suppress.FileOption) (*suppress.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "suppress.txt")
	writeFile(t, path, text)
	f, err := suppress.OpenFile(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f, path
}

func envelope(from, auth string, to ...string) *sluice.Envelope {
	env := &sluice.Envelope{From: from, Client: sluice.ClientInfo{AuthUser: auth}}
	for _, a := range to {
		env.Recipients = append(env.Recipients, sluice.Recipient{Address: a})
	}
	return env
}

func TestAccount(t *testing.T) {
	tests := []struct {
		env  *sluice.Envelope
		want string
	}{
		{envelope("a@Example.ORG", ""), "example.org"},
		{envelope("a@example.org", "NewsLetter"), "newsletter"},
		{envelope("", ""), ""},
	}
	for _, tt := range tests {
		if got := filter.Account(tt.env); got != tt.want {
			t.Errorf("Account(%s, %q) = %q, want %q", tt.env.From, tt.env.Client.AuthUser, got, tt.want)
		}
	}
}

func TestCheckByStage(t *testing.T) {
	store, _ := openLists(t, lists)
	f, err := suppress.New(store)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := filter.New(
		filter.WithFilter("rcpt", f, filter.AtStage(filter.StageRcpt)),
		filter.WithFilter("data", f),
		filter.WithFilter("post", f, filter.AtStage(filter.StagePostQueue)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run := func(st filter.Stage, env *sluice.Envelope) filter.Verdict {
		return chain.RunStage(ctx, st, &filter.Message{Envelope: env})
	}
	tests := []struct {
		name   string
		stage  filter.Stage
		env    *sluice.Envelope
		action filter.Action
		reply  string   // substring of the reply, if refused
		rcpts  []string // post-queue: the refused recipients
	}{
		{"rcpt on the sender domain's bounce list", filter.StageRcpt, envelope("a@example.org", "", "bob@example.com"), filter.Reject, "550 5.7.1 bob@example.com is on the bounce list", nil},
		{"rcpt checks only the last recipient", filter.StageRcpt, envelope("a@example.org", "", "bob@example.com", "x@example.com"), filter.Accept, "", nil},
		{"another account's list does not apply", filter.StageRcpt, envelope("a@other.org", "", "bob@example.com"), filter.Accept, "", nil},
		{"authenticated user is the account", filter.StageRcpt, envelope("a@other.org", "newsletter", "carol@example.net"), filter.Reject, "unsubscribe list", nil},
		{"domain is not the account when authenticated", filter.StageRcpt, envelope("a@example.org", "newsletter", "bob@example.com"), filter.Accept, "", nil},
		{"global entry", filter.StageRcpt, envelope("a@other.org", "", "spamtrap@example.net"), filter.Reject, "bounce list", nil},
		{"null sender is never refused", filter.StageRcpt, envelope("", "", "spamtrap@example.net"), filter.Accept, "", nil},
		{"data with one good recipient accepts", filter.StageData, envelope("a@example.org", "", "bob@example.com", "x@example.com"), filter.Accept, "", nil},
		{"data with all suppressed rejects", filter.StageData, envelope("a@example.org", "", "bob@example.com", "spamtrap@example.net"), filter.Reject, "bob@example.com", nil},
		{"post-queue refuses per recipient", filter.StagePostQueue, envelope("a@example.org", "", "x@example.com", "BOB@example.com", "spamtrap@example.net"),
			filter.Accept, "", []string{"BOB@example.com", "spamtrap@example.net"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := run(tt.stage, tt.env)
			if v.Action != tt.action {
				t.Fatalf("Action = %v, want %v (%+v)", v.Action, tt.action, v)
			}
			if tt.reply != "" && !strings.Contains(v.Reply.Error(), tt.reply) {
				t.Errorf("Reply = %q, want one containing %q", v.Reply, tt.reply)
			}
			var got []string
			for _, r := range v.Recipients {
				if r.Action != filter.Reject || r.Reply.Code != 550 {
					t.Errorf("recipient verdict %+v, want a 550 reject", r)
				}
				got = append(got, r.Address)
			}
			if strings.Join(got, ",") != strings.Join(tt.rcpts, ",") {
				t.Errorf("refused recipients %v, want %v", got, tt.rcpts)
			}
		})
	}
}

func TestFileErrorsNameTheLine(t *testing.T) {
	tests := []struct{ text, want string }{
		{"example.org bounce\n", ":1: want \"account list address\", got 2 fields"},
		{"# ok\n\nexample.org spam bob@example.com\n", ":3: unknown list \"spam\""},
		{"example.org bounce bob\n", ":1: \"bob\" is not an address"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "s.txt")
		writeFile(t, path, tt.text)
		_, err := suppress.OpenFile(path)
		if err == nil || !strings.Contains(err.Error(), path+tt.want) {
			t.Errorf("OpenFile(%q) error = %v, want one containing %q", tt.text, err, path+tt.want)
		}
	}
	if _, err := suppress.OpenFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("OpenFile of a missing file succeeded")
	}
}

// TestFileReloads: a change is seen after the check interval; a broken
// file keeps the old lists and reports the error; Reload reads at once.
func TestFileReloads(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(time.Minute); mu.Unlock() }
	store, path := openLists(t, lists, suppress.WithCheckInterval(time.Second), suppress.WithClock(clock))
	ctx := context.Background()
	on := func(account, addr string) bool {
		_, ok, err := store.Lookup(ctx, account, addr)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	writeFile(t, path, lists+"example.org unsubscribe dave@example.com\n")
	if on("example.org", "dave@example.com") {
		t.Fatal("change seen before the check interval")
	}
	advance()
	if !on("example.org", "dave@example.com") {
		t.Fatal("change not seen after the check interval")
	}
	writeFile(t, path, "broken line\n")
	advance()
	if !on("example.org", "dave@example.com") || store.Err() == nil {
		t.Fatalf("broken file: old lists lost or no error (Err = %v)", store.Err())
	}
	writeFile(t, path, "example.org bounce eve@example.com\n")
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if on("example.org", "dave@example.com") || !on("example.org", "eve@example.com") || store.Err() != nil {
		t.Error("Reload did not replace the lists")
	}
}

// FuzzFile: a suppression file either loads, and then every entry line is
// found by Lookup on its list, or fails with an error naming the file.
func FuzzFile(f *testing.F) {
	f.Add(lists)
	f.Add("a bounce b@c\n#x\n\n")
	f.Add("a spam b@c\n")
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(t.TempDir(), "s.txt")
		writeFile(t, path, text)
		store, err := suppress.OpenFile(path, suppress.WithCheckInterval(0))
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		want := make(map[string]suppress.List) // the last line for a key wins
		for _, line := range strings.Split(text, "\n") {
			line, _, _ = strings.Cut(line, "#")
			if fs := strings.Fields(line); len(fs) == 3 {
				want[strings.ToLower(fs[0])+" "+strings.ToLower(fs[2])] = suppress.List(strings.ToLower(fs[1]))
			}
		}
		for k, l := range want {
			account, addr, _ := strings.Cut(k, " ")
			got, ok, err := store.Lookup(context.Background(), account, addr)
			if err != nil || !ok || got != l {
				t.Errorf("Lookup(%q, %q) = %v %v %v, want %v", account, addr, got, ok, err, l)
			}
		}
	})
}
