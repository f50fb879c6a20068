package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/signaling"
)

// cmdPeer joins a run from any machine: it authenticates to the run's
// signaling server with the run's secret and waits for a stage.
func cmdPeer(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"signal": true, "secret-file": true, "id": true, "ice": true, "loopback": false, "relay-only": false, "key": true})
	if err != nil {
		return err
	}
	pa := launch.PeerArgs{Signal: a.str("signal", ""), SecretFile: a.str("secret-file", ""), ID: a.str("id", ""), ICEServers: a.all("ice"), Loopback: a.str("loopback", "") == "true", RelayOnly: a.str("relay-only", "") == "true", KeyFile: a.str("key", "")}
	if pa.Signal == "" || pa.SecretFile == "" || len(a.pos) > 0 {
		return fmt.Errorf("peer: usage: narrowband peer --signal ws://HOST:PORT/ROOM --secret-file F [--id NAME] [--ice stun:HOST:PORT ...] [--loopback] [--relay-only]")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	return launch.RunPeer(ctx, pa, log)
}

// cmdSignal runs a standalone signaling server: rooms of peers that prove
// they hold the secret meet there and exchange WebRTC offers, answers and
// candidates.
func cmdSignal(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"addr": true, "secret-file": true, "turn": true, "public-ip": true})
	if err != nil {
		return err
	}
	addr, sf := a.str("addr", "127.0.0.1:8700"), a.str("secret-file", "")
	if sf == "" || len(a.pos) > 0 {
		return fmt.Errorf("signal: usage: narrowband signal --secret-file F [--addr HOST:PORT] [--turn UDPHOST:PORT --public-ip IP]")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	secret, err := launch.ReadSecret(sf, log)
	if err != nil {
		return err
	}
	key, err := signaling.DeriveKey(secret)
	if err != nil {
		return err
	}
	if t := a.str("turn", ""); t != "" {
		// STUN and TURN beside signaling: a run needs no third-party
		// server for peers behind NAT; only holders of the secret relay.
		ts, err := signaling.StartTURN(signaling.TURNConfig{ListenUDP: t, PublicIP: a.str("public-ip", ""), Key: key, Logger: log})
		if err != nil {
			return fmt.Errorf("signal: --turn %s: %w", t, err)
		}
		defer ts.Close()
		fmt.Fprintf(stdout, "STUN/TURN on %s (peers: --ice stun:%s --ice turn:%s)\n", t, t, t)
	}
	fmt.Fprintf(stdout, "signaling on ws://%s/ROOM\n", addr)
	return signaling.ListenAndServe(ctx, addr, signaling.Config{Key: key, Logger: log})
}
