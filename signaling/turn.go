//go:build !js

package signaling

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"

	"github.com/pion/turn/v4"
)

// TURNConfig configures the embedded STUN/TURN server, so a run needs no
// third-party service for peers behind NAT.
type TURNConfig struct {
	// ListenUDP is the UDP address to serve STUN and TURN on, e.g.
	// "0.0.0.0:3478".
	ListenUDP string
	// Realm is the TURN realm (default "narrowband").
	Realm string
	// PublicIP is the address peers reach this server at; relay addresses
	// are advertised with it. Required when ListenUDP's host is unspecified.
	PublicIP string
	// RelayBind is the local IP relay sockets bind to (default: PublicIP;
	// set it to the private IP when PublicIP is a forwarded address).
	RelayBind string
	// Key is DeriveKey(secret) of the run: TURN credentials are derived from
	// it (TURNCredentials), so only peers with the secret can relay.
	Key []byte
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// TURNServer is a running embedded STUN/TURN server.
type TURNServer struct {
	srv  *turn.Server
	conn net.PacketConn
}

// TURNCredentials returns the TURN username and password a peer uses with
// an embedded server whose run key is key. Any ID may be used; the password
// is bound to it.
func TURNCredentials(key []byte, peerID string) (username, password string) {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("narrowband turn v1\x00"))
	h.Write([]byte(peerID))
	return peerID, base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// StartTURN starts a STUN/TURN server and returns once it is listening.
func StartTURN(cfg TURNConfig) (*TURNServer, error) {
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("signaling: TURNConfig.Key has %d bytes, want %d: set it to DeriveKey(secret)", len(cfg.Key), KeySize)
	}
	if cfg.Realm == "" {
		cfg.Realm = "narrowband"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	addr, err := net.ResolveUDPAddr("udp4", cfg.ListenUDP)
	if err != nil {
		return nil, fmt.Errorf("signaling: TURNConfig.ListenUDP = %q: %w (want HOST:PORT)", cfg.ListenUDP, err)
	}
	public := net.ParseIP(cfg.PublicIP)
	switch {
	case cfg.PublicIP == "" && addr.IP != nil && !addr.IP.IsUnspecified():
		public = addr.IP
	case public == nil:
		return nil, fmt.Errorf("signaling: TURNConfig.PublicIP = %q: set it to the IP peers reach this server at", cfg.PublicIP)
	}
	bind := cfg.RelayBind
	if bind == "" {
		bind = public.String()
	}
	if net.ParseIP(bind) == nil {
		return nil, fmt.Errorf("signaling: TURNConfig.RelayBind = %q is not an IP address", bind)
	}
	conn, err := net.ListenUDP("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("signaling: TURN listen on %s: %w (is the port in use?)", cfg.ListenUDP, err)
	}
	_ = conn.SetReadBuffer(4 << 20) // a relay carries whole training links
	_ = conn.SetWriteBuffer(4 << 20)
	log := cfg.Logger.With("turn", conn.LocalAddr().String())
	key := append([]byte(nil), cfg.Key...)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: cfg.Realm,
		AuthHandler: func(username, realm string, src net.Addr) ([]byte, bool) {
			if ValidID(username) != nil {
				log.Warn("signaling: TURN request with a malformed username", "from", src.String())
				return nil, false
			}
			_, pass := TURNCredentials(key, username)
			return turn.GenerateAuthKey(username, realm, pass), true
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: public,
				Address:      bind,
			},
		}},
	})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("signaling: start TURN server: %w", err)
	}
	return &TURNServer{srv: srv, conn: conn}, nil
}

// Addr is the UDP address the server listens on.
func (t *TURNServer) Addr() *net.UDPAddr { return t.conn.LocalAddr().(*net.UDPAddr) }

// Close stops the server and its relays.
func (t *TURNServer) Close() error {
	if err := t.srv.Close(); err != nil {
		return fmt.Errorf("signaling: close TURN server: %w", err)
	}
	return nil
}
