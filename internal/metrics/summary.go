package metrics

// Summary is summary.json: the run's result in one object.
type Summary struct {
	Name         string  `json:"name"`
	Seed         uint64  `json:"seed"`
	Steps        int     `json:"steps"`
	FinalValLoss float64 `json:"final_val_loss"` // nats/token
	// FinalValLossPerByte is FinalValLoss per byte of held-out text (see
	// StepRecord.ValLossPerByte).
	FinalValLossPerByte float64 `json:"final_val_loss_per_byte,omitempty"`
	FinalTrainLoss      float64 `json:"final_train_loss"`
	Tokens              int64   `json:"tokens"`
	WallSeconds         float64 `json:"wall_seconds"`
	TokensPerSecond     float64 `json:"tokens_per_second"`
	Params              int64   `json:"params"`

	Stages      int    `json:"stages"`
	Schedule    string `json:"schedule"`
	Transport   string `json:"transport"`
	Compression string `json:"compression"`

	BubbleFraction            float64 `json:"bubble_fraction"`
	NetworkWaitFraction       float64 `json:"network_wait_fraction"`
	WireBytesPerTokenForward  float64 `json:"wire_bytes_per_token_forward"`
	WireBytesPerTokenBackward float64 `json:"wire_bytes_per_token_backward"`
	CompressionRatioForward   float64 `json:"compression_ratio_forward,omitempty"`
	CompressionRatioBackward  float64 `json:"compression_ratio_backward,omitempty"`
	// TiedBytesPerToken is the tied-embedding gradient exchange (first ↔
	// last stage, both ways together) per token: a per-step cost, so it
	// falls with tokens per step; not part of the boundary's figures above.
	TiedBytesPerToken float64 `json:"tied_embedding_bytes_per_token,omitempty"`
	// ReplicaBytesPerStep is the gradient sum among each stage's replicas
	// (docs/swarm.md), every link and direction, per optimizer step: its
	// size is the stages' weights, whatever the tokens per step.
	ReplicaBytesPerStep float64 `json:"replica_bytes_per_step,omitempty"`
	// ReplicaCompressionRatio is the fp32 bytes that sum stands for over
	// its wire bytes ([compression.replicas]; about 1 for none).
	ReplicaCompressionRatio float64 `json:"replica_compression_ratio,omitempty"`

	// Fault handling (issue: survive chaos).
	Failures        int     `json:"failures"`
	Recoveries      int     `json:"recoveries"`
	RecoverySeconds float64 `json:"recovery_seconds"`
	RejectedFrames  int     `json:"rejected_frames"`
	StepsRedone     int     `json:"steps_redone"`
	// FaultLog is every failure with its detection and recovery times.
	FaultLog []Fault `json:"fault_log,omitempty"`
	// Swarm is a swarm's churn (docs/swarm.md): nil without replicas.
	Swarm *SwarmCounts `json:"swarm,omitempty"`

	// Memory is each stage's planned memory (printed before the run) and,
	// where the stage had a process of its own, that process's peak RSS.
	Memory []StageMemory `json:"memory,omitempty"`

	ResumedFromStep int    `json:"resumed_from_step,omitempty"`
	Checkpoint      string `json:"checkpoint"`

	// What the run was, for the record: the hash of its ledger's last
	// entry (ledger.jsonl), of its resolved config, of its data, and the
	// code that ran it.
	LedgerHead  string `json:"ledger_head,omitempty"`
	ConfigHash  string `json:"config_sha256,omitempty"`
	DataHash    string `json:"data_sha256,omitempty"`
	CodeVersion string `json:"code_version,omitempty"`
}

// SwarmCounts are a swarm's comings and goings over a run.
type SwarmCounts struct {
	Joins  int `json:"joins"`  // peers admitted as replicas
	Leaves int `json:"leaves"` // replicas that left cleanly
	Drops  int `json:"drops"`  // replicas dropped for being slow
	Deaths int `json:"deaths"` // replicas lost (dead, unreachable)
	// MicroBatchesRedone counts micro-batch computations thrown away by
	// interrupted steps and done again (per stage, per micro-batch).
	MicroBatchesRedone int `json:"micro_batches_redone"`
	// State downloads by joiners: the bytes of state and of steps to
	// replay, the seconds the state took, and downloads restarted from
	// another replica.
	StateDownloadBytes   int64   `json:"state_download_bytes"`
	ReplayBytes          int64   `json:"replay_bytes"`
	StateDownloadSeconds float64 `json:"state_download_seconds"`
	DownloadRestarts     int     `json:"download_restarts"`
	// Rollbacks is how many times every stage went back to a snapshot
	// (only when a stage's last replica was lost).
	Rollbacks int `json:"rollbacks"`
	// Verify is the spot checks' account (docs/trust.md): nil without
	// verify.fraction.
	Verify *VerifyCounts `json:"verify,omitempty"`
}

// VerifyCounts are a run's spot checks.
type VerifyCounts struct {
	Checks int `json:"checks"` // (stage, micro-batch) outputs recomputed by another replica
	Failed int `json:"failed"` // of them, those whose hash differed from what was received
	// Bytes are the kept inputs sent from upstream senders to checkers
	// over the mesh links (wire frames: none when only the first stage,
	// whose input is the batch's tokens, is checked); ControlBytes the
	// control frames that ask for the checks and answer them, and the
	// received hashes in the step reports.
	Bytes        int64 `json:"bytes"`
	ControlBytes int64 `json:"control_bytes"`
	// Faulty are the keys evicted for failed checks.
	Faulty []Faulty `json:"faulty,omitempty"`
}

// Faulty is a peer found to have sent wrong outputs.
type Faulty struct {
	Peer   string `json:"peer"`
	Key    string `json:"key,omitempty"` // its identity key (hex); "" for the coordinator's own goroutines
	Stage  int    `json:"stage"`
	Step   int    `json:"step"` // 1-based
	Reason string `json:"reason"`
	// Its checks in the step it was evicted at: that attempt's work was
	// thrown away, so the ledger records them with no micro-batches.
	ChecksPassed int `json:"checks_passed,omitempty"`
	ChecksFailed int `json:"checks_failed,omitempty"`
}

// StageMemory is one stage's memory plan against what its process used.
type StageMemory struct {
	Stage int `json:"stage"`
	// The plan: weights and their gradients, AdamW's two moments, the
	// activations of every micro-batch in flight plus backward scratch.
	PlannedBytes    int64 `json:"planned_bytes"`
	WeightsBytes    int64 `json:"weights_and_grads_bytes"`
	OptimizerBytes  int64 `json:"optimizer_bytes"`
	ActivationBytes int64 `json:"activation_bytes"`
	// ProcessBytes is, where the stage has a process of its own, that
	// process's plan: PlannedBytes plus one serialized copy of the state
	// (checkpoints and snapshots make it) plus the runtime's overhead.
	ProcessBytes int64 `json:"process_planned_bytes,omitempty"`
	// PeakRSSBytes is the stage process's VmHWM (0: the stage shared the
	// coordinator's process); PeakOverPlan is its ratio to ProcessBytes.
	PeakRSSBytes int64   `json:"peak_rss_bytes,omitempty"`
	PeakOverPlan float64 `json:"peak_over_plan,omitempty"`
}

// Fault is one failure a run survived (or died of).
type Fault struct {
	Kind  string `json:"kind"`  // peer_dead, evicted, link_failure
	Stage int    `json:"stage"` // the stage whose peer or link failed
	Peer  string `json:"peer,omitempty"`
	Step  int    `json:"step"` // the step in progress (1-based)
	// DetectSeconds is from the failure (when it is known, e.g. an
	// injected kill) to its detection; RecoverySeconds from detection to
	// training again.
	DetectSeconds   float64 `json:"detect_seconds,omitempty"`
	RecoverySeconds float64 `json:"recovery_seconds"`
	ReplacedBy      string  `json:"replaced_by,omitempty"`
	RolledBackTo    int     `json:"rolled_back_to,omitempty"`
}
