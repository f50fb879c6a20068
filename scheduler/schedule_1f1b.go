package scheduler

// order1F1B: warm-up forwards (S-stage-1 in standard 1F1B, capped at M),
// then one forward / one backward, then the remaining backwards. Backwards
// run in micro-batch order, so the in-flight set is always a contiguous
// window of at most warm+1 micro-batches, and Slot = micro mod MaxInFlight
// never collides.
func order1F1B(micro, warm int) []Action {
	ops := make([]Action, 0, 2*micro)
	for j := range warm {
		ops = append(ops, Action{Kind: ActionForward, Micro: j})
	}
	for k := 0; k < micro-warm; k++ {
		ops = append(ops,
			Action{Kind: ActionForward, Micro: warm + k},
			Action{Kind: ActionBackward, Micro: k})
	}
	for k := micro - warm; k < micro; k++ {
		ops = append(ops, Action{Kind: ActionBackward, Micro: k})
	}
	return ops
}
