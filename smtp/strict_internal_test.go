package smtp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// pieces hands out its data in reads of at most n octets; with n = 1 as
// go-smtp's data reader does for the one-byte reads of strictReader.
type pieces struct {
	data []byte
	n    int
}

func (p *pieces) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	k := copy(b[:min(len(b), p.n)], p.data)
	p.data = p.data[k:]
	return k, nil
}

// readAllStrict reads r to the end and returns what it handed out and
// its error other than EOF.
func readAllStrict(r *strictReader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for range 1 << 20 {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	panic("strictReader never ended")
}

// FuzzStrictReaderChunks checks that reading in chunks, which checks the
// body a CR at a time, decides every input as reading byte by byte does:
// the same refusal, or the same data.
func FuzzStrictReaderChunks(f *testing.F) {
	for _, s := range []string{
		"Subject: hi\r\n\r\nhello\r\n",
		"Received: a\r\nReceived: b\r\nreceived: c\r\n\r\nbody\r\n",
		"Subject: hi\r\n\r\nhello\nworld\r\n",
		"Subject: hi\r\n\r\nhello\rworld\r\n",
		"Subject: hi\r\n\r\n" + string(bytes.Repeat([]byte("x"), 40)) + "\n\r\n",
		"Subject: hi\r\n\r\nend\r",
		"\r\n\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		const maxLine, maxHops = 32, 2
		want, wantErr := readAllStrict(newStrictReader(&pieces{data, 1}, nil, maxLine, maxHops, false))
		got, gotErr := readAllStrict(newStrictReader(&pieces{data, int(n%64) + 1}, noYield{}, maxLine, maxHops, false))
		var wantC, gotC *contentError
		errors.As(wantErr, &wantC)
		errors.As(gotErr, &gotC)
		switch {
		case (wantC == nil) != (gotC == nil) || wantC != nil && (wantC.Error() != gotC.Error() || wantC.closes != gotC.closes):
			t.Fatalf("chunks: %v; bytes: %v", gotErr, wantErr)
		case wantErr == nil && !bytes.Equal(got, want):
			t.Fatalf("chunks handed out %q, bytes %q", got, want)
		}
	})
}
