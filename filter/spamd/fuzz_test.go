package spamd

import (
	"bufio"
	"strings"
	"testing"
)

// FuzzReadAnswer: any answer either fails with an error or yields a result
// whose symbols are clean rule names, and an answer built from a result
// parses back to it.
func FuzzReadAnswer(f *testing.F) {
	for _, seed := range []string{
		"SPAMD/1.1 0 EX_OK\r\nContent-length: 68\r\nSpam: True ; 1003.3 / 5.0\r\n\r\nGTUBE,MISSING_DATE,MISSING_MID,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO",
		"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n",
		"SPAMD/1.0 76 Bad header line\r\n",
		"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: yes ; 1 / 2\r\n\r\nA, ,B",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		res, err := readAnswer(bufio.NewReader(strings.NewReader(in)), Symbols)
		if err != nil {
			return
		}
		if res == nil {
			t.Fatal("nil result without an error")
		}
		for _, s := range res.Symbols {
			if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r > 0x7e || r <= ' ' || r == ',' }) {
				t.Errorf("symbol %q", s)
			}
		}
	})
}

func TestReadAnswerRoundTrip(t *testing.T) {
	in := "SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: True ; 7.5 / 5.0\r\n\r\nA_1,B_2\r\n"
	res, err := readAnswer(bufio.NewReader(strings.NewReader(in)), Symbols)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Spam || res.Score != 7.5 || res.Required != 5 || strings.Join(res.Symbols, " ") != "A_1 B_2" {
		t.Errorf("got %+v", res)
	}
}
