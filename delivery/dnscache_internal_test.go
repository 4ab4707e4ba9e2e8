package delivery

import (
	"fmt"
	"testing"
	"time"
)

func TestDNSCacheBoundedLRU(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newDNSCache(3, func() time.Time { return now })
	key := func(i int) cacheKey { return cacheKey{fmt.Sprintf("d%d.test.", i), 1} }
	for i := range 3 {
		c.put(key(i), cacheEntry{}, time.Minute)
	}
	c.get(key(0)) // most recently used now
	c.put(key(3), cacheEntry{}, time.Minute)
	if got := c.len(); got != 3 {
		t.Fatalf("len = %d, want 3", got)
	}
	for i, want := range []bool{true, false, true, true} {
		if _, ok := c.get(key(i)); ok != want {
			t.Errorf("entry %d cached = %v, want %v (least recently used evicted)", i, ok, want)
		}
	}
	c.put(key(9), cacheEntry{}, 0)
	if _, ok := c.get(key(9)); ok {
		t.Error("an answer with TTL 0 was cached")
	}
	now = now.Add(time.Minute)
	if _, ok := c.get(key(0)); ok {
		t.Error("an entry was served at its expiry time")
	}
}
