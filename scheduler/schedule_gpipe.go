package scheduler

// orderGPipe: F0..F(M-1), then B(M-1)..B0. Reverse order is what GPipe
// (and torchgpipe, which backpropagates through the concatenated batch)
// does. It costs nothing in bubble — the last stage can start a backward
// right after its last forward either way — and it lets the last stage
// begin backward on the micro-batch whose activations it touched last, so
// they are still in cache.
func orderGPipe(micro int) []Action {
	ops := make([]Action, 0, 2*micro)
	for j := range micro {
		ops = append(ops, Action{Kind: ActionForward, Micro: j})
	}
	for j := micro - 1; j >= 0; j-- {
		ops = append(ops, Action{Kind: ActionBackward, Micro: j})
	}
	return ops
}
