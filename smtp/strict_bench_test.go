package smtp

import (
	"bytes"
	"io"
	"testing"
)

// noYield is a yielder for sources that never wait, such as a
// bytes.Reader: it lets strictReader read them in chunks.
type noYield struct{}

func (noYield) setYield(yieldMode) {}

// BenchmarkStrictReader measures strictReader's own cost per message of
// 100 KiB of 78-octet lines, read as the queue reads a body (64 KiB at a
// time). It is paid for every octet a client sends. "chunks" is the path
// of DATA on a server connection (with its yielder), "bytes" the path
// without one, "normalize" the path with normalize_line_endings.
func BenchmarkStrictReader(b *testing.B) {
	line := append(bytes.Repeat([]byte("x"), 76), '\r', '\n')
	msg := append([]byte("Subject: bench\r\n\r\n"), bytes.Repeat(line, 100<<10/len(line))...)
	buf := make([]byte, 64<<10)
	for _, name := range []string{"chunks", "bytes", "normalize"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				var r *strictReader
				switch name {
				case "chunks":
					r = newStrictReader(bytes.NewReader(msg), noYield{}, 998, 50, false)
				default:
					r = newStrictReader(&pieces{msg, 1}, nil, 998, 50, name == "normalize")
				}
				n := 0
				for {
					k, err := r.Read(buf)
					n += k
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if n != len(msg) {
					b.Fatalf("read %d octets, want %d", n, len(msg))
				}
			}
		})
	}
}
