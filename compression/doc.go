// Package compression holds the codecs that shrink what crosses each pipeline
// boundary: the residual-stream activations going forward and the gradients
// with respect to them coming back. Both are rows×cols float32 matrices
// (rows = tokens in the micro-batch, B·T; cols = model width d), row-major.
//
// Data flow on one link direction:
//
//	x (rows×cols float32)
//	  ─► Codec.Encode            lossy or lossless payload, self-describing
//	  ─► Compress (optional)     lz4 over byte planes; kept only if it shrinks
//	  ─► frame (internal/wire)   header carries the codec ID and the lz4 flag
//	  ─► Decompress / Codec.Decode on the receiver
//
// LinkCodec bundles the first two steps and returns the lz4 flag for the frame
// header. The payload of every codec carries the parameters the receiver
// needs (rank, k, block size, precision), so the receiver never has to be told
// about a rank change the sender made: only the codec ID and rows×cols come
// from the frame.
//
// Codecs are pure functions plus explicit state where memory is needed:
// TopK and LowRank keep an error-feedback residual (and LowRank a warm-start
// basis) inside the codec value, so use one codec value per link direction
// and never share it between goroutines. Nothing here starts a goroutine;
// the dense products of lowrank and subspace go through stages/kernels.Sgemm,
// whose worker pool kernels.SetThreads bounds.
//
// Methods:
//
//   - none: raw little-endian float32 (ID 0 means "no codec" in a frame).
//
//   - fp16, bf16: IEEE half / bfloat16 with round-to-nearest-even.
//
//   - int8: blockwise absmax quantization (as SWARM does).
//
//   - topk: the k largest magnitudes with error feedback.
//
//   - lowrank: PowerSGD-style rank-r factors P (rows×r), Q (cols×r), warm-started,
//     with error feedback.
//
//   - subspace: Protocol Models (arXiv 2506.01260): a fixed orthonormal basis U
//     (d×k) and fixed token embeddings E0 derived from the run seed; forward
//     sends token ids plus c = Uᵀ(h − E0[tok]), backward sends Uᵀg. See
//     Subspace and the TokenCodec interface. Coefficients in fp32, fp16,
//     bf16, int8, or packed int6/int4/int3/int2 with a bf16 scale per token
//     (lowbit.go): the loss gap comes from k far more than from precision, so
//     fewer bits buy a larger k at the same bytes (k=56 int4 ≈ k=26 int8 ≈
//     31 B/token at d=256).
//
//   - subspace-tc (wire ID 7): the subspace coefficients transform-coded
//     (codec_subspace_tc.go): closed-loop per-id predictors (input token
//     forward, with a second one per position; target token backward), a
//     rotation to the principal axes of decoded residuals (derived by both
//     ends from decoded data with FMA-proof float64 Jacobi, or sent as fp16),
//     one uniform step per message, and rANS (rans.go) under per-message
//     Laplace/Gaussian models per rotated dimension (tc_model.go). It is
//     stateful at both ends, so it is not a Codec: each link direction has a
//     TCEncoder at the sender and a TCDecoder at the receiver (NewTCPair),
//     whose state (tc_state.go) both advance per message, checksum in every
//     payload (ErrDesync on a mismatch) and Snapshot/Restore/Reset with the
//     run's steps. docs/compression-tc.md has the measurements.
//
// The gradient sum among a stage's replicas has codecs of its own
// (reduce.go, [compression.replicas]): chunks of a partial or total sum in
// float32, scaled fp16 or blockwise int8 (AppendReduceChunk,
// DecodeReduceChunk), a replica's error-feedback memory (Feedback), and a
// replica's side of a PowerSGD sum (PowerSGD), whose two sums over the
// replicas the runtime runs. The runtime's chain decodes every coded
// partial sum before adding to it and has every replica use the decoded
// total, so replicas end with the same bits.
//
// AutoRank is a pure controller that picks the (rank, precision) setting whose
// transfer time fits under the sending stage's compute time.
package compression
