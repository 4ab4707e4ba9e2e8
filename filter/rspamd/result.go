package rspamd

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicemta/sluice"
	"github.com/sluicemta/sluice/filter"
)

// The actions of rspamd (its "action" field).
const (
	ActionReject         = "reject"
	ActionSoftReject     = "soft reject"
	ActionGreylist       = "greylist"
	ActionRewriteSubject = "rewrite subject"
	ActionAddHeader      = "add header"
	ActionNoAction       = "no action"
)

// Result is rspamd's answer about one message.
type Result struct {
	Skipped     bool            // rspamd stopped early (GTUBE, settings, size); Action still applies
	Action      string          // one of the Action constants
	Score       float64         // the message's score
	Required    float64         // the score of the reject action, 0 if rspamd sent none
	Symbols     []string        // the symbols that hit, sorted
	SMTPMessage string          // the reply text rspamd suggests, if any
	Headers     []filter.Header // milter.add_headers, sorted by name
}

// answer is the JSON of /checkv2.
type answer struct {
	IsSkipped     bool                       `json:"is_skipped"`
	Score         float64                    `json:"score"`
	RequiredScore *float64                   `json:"required_score"`
	Action        string                     `json:"action"`
	Symbols       map[string]json.RawMessage `json:"symbols"`
	Messages      map[string]json.RawMessage `json:"messages"`
	Milter        *struct {
		AddHeaders map[string]json.RawMessage `json:"add_headers"`
	} `json:"milter"`
}

func parseResult(body []byte) (*Result, error) {
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("answer is not rspamd's JSON: %w", err)
	}
	if a.Action == "" {
		return nil, fmt.Errorf("answer has no action: %.200s", body)
	}
	res := &Result{Skipped: a.IsSkipped, Action: a.Action, Score: a.Score}
	if a.RequiredScore != nil {
		res.Required = *a.RequiredScore
	}
	for name := range a.Symbols {
		res.Symbols = append(res.Symbols, name)
	}
	sort.Strings(res.Symbols)
	if raw, ok := a.Messages["smtp_message"]; ok {
		_ = json.Unmarshal(raw, &res.SMTPMessage) // not a string: ignored
	}
	if a.Milter != nil {
		h, err := addHeaders(a.Milter.AddHeaders)
		if err != nil {
			return nil, err
		}
		res.Headers = h
	}
	return res, nil
}

// addHeaders decodes milter.add_headers, whose values are a string, an
// object {"value": ..., "order": ...} or an array of such objects.
func addHeaders(m map[string]json.RawMessage) ([]filter.Header, error) {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	var hs []filter.Header
	for _, name := range names {
		values, err := headerValues(m[name])
		if err != nil {
			return nil, fmt.Errorf("milter.add_headers %q: %w", name, err)
		}
		for _, v := range values {
			hs = append(hs, filter.Header{Name: name, Value: v})
		}
	}
	return hs, nil
}

func headerValues(raw json.RawMessage) ([]string, error) {
	type object struct {
		Value string `json:"value"`
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, nil
	}
	var o object
	if err := json.Unmarshal(raw, &o); err == nil {
		return []string{o.Value}, nil
	}
	var list []object
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("value %.100s: not a string, object or array", raw)
	}
	out := make([]string, len(list))
	for i, o := range list {
		out[i] = o.Value
	}
	return out, nil
}

// verdict maps rspamd's action to a verdict.
func verdict(res *Result) (filter.Verdict, error) {
	v := filter.Verdict{Headers: []filter.Header{
		{Name: "X-Spam-Action", Value: res.Action},
		{Name: "X-Spam-Score", Value: strconv.FormatFloat(res.Score, 'f', 2, 64)},
	}}
	switch res.Action {
	case ActionReject:
		v.Action = filter.Reject
		v.Reply = sluice.NewReply(550, sluice.EnhancedCode{5, 7, 1}, "%s", replyText(res.SMTPMessage, "message rejected as spam"))
	case ActionSoftReject:
		v.Action = filter.Tempfail
		v.Reply = sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "%s", replyText(res.SMTPMessage, "message deferred, try again later"))
	case ActionGreylist:
		v.Action = filter.Tempfail
		v.Reply = sluice.NewReply(451, sluice.EnhancedCode{4, 7, 1}, "%s", replyText(res.SMTPMessage, "greylisted, try again later"))
	case ActionAddHeader, ActionRewriteSubject:
		if !hasHeader(res.Headers, "X-Spam") {
			v.Headers = append(v.Headers, filter.Header{Name: "X-Spam", Value: "Yes"})
		}
	case ActionNoAction:
	default:
		return filter.Verdict{}, fmt.Errorf("rspamd: unknown action %q", res.Action)
	}
	v.Headers = append(v.Headers, res.Headers...)
	return v, nil
}

// replyText makes rspamd's message safe for one SMTP reply line.
func replyText(s, fallback string) string {
	s = strings.Join(strings.Fields(s), " ")
	clean := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	if clean == "" {
		return fallback
	}
	if len(clean) > 400 {
		clean = clean[:400]
	}
	return clean
}

func hasHeader(hs []filter.Header, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}
