package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/stages"
)

// Control messages go between the driver (coordinator) and each stage
// worker, in TypeControl frames whose payload is a u32 JSON length, the JSON
// ctrlMsg, and an optional binary blob (tokens, targets, tensors).

// ctrlKind says what a control message is. On the wire (JSON) it is its
// name; an unknown name does not decode.
type ctrlKind uint8

const (
	ctrlUnknown  ctrlKind = iota
	ctrlStep              // driver→worker: run optimizer step Step at LR; blob: tokens (first) / targets (last)
	ctrlReport            // worker→driver: gradients ready: SumSq, Loss (last stage)
	ctrlApply             // driver→worker: scale gradients by Scale and apply the optimizer
	ctrlDone              // worker→driver: step finished: Stats
	ctrlEval              // driver→worker: forward the eval batches Shapes; blob: tokens (first) / targets (last)
	ctrlEvalDone          // worker→driver: LossSum over Count predictions (last stage; others 0)
	ctrlState             // driver→worker: send your weights and optimizer state
	ctrlStateIs           // worker→driver: blob: tensors; OptimStep
	ctrlRestore           // driver→worker: load blob tensors at OptimStep
	ctrlOK                // worker→driver: restore, relink or fault done
	ctrlError             // worker→driver: Err; the run stops

	// Liveness and recovery.
	ctrlHeartbeat // both ways, every faults.heartbeat
	ctrlAbort     // driver→worker: drop the attempt in progress; Epoch is the next one
	ctrlAborted   // worker→driver: reset, at Epoch
	ctrlLinkDown  // worker→driver: the link to stage Peer failed or went silent
	ctrlReject    // worker→driver: rejected a bad frame from stage Peer
	ctrlRelink    // driver→worker: re-establish the link to stage Peer (Peers: stage → holder); reply ok
	ctrlFault     // driver→worker: inject Fault on the link to stage Peer for Duration; reply ok

	// A swarm's joins (worker_sync.go).
	ctrlSyncServe // driver→replica: send node Peer this stage's state, then every step to replay until ctrlSyncStop; reply ok: OptimStep, Count (bytes)
	ctrlSyncFetch // driver→joiner: download the state of OptimStep (Count bytes) from node Peer; reply ok; ctrlSynced once it holds it
	ctrlSynced    // joiner→driver: the download is done: Count bytes in Duration seconds (Frames: restarts)
	ctrlSyncStop  // driver→replica: stop replaying steps to node Peer; reply ok
	ctrlAdmit     // driver→joiner: replay up to optimizer step OptimStep and train from it; reply ok with Hash
	ctrlLeave     // driver→replica: you are dropped from your stage (Err why): stop; reply ok
	ctrlLinkTo    // driver→replica: link to node Peer of stage PeerStage, peer Peers[0] (it joins); reply ok once heard

	// Spot checks (worker_verify.go), between a step's report and its apply.
	ctrlVerifyServe // driver→replica: send your kept activation of each micro-batch Micros[n] to node Nodes[n]; reply ok: Count (bytes)
	ctrlVerify      // driver→replica: recompute the forward of each Micros[n] from the input node Nodes[n] sends (-1: the batch's tokens); reply ok: Hashes
	ctrlLie         // driver→replica: from now on multiply your activation outputs by 1+Scale on a share Duration of your micro-batches (a test's liar); reply ok
)

var ctrlNames = [...]string{"unknown", "step", "report", "apply", "done", "eval", "evaldone", "state", "stateis", "restore", "ok", "error",
	"hb", "abort", "aborted", "linkdown", "reject", "relink", "fault",
	"syncserve", "syncfetch", "synced", "syncstop", "admit", "leave", "linkto",
	"verifyserve", "verify", "lie"}

func (k ctrlKind) String() string {
	if int(k) < len(ctrlNames) {
		return ctrlNames[k]
	}
	return fmt.Sprintf("ctrlKind(%d)", uint8(k))
}

func (k ctrlKind) MarshalText() ([]byte, error) {
	if k == ctrlUnknown || int(k) >= len(ctrlNames) {
		return nil, fmt.Errorf("control message kind %v has no name", k)
	}
	return []byte(k.String()), nil
}

func (k *ctrlKind) UnmarshalText(b []byte) error {
	for i := 1; i < len(ctrlNames); i++ {
		if string(b) == ctrlNames[i] {
			*k = ctrlKind(i)
			return nil
		}
	}
	return fmt.Errorf("unknown control message kind %q", b)
}

type ctrlMsg struct {
	Kind   ctrlKind `json:"kind"`
	Stage  int      `json:"stage"`
	Step   int      `json:"step,omitempty"`
	LR     float64  `json:"lr,omitempty"`
	Scale  float32  `json:"scale,omitempty"`
	T0     int64    `json:"t0,omitempty"`   // run start, unix ns, for timeline spans
	Hold   bool     `json:"hold,omitempty"` // async step: keep a copy of the stage once it applied Step (to evaluate or checkpoint)
	Shapes [][2]int `json:"shapes,omitempty"`
	// Route and Chains (a swarm's step and evaluation, worker_swarm.go):
	// Route[i][j] is the node computing micro-batch j on stage i, Chains[i]
	// stage i's replicas in summing order.
	Route  [][]int `json:"route,omitempty"`
	Chains [][]int `json:"chains,omitempty"`
	// Gone (a swarm's step) are the nodes that left the swarm for good:
	// their links are let go.
	Gone []int `json:"gone,omitempty"`
	// PeerStage (ctrlLinkTo) is the stage of node Peer.
	PeerStage int          `json:"peer_stage,omitempty"`
	SumSq     float64      `json:"sumsq,omitempty"`
	Loss      float64      `json:"loss,omitempty"`
	LossSum   float64      `json:"loss_sum,omitempty"`
	Count     int64        `json:"count,omitempty"`
	OptimStep int          `json:"optim_step,omitempty"`
	Stats     *workerStats `json:"stats,omitempty"`
	Err       string       `json:"err,omitempty"`
	// Epoch numbers attempts: every abort starts a new one, and replies
	// and frames of older ones are stale.
	Epoch    uint64   `json:"epoch,omitempty"`
	Peer     int      `json:"peer,omitempty"`
	Peers    []string `json:"peers,omitempty"`
	Fault    string   `json:"fault,omitempty"`
	Duration float64  `json:"duration,omitempty"`
	Mbps     float64  `json:"mbps,omitempty"`
	Frames   int      `json:"frames,omitempty"`
	// Origin (async restore): the step the stream began at, 0 or the
	// step the run resumed from; a restart goes on as if from there.
	Origin int `json:"origin,omitempty"`
	// Hash (state reply, a stage with replicas) is a digest of the
	// stage's weights and optimizer state, which must be the same on every
	// replica; HashOnly asks for it without the state itself.
	Hash     uint64 `json:"hash,omitempty"`
	HashOnly bool   `json:"hash_only,omitempty"`
	// Spot checks (worker_verify.go). Hashes: in a swarm's report, the
	// FNV-64a of each micro-batch's activation payload as this replica
	// received it (0: not received here); in a ctrlVerify reply, of each
	// recomputed output of Micros, encoded as it would have gone on the
	// wire. Nodes: per micro-batch, the checker (ctrlVerifyServe) or the
	// upstream sender (ctrlVerify).
	Hashes []uint64 `json:"hashes,omitempty"`
	Micros []int    `json:"micros,omitempty"`
	Nodes  []int    `json:"nodes,omitempty"`
	Share  float64  `json:"share,omitempty"`  // ctrlLie: the share of micro-batches lied on
	Checks bool     `json:"checks,omitempty"` // ctrlLie: lie in the spot checks run for others too

	blob []byte
}

// workerStats is one stage's account of one step.
type workerStats struct {
	Busy, Wait, NetWait, Wall  float64 // seconds
	SentFwdBytes, SentBwdBytes int64   // wire bytes this stage sent forward / backward
	RawFwdBytes, RawBwdBytes   int64   // fp32 bytes they stand for
	SentMessages               int64
	SentTiedBytes              int64 // wire bytes of the tied-embedding gradient exchange
	SentReplicaBytes           int64 `json:",omitempty"` // wire bytes of the gradient sum among the stage's replicas
	RawReplicaBytes            int64 `json:",omitempty"` // the fp32 bytes they stand for
	Micros                     int   `json:",omitempty"` // a swarm's replica: the micro-batches it computed
	SentSyncBytes              int64 `json:",omitempty"` // steps replayed to joiners syncing from this replica
	Spans                      []spanRec
	// The link to the next stage: its path type and round-trip time.
	Candidate string
	RTTMs     float64
	Events    []metrics.Event // e.g. compression rank changes
	PeakRSS   int64           `json:",omitempty"` // bytes, where the stage has a process of its own
}

type spanRec struct {
	Kind  string  `json:"k"`
	Micro int     `json:"m"`
	Start float64 `json:"s"`
	End   float64 `json:"e"`
	// Async: the micro-batch's step (1-based) and the weight version
	// (metrics.Span's Of and Version).
	Of  int  `json:"of,omitempty"`
	Ver *int `json:"v,omitempty"`
}

// maxControl bounds one control message; a whole stage's state (weights
// and two moments) must fit.
const maxControl = 1 << 30

func encodeCtrl(m ctrlMsg) ([]byte, error) {
	js, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 4, 4+len(js)+len(m.blob))
	binary.LittleEndian.PutUint32(payload, uint32(len(js)))
	payload = append(payload, js...)
	payload = append(payload, m.blob...)
	return wire.Append(nil, wire.Header{Type: wire.TypeControl, Stage: uint16(m.Stage)}, payload), nil
}

func decodeCtrl(frame []byte) (ctrlMsg, error) {
	h, p, err := wire.Decode(frame, maxControl)
	if err != nil {
		return ctrlMsg{}, fmt.Errorf("control frame: %w", err)
	}
	if h.Type != wire.TypeControl {
		return ctrlMsg{}, fmt.Errorf("control link carried a %v frame", h.Type)
	}
	if len(p) < 4 {
		return ctrlMsg{}, errors.New("control frame: payload too short")
	}
	n := binary.LittleEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return ctrlMsg{}, fmt.Errorf("control frame: JSON length %d over payload %d", n, len(p)-4)
	}
	var m ctrlMsg
	if err := json.Unmarshal(p[4:4+n], &m); err != nil {
		return ctrlMsg{}, fmt.Errorf("control frame: %w", err)
	}
	m.blob = p[4+n:]
	return m, nil
}

// encodeTensors packs tensors as: u32 count, then per tensor u16 name
// length, name, u8 rank, u32 dims, float32 data.
func encodeTensors(ts []stages.Tensor) []byte {
	n := 4
	for _, t := range ts {
		n += 2 + len(t.Name) + 1 + 4*len(t.Shape) + 4*len(t.Data)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ts)))
	for _, t := range ts {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(t.Name)))
		b = append(b, t.Name...)
		b = append(b, byte(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.LittleEndian.AppendUint32(b, uint32(d))
		}
		for _, v := range t.Data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	return b
}

func decodeTensors(b []byte) ([]stages.Tensor, error) {
	bad := errors.New("tensor blob: truncated or malformed")
	if len(b) < 4 {
		return nil, bad
	}
	count := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(count) > uint64(len(b)) {
		return nil, bad
	}
	ts := make([]stages.Tensor, 0, count)
	for i := uint32(0); i < count; i++ {
		if len(b) < 2 {
			return nil, bad
		}
		nl := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if len(b) < nl+1 {
			return nil, bad
		}
		name := string(b[:nl])
		rank := int(b[nl])
		b = b[nl+1:]
		if len(b) < 4*rank {
			return nil, bad
		}
		shape := make([]int, rank)
		size := uint64(1)
		for d := range shape {
			shape[d] = int(binary.LittleEndian.Uint32(b[4*d:]))
			size *= uint64(shape[d])
			if size > uint64(len(b)) {
				return nil, bad
			}
		}
		b = b[4*rank:]
		if uint64(len(b)) < 4*size {
			return nil, bad
		}
		data := make([]float32, size)
		for j := range data {
			data[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
		}
		b = b[4*size:]
		ts = append(ts, stages.Tensor{Name: name, Shape: shape, Data: data})
	}
	if len(b) != 0 {
		return nil, bad
	}
	return ts, nil
}
