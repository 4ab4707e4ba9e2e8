package dkim_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/filter/dkim"
)

// dkimpyVerify is run by Debian's python3 with dkimpy (python3-dkim, and
// python3-nacl for Ed25519): it verifies every DKIM-Signature of the
// message on stdin, with the key records given as name=record arguments
// in place of DNS, and prints one line per signature.
const dkimpyVerify = `
import sys, dkim
records = {}
for arg in sys.argv[1:]:
    name, txt = arg.split("=", 1)
    records[name.lower().rstrip(".")] = txt.encode()
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = sum(1 for k, v in d.headers if k.lower() == b"dkim-signature")
ok = n > 0
for i in range(n):
    good = d.verify(idx=i, dnsfunc=dnsfunc)
    print("signature", i, "pass" if good else "fail")
    ok = ok and good
sys.exit(0 if ok else 1)
`

// python returns a python3 that can import dkim and nacl, or skips the
// test (fails it under SLUICE_INTEROP=1, where scripts/test has installed
// them).
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import dkim, nacl").Run() == nil {
			return path
		}
	}
	if os.Getenv("SLUICE_INTEROP") != "" {
		t.Fatal("python3 with dkimpy and pynacl not found (Debian: python3-dkim python3-nacl)")
	}
	t.Skip("python3 with dkimpy and pynacl not found (Debian: python3-dkim python3-nacl)")
	return ""
}

// TestDkimpyVerifies checks the signatures of a message queued by sluice's
// acceptor with dkimpy, a verifier written apart from go-msgauth, and
// that dkimpy finds a changed body.
func TestDkimpyVerifies(t *testing.T) {
	py := python(t)
	rsaK, edK := writeKeys(t, "example.com")
	var args []string
	for _, k := range []dkim.Key{rsaK, edK} {
		rec, err := k.Record()
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, k.RecordName()+"="+rec)
	}
	stored := throughAcceptor(t, rsaK, edK)
	run := func(msg string) (string, error) {
		cmd := exec.Command(py, append([]string{"-c", dkimpyVerify}, args...)...)
		cmd.Stdin = strings.NewReader(msg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	out, err := run(stored)
	if err != nil || strings.Count(out, " pass") != 2 {
		t.Fatalf("dkimpy on the stored message: %v\n%s\nmessage:\n%s", err, out, stored)
	}
	out, err = run(strings.Replace(stored, "figures are attached", "figures are wrong", 1))
	if err == nil || strings.Contains(out, " pass") {
		t.Fatalf("dkimpy accepts a changed body: %s", out)
	}
}
