package procnet

import (
	"net"
	"os"
	"testing"
)

func TestListeningPort(t *testing.T) {
	if got := ListeningPort(os.Getpid()); got != 0 {
		t.Fatalf("before listening: port %d, want 0", got)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, want := ListeningPort(os.Getpid()), l.Addr().(*net.TCPAddr).Port; got != want {
		t.Errorf("ListeningPort = %d, want %d", got, want)
	}
}
