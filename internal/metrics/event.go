package metrics

// StepRecord is one line of metrics.jsonl: what happened in one optimizer
// step. Pointer fields are present only on some steps.
type StepRecord struct {
	Type            string   `json:"type,omitempty"` // "" or "step"; other event kinds set Type
	Step            int      `json:"step"`           // 1-based optimizer step just finished
	Tokens          int64    `json:"tokens"`         // training tokens consumed so far
	Loss            float64  `json:"loss"`           // mean train loss of this step, nats/token (a byte, in byte runs)
	LR              float64  `json:"lr"`             // learning rate used in this step
	TokensPerSecond float64  `json:"tokens_per_second"`
	WallSeconds     float64  `json:"wall_seconds"`       // since the run started
	ValLoss         *float64 `json:"val_loss,omitempty"` // held-out, nats/token
	// ValLossPerByte is ValLoss in nats per byte of the held-out text the
	// scored tokens cover (ValLoss × tokens / bytes), comparable across
	// tokenizers; equal to ValLoss in byte runs.
	ValLossPerByte *float64 `json:"val_loss_per_byte,omitempty"`
	GradNorm       float64  `json:"grad_norm,omitempty"`
	// ReplicaBytes is the wire bytes of this step's gradient sum among
	// each stage's replicas, over every link and direction (docs/swarm.md).
	ReplicaBytes int64 `json:"replica_bytes,omitempty"`
	// ReplicaRawBytes is what that sum would have sent in raw fp32 on the
	// same links and directions ([compression.replicas] codes it).
	ReplicaRawBytes int64 `json:"replica_raw_bytes,omitempty"`

	Stages []StageStats `json:"stages,omitempty"`
	Links  []LinkStats  `json:"links,omitempty"`
}

// StageStats is one pipeline stage's use of its time during a step.
type StageStats struct {
	Stage       int     `json:"stage"`
	BusySeconds float64 `json:"busy_seconds"`     // computing forward/backward/optimizer
	IdleSeconds float64 `json:"idle_seconds"`     // waiting, for any reason
	NetWait     float64 `json:"net_wait_seconds"` // of the idle time, waiting on a link
	// Who computed the stage this step, and what it sent.
	Peer      string `json:"peer,omitempty"`
	Key       string `json:"key,omitempty"` // the holder's identity key (hex); "" for the coordinator's own stages
	BytesSent int64  `json:"bytes_sent,omitempty"`
	// PeakRSS is the peak resident memory of the stage's process, where it
	// has one of its own (stage processes, WebRTC peers).
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
	// MicroBatches is how many of the step's micro-batches this replica
	// computed (a swarm's replica: the route decides, docs/swarm.md); 0
	// where the runtime does not say.
	MicroBatches int `json:"micro_batches,omitempty"`
	// Spot checks of this replica's outputs in this step, over its
	// attempts (a failed one is redone): passed and failed.
	ChecksPassed int `json:"checks_passed,omitempty"`
	ChecksFailed int `json:"checks_failed,omitempty"`
}

// LinkStats is one link between two stages during a step, per direction.
type LinkStats struct {
	From          int     `json:"from"`
	To            int     `json:"to"`
	BytesForward  int64   `json:"bytes_forward"`  // activations, From→To
	BytesBackward int64   `json:"bytes_backward"` // gradients, To→From
	Messages      int64   `json:"messages"`
	Ratio         float64 `json:"compression_ratio,omitempty"` // fp32 bytes / wire bytes
	RTTMillis     float64 `json:"rtt_ms,omitempty"`
	Candidate     string  `json:"candidate,omitempty"`
}

// Span is one interval of a stage's timeline: what it did from Start to End
// (seconds since the run started). Kind is "forward", "backward", "send",
// "recv_wait", "optimizer" or "idle", and under the async schedule also
// "stash" (a weight version copied before an optimizer step overwrites
// it) and "drop" (a stashed version freed after its last backward).
type Span struct {
	Stage int    `json:"stage"`
	Kind  string `json:"kind"`
	// Step is the step whose record carries the span (1-based).
	Step  int     `json:"step"`
	Micro int     `json:"micro"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	// Async only. Of is the step (1-based) the micro-batch belongs to:
	// stages run several steps apart, so a step's record holds spans of
	// later steps' micro-batches. Version is the weight version a
	// forward or backward ran on, or a stash or drop is of ("the weights
	// after Version optimizer steps", the same on every stage).
	Of      int  `json:"of,omitempty"`
	Version *int `json:"version,omitempty"`
}

// Event is a non-step occurrence worth recording: a compression rank change,
// a peer failure, a recovery. It is also a metrics.jsonl line, with Type set.
type Event struct {
	Type        string         `json:"type"` // "event"
	Kind        string         `json:"kind"` // e.g. "rank_change", "peer_dead", "recovered"
	Step        int            `json:"step"`
	WallSeconds float64        `json:"wall_seconds"`
	Detail      map[string]any `json:"detail,omitempty"`
}
