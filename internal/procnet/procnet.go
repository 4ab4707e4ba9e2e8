// Package procnet reads, from /proc, the port a process listens on, for
// tests and benchmarks that start servers (Postfix's smtp-sink, a private
// Postfix) which bind a port the kernel chooses but cannot report it. It
// avoids both fixed ports and picking a "free" port by listening and
// closing. Linux only.
package procnet

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ListeningPort returns the port of the IPv4 TCP socket that process pid
// listens on, or 0 if there is none yet. It finds the process's socket
// inodes in /proc/PID/fd and looks them up in /proc/PID/net/tcp, as ss(8)
// does.
func ListeningPort(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	inodes := make(map[string]bool)
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
			return int(port)
		}
	}
	return 0
}
