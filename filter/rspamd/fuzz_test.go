package rspamd

import (
	"testing"

	"github.com/sluicemta/sluice/filter"
)

// FuzzParseResult: any answer either fails with an error or maps to a
// verdict that matches rspamd's action, with a reply of the right class.
func FuzzParseResult(f *testing.F) {
	for _, seed := range []string{
		`{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header","symbols":{"A":{"name":"A","score":1}},"milter":{"add_headers":{"X":{"value":"v","order":0},"Y":"w","Z":[{"value":"z"}]}}}`,
		`{"is_skipped":true,"score":0.0,"required_score":null,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0}},"messages":{"smtp_message":"Gtube pattern"}}`,
		`{"action":"soft reject","messages":{"smtp_message":"try later\r\n"}}`,
		`{"action":"greylist"}`,
		`{"action":"no action","score":-1e308}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := parseResult(in)
		if err != nil {
			return
		}
		v, err := verdict(res)
		if err != nil {
			return
		}
		want := map[string]filter.Action{
			ActionReject: filter.Reject, ActionSoftReject: filter.Tempfail, ActionGreylist: filter.Tempfail,
			ActionRewriteSubject: filter.Accept, ActionAddHeader: filter.Accept, ActionNoAction: filter.Accept,
		}[res.Action]
		if v.Action != want {
			t.Errorf("action %q -> %v, want %v", res.Action, v.Action, want)
		}
		switch v.Action {
		case filter.Reject:
			if v.Reply == nil || !v.Reply.Permanent() {
				t.Errorf("reject with reply %v", v.Reply)
			}
		case filter.Tempfail:
			if v.Reply == nil || !v.Reply.Temporary() {
				t.Errorf("tempfail with reply %v", v.Reply)
			}
		}
		if v.Reply != nil {
			for _, r := range v.Reply.Message {
				if r < 0x20 || r > 0x7e {
					t.Errorf("reply %q has a control or non-ASCII character", v.Reply.Message)
				}
			}
		}
	})
}
