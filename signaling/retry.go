//go:build !js

package signaling

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// RetryOptions tunes DialRetry. The zero value retries for up to five
// minutes, waiting 250 ms after the first failure and doubling the wait up
// to 15 s.
type RetryOptions struct {
	// Client is passed to every attempt (its Logger also gets the retry
	// lines).
	Client ClientOptions
	// InitialDelay is the wait after the first failed attempt (default
	// 250 ms). Each further failure doubles it; every wait is drawn at
	// random from [d/2, d] so peers started together do not retry in step.
	InitialDelay time.Duration
	// MaxDelay bounds one wait, also one asked for by the server's
	// Retry-After (default 15 s).
	MaxDelay time.Duration
	// MaxElapsed bounds the whole dial, attempts and waits together: no
	// attempt starts after it and one under way is cut off at it
	// (default 5 min: time enough to start the server after its peers).
	MaxElapsed time.Duration
	// MaxAttempts, if positive, bounds the number of attempts too.
	MaxAttempts int
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.InitialDelay <= 0 {
		o.InitialDelay = 250 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 15 * time.Second
	}
	if o.MaxDelay < o.InitialDelay {
		o.MaxDelay = o.InitialDelay
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = 5 * time.Minute
	}
	if o.Client.Logger == nil {
		o.Client.Logger = slog.Default()
	}
	return o
}

// DialRetry is DialOptions that keeps trying while the failure is one that
// waiting can cure: the server is not up yet (connection refused, reset,
// unreachable network, timeouts), it is busy (HTTP 503, 429, 502, 504;
// a Retry-After hint is honoured up to MaxDelay), the room is full, or
// this peer's ID is still in the room (a previous connection of the same
// peer that the server has not yet seen die). Each retry is logged at Warn
// with the attempt, the wait and the reason.
//
// It never retries what waiting cannot cure, and returns at once: a wrong
// secret (the error wraps ErrAuth and says it was not retried), a bad URL,
// room or peer ID, an HTTP answer such as 400 or 404 (the URL is not a
// signaling room), a protocol mismatch, a TLS certificate problem. When
// MaxElapsed or MaxAttempts runs out the error wraps ErrGaveUp and the last
// attempt's error; when ctx ends it wraps ctx's error and the last one.
func DialRetry(ctx context.Context, rawURL, peerID, secret string, opt RetryOptions) (*Client, error) {
	opt = opt.withDefaults()
	if opt.Client.Key == nil && opt.Client.JoinToken == "" {
		// Derive once, not per attempt (it costs milliseconds of CPU), and
		// fail on an empty secret before any network traffic.
		k, err := DeriveKey(secret)
		if err != nil {
			return nil, err
		}
		opt.Client.Key = k
	}
	log := opt.Client.Logger
	start := time.Now()
	deadline := start.Add(opt.MaxElapsed)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithDeadline(ctx, deadline)
		c, err := DialOptions(actx, rawURL, peerID, secret, opt.Client)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("signaling: joined after retrying", "url", rawURL, "peer", peerID, "attempts", attempt, "elapsed", time.Since(start).Round(time.Millisecond))
			}
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("signaling: dial %s as %s: stopped after %d attempts: %w (last attempt: %w)", rawURL, peerID, attempt, context.Cause(ctx), err)
		}
		reason, again := retryable(err)
		if !again {
			if errors.Is(err, ErrAuth) {
				return nil, fmt.Errorf("%w (not retried: the server refuses this secret, and waiting will not change that; start the peer with the run's secret)", err)
			}
			return nil, fmt.Errorf("%w (not retried: %s)", err, reason)
		}
		wait := backoff(attempt, opt.InitialDelay, opt.MaxDelay, rand.Float64())
		if he, ok := errors.AsType[*HTTPError](err); ok && he.RetryAfter > wait {
			wait = min(he.RetryAfter, opt.MaxDelay)
		}
		// No attempt starts past the deadline: one started at it would
		// only time out and hide the real reason.
		if wait >= time.Until(deadline) || opt.MaxAttempts > 0 && attempt >= opt.MaxAttempts {
			return nil, fmt.Errorf("%w: %d attempts in %v: %w", ErrGaveUp, attempt, time.Since(start).Round(time.Millisecond), err)
		}
		log.Warn("signaling: dial failed; retrying", "url", rawURL, "peer", peerID, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "reason", reason, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("signaling: dial %s as %s: stopped after %d attempts: %w (last attempt: %w)", rawURL, peerID, attempt, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// backoff is the wait after the n-th consecutive failure: initial·2^(n−1)
// capped at max, scaled into [½, 1] of itself by u ∈ [0, 1) ("equal
// jitter": spread out, yet never near zero).
func backoff(n int, initial, max time.Duration, u float64) time.Duration {
	d := initial
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + time.Duration(u*float64(d/2))
}

// retryable says whether err from DialOptions may go away by waiting, and
// why in words for the log.
func retryable(err error) (reason string, ok bool) {
	if errors.Is(err, ErrAuth) {
		return "wrong secret", false
	}
	if r, isRefusal := errors.AsType[*refusal](err); isRefusal {
		switch r.code {
		case CodeFull:
			return "room or server full", true
		case CodeDuplicate:
			return "peer ID still in the room (an earlier connection of this peer not yet dropped?)", true
		}
		return "server refused the join (code " + r.code + ")", false
	}
	if he, isHTTP := errors.AsType[*HTTPError](err); isHTTP {
		switch he.StatusCode {
		case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
			return fmt.Sprintf("server busy (HTTP %d)", he.StatusCode), true
		}
		return fmt.Sprintf("HTTP %d is not a busy server; is the URL a narrowband signaling room?", he.StatusCode), false
	}
	if errors.Is(err, ErrBadMessage) {
		return "the server does not speak this protocol", false
	}
	if _, isCert := errors.AsType[*tls.CertificateVerificationError](err); isCert {
		return "TLS certificate not trusted", false
	}
	if _, isCert := errors.AsType[x509.HostnameError](err); isCert {
		return "TLS certificate for another host", false
	}
	if dns, isDNS := errors.AsType[*net.DNSError](err); isDNS {
		if dns.IsNotFound {
			return "no such host", false
		}
		return "DNS lookup failed", true
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (server not started yet?)", true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE):
		return "connection reset", true
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETDOWN):
		return "network unreachable (network not up yet?)", true
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return "timed out", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "server closed the connection during the handshake", true
	}
	if _, isClose := errors.AsType[*websocket.CloseError](err); isClose {
		return "server closed the connection during the handshake", true
	}
	if ne, isNet := errors.AsType[net.Error](err); isNet && ne.Timeout() {
		return "timed out", true
	}
	return "unexpected error", false
}
