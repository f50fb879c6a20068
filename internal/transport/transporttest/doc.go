// Package transporttest is the conformance suite every transport.Conn
// implementation must pass: the in-process pipe, the link shaper and the
// WebRTC data-channel transport all run the same Run, so the runtime can
// treat them as interchangeable.
//
// Use it from a test:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) (a, b transport.Conn) {
//			a, b := dialPair(t) // two connected ends
//			return a, b
//		})
//	}
//
// Run calls newPair once per subtest and closes both ends itself when the
// subtest ends (Close is idempotent, so the caller's own t.Cleanup may close
// them again; it should release whatever else it created, such as peer
// connections, servers or sockets, in t.Cleanup). Each subtest then checks
// that every goroutine started since it began has exited, so newPair's
// cleanups must not leave background goroutines behind. Subtests run one at
// a time; do not run other transport tests in parallel with Run in the same
// process, or their goroutines may be reported as leaks.
//
// The suite assumes only the Conn contract documented in package transport:
// no particular buffer size, bandwidth or latency. Every wait is bounded, so
// a broken implementation fails with a message instead of hanging.
package transporttest
