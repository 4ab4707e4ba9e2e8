package delivery

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

// textprotoDot is the reference: net/textproto's DotWriter, which the
// go-smtp client used.
func textprotoDot(t testing.TB, body []byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	w := textproto.NewWriter(bw).DotWriter()
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// bulkDot writes body through dotWriter in chunks of the given sizes
// (cycled; the last size repeats).
func bulkDot(t testing.TB, body []byte, chunks []int) []byte {
	var out bytes.Buffer
	w := newDotWriter(bufio.NewWriterSize(&out, 16))
	for i := 0; len(body) > 0; i++ {
		n := len(body)
		if len(chunks) > 0 {
			n = max(1, min(n, chunks[i%len(chunks)]))
		}
		if m, err := w.Write(body[:n]); err != nil || m != n {
			t.Fatalf("Write of %d bytes: %d, %v", n, m, err)
		}
		body = body[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var dotSeeds = []string{
	"",
	".",
	"\r\n",
	"a\r\n.b\r\n..c\r\n",
	".leading dot\r\nline\r\n.\r\n",
	"no final line end",
	"bare\nlf\n.dot after bare lf\n",
	"bare\rcr\r.x\r",
	"\r\r\n\r\r\r\n.\r\n",
	"ends with cr\r",
	"ends with two crs\r\r",
	"Subject: x\r\n\r\nbody\r\n..\r\n.\r\n",
	"\n\n\n.",
	"\r.\n.\r\n",
}

func TestDotWriter(t *testing.T) {
	for _, s := range dotSeeds {
		want := textprotoDot(t, []byte(s))
		for _, chunks := range [][]int{nil, {1}, {2}, {3, 1}, {7}} {
			if got := bulkDot(t, []byte(s), chunks); !bytes.Equal(got, want) {
				t.Errorf("body %q in chunks %v:\n got %q\nwant %q", s, chunks, got, want)
			}
		}
	}
}

// FuzzDotWriter checks that dotWriter writes exactly what textproto's
// DotWriter writes, however the body is cut into writes.
func FuzzDotWriter(f *testing.F) {
	for i, s := range dotSeeds {
		f.Add([]byte(s), uint8(i), uint8(i*7))
	}
	f.Fuzz(func(t *testing.T, body []byte, c1, c2 uint8) {
		want := textprotoDot(t, body)
		for _, chunks := range [][]int{nil, {int(c1)}, {int(c1), int(c2)}} {
			if got := bulkDot(t, body, chunks); !bytes.Equal(got, want) {
				t.Fatalf("body %q in chunks %v:\n got %q\nwant %q", body, chunks, got, want)
			}
		}
	})
}

// BenchmarkDotWriter compares dotWriter with textproto's DotWriter on a
// 100 KiB body of 78-byte CRLF lines, a few of them starting with a dot,
// written in the 32 KiB pieces of the delivery copy.
func BenchmarkDotWriter(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 100<<10; i++ {
		if i%50 == 0 {
			sb.WriteString(".")
		}
		sb.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	body := []byte(sb.String())
	write := func(b *testing.B, w io.WriteCloser) {
		for p := body; len(p) > 0; {
			n := min(len(p), 32<<10)
			if _, err := w.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	bw := bufio.NewWriterSize(io.Discard, 8<<10)
	b.Run("bulk", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			write(b, newDotWriter(bw))
		}
	})
	b.Run("textproto", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			write(b, textproto.NewWriter(bw).DotWriter())
		}
	})
}
