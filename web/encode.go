package web

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/narrowband/narrowband/internal/metrics"
)

// The encoders below write the records with the JSON names of package
// metrics (the project's stable interface) but by hand, for two reasons:
// PublishStep runs on the training goroutine, so it must be cheap and not go
// through reflection; and encoding/json refuses NaN and ±Inf, which a
// diverging run really produces. A non-finite number is written as the
// string "NaN", "Infinity" or "-Infinity", which JavaScript's Number()
// turns back into the number.

func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Peer-supplied text (candidate
// types, addresses) reaches it, so invalid UTF-8 becomes U+FFFD and control
// characters are escaped; the output is always valid JSON. <, > and & are
// escaped too, so the text can never close a script element.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendStep writes r as a JSON object. With full false it leaves out the
// per-stage and per-link stats: the long-term history only needs the
// curves. It writes what the page shows and leaves out the rest
// (val_loss_per_byte, a stage's key and peak_rss_bytes).
func appendStep(b []byte, r *metrics.StepRecord, full bool) []byte {
	b, _ = appendStepSplit(b, r, full)
	return b
}

// appendStepSplit is appendStep that also returns the offset in b where
// the per-stage and per-link stats begin, so the compact encoding is
// b[:split] + "}" without formatting the numbers twice.
func appendStepSplit(b []byte, r *metrics.StepRecord, full bool) ([]byte, int) {
	b = append(b, `{"step":`...)
	b = strconv.AppendInt(b, int64(r.Step), 10)
	b = append(b, `,"tokens":`...)
	b = strconv.AppendInt(b, r.Tokens, 10)
	b = append(b, `,"loss":`...)
	b = appendFloat(b, r.Loss)
	b = append(b, `,"lr":`...)
	b = appendFloat(b, r.LR)
	b = append(b, `,"tokens_per_second":`...)
	b = appendFloat(b, r.TokensPerSecond)
	b = append(b, `,"wall_seconds":`...)
	b = appendFloat(b, r.WallSeconds)
	if r.ValLoss != nil {
		b = append(b, `,"val_loss":`...)
		b = appendFloat(b, *r.ValLoss)
	}
	if r.GradNorm != 0 {
		b = append(b, `,"grad_norm":`...)
		b = appendFloat(b, r.GradNorm)
	}
	if r.ReplicaBytes != 0 {
		b = append(b, `,"replica_bytes":`...)
		b = strconv.AppendInt(b, r.ReplicaBytes, 10)
	}
	if r.ReplicaRawBytes != 0 {
		b = append(b, `,"replica_raw_bytes":`...)
		b = strconv.AppendInt(b, r.ReplicaRawBytes, 10)
	}
	split := len(b)
	if full && len(r.Stages) > 0 {
		b = append(b, `,"stages":[`...)
		for i, s := range r.Stages {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"stage":`...)
			b = strconv.AppendInt(b, int64(s.Stage), 10)
			b = append(b, `,"busy_seconds":`...)
			b = appendFloat(b, s.BusySeconds)
			b = append(b, `,"idle_seconds":`...)
			b = appendFloat(b, s.IdleSeconds)
			b = append(b, `,"net_wait_seconds":`...)
			b = appendFloat(b, s.NetWait)
			if s.Peer != "" {
				b = append(b, `,"peer":`...)
				b = appendString(b, s.Peer)
			}
			if s.BytesSent != 0 {
				b = append(b, `,"bytes_sent":`...)
				b = strconv.AppendInt(b, s.BytesSent, 10)
			}
			if s.MicroBatches != 0 {
				b = append(b, `,"micro_batches":`...)
				b = strconv.AppendInt(b, int64(s.MicroBatches), 10)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if full && len(r.Links) > 0 {
		b = append(b, `,"links":[`...)
		for i, l := range r.Links {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"from":`...)
			b = strconv.AppendInt(b, int64(l.From), 10)
			b = append(b, `,"to":`...)
			b = strconv.AppendInt(b, int64(l.To), 10)
			b = append(b, `,"bytes_forward":`...)
			b = strconv.AppendInt(b, l.BytesForward, 10)
			b = append(b, `,"bytes_backward":`...)
			b = strconv.AppendInt(b, l.BytesBackward, 10)
			b = append(b, `,"messages":`...)
			b = strconv.AppendInt(b, l.Messages, 10)
			if l.Ratio != 0 {
				b = append(b, `,"compression_ratio":`...)
				b = appendFloat(b, l.Ratio)
			}
			if l.RTTMillis != 0 {
				b = append(b, `,"rtt_ms":`...)
				b = appendFloat(b, l.RTTMillis)
			}
			if l.Candidate != "" {
				b = append(b, `,"candidate":`...)
				b = appendString(b, l.Candidate)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), split
}

func appendSpan(b []byte, s *metrics.Span) []byte {
	b = append(b, `{"stage":`...)
	b = strconv.AppendInt(b, int64(s.Stage), 10)
	b = append(b, `,"kind":`...)
	b = appendString(b, s.Kind)
	b = append(b, `,"step":`...)
	b = strconv.AppendInt(b, int64(s.Step), 10)
	b = append(b, `,"micro":`...)
	b = strconv.AppendInt(b, int64(s.Micro), 10)
	b = append(b, `,"start":`...)
	b = appendFloat(b, s.Start)
	b = append(b, `,"end":`...)
	b = appendFloat(b, s.End)
	if s.Of != 0 {
		b = append(b, `,"of":`...)
		b = strconv.AppendInt(b, int64(s.Of), 10)
	}
	if s.Version != nil {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, int64(*s.Version), 10)
	}
	return append(b, '}')
}

func appendSpans(b []byte, spans []metrics.Span) []byte {
	b = append(b, '[')
	for i := range spans {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendSpan(b, &spans[i])
	}
	return append(b, ']')
}

// appendEvent writes e. Detail is free-form, so it goes through
// encoding/json; if that fails (a NaN, a channel, a cycle) the detail is
// replaced by its error so the event itself is never lost.
func appendEvent(b []byte, e *metrics.Event) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"kind":`...)
	b = appendString(b, e.Kind)
	b = append(b, `,"step":`...)
	b = strconv.AppendInt(b, int64(e.Step), 10)
	b = append(b, `,"wall_seconds":`...)
	b = appendFloat(b, e.WallSeconds)
	if len(e.Detail) > 0 {
		b = append(b, `,"detail":`...)
		d, err := json.Marshal(e.Detail)
		if err != nil {
			b = append(b, `{"error":`...)
			b = appendString(b, "detail not encodable: "+err.Error())
			b = append(b, '}')
		} else {
			b = append(b, d...)
		}
	}
	return append(b, '}')
}

func appendRun(b []byte, r *RunInfo) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, r.Name)
	b = append(b, `,"seed":`...)
	b = strconv.AppendInt(b, r.Seed, 10)
	b = append(b, `,"config":`...)
	b = appendString(b, r.Config)
	b = append(b, `,"total_steps":`...)
	b = strconv.AppendInt(b, int64(r.TotalSteps), 10)
	b = append(b, `,"start_unix_ms":`...)
	if r.Start.IsZero() {
		b = append(b, '0')
	} else {
		b = strconv.AppendInt(b, r.Start.UnixMilli(), 10)
	}
	return append(b, '}')
}

func appendPeers(b []byte, peers []Peer) []byte {
	b = append(b, '[')
	for i, p := range peers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendString(b, p.ID)
		b = append(b, `,"stage":`...)
		b = strconv.AppendInt(b, int64(p.Stage), 10)
		b = append(b, `,"address":`...)
		b = appendString(b, p.Address)
		b = append(b, `,"candidate":`...)
		b = appendString(b, p.Candidate)
		b = append(b, `,"state":`...)
		b = appendString(b, p.State.String())
		b = append(b, '}')
	}
	return append(b, ']')
}

// frame wraps one JSON payload as a server-sent event. The payload never
// holds a raw newline (the encoders escape them), so one data line is
// enough.
func frame(event string, payload []byte) []byte {
	b := make([]byte, 0, len(event)+len(payload)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, payload...)
	return append(b, '\n', '\n')
}
