package scheduler

import (
	"fmt"
	"testing"
)

// BenchmarkStageMachine drives every stage of a pipeline through whole
// steps with zero-time messages: the scheduler's own overhead per action,
// which the runtime pays on every forward and backward.
func BenchmarkStageMachine(b *testing.B) {
	for _, kind := range kinds {
		for _, sm := range [][2]int{{4, 8}, {32, 64}} {
			S, M := sm[0], sm[1]
			b.Run(fmt.Sprintf("schedule=%v/S=%d/M=%d", kind, S, M), func(b *testing.B) {
				ms := make([]*StageMachine, S)
				for s := range S {
					ms[s], _ = NewStageMachine(kind, S, M, s)
				}
				var inbox []Message
				actions := 0
				b.ReportAllocs()
				for b.Loop() {
					done := 0
					for done < S {
						done = 0
						for _, m := range ms {
							for {
								a := m.Next()
								if a.Kind == ActionWait {
									break
								}
								if a.Kind == ActionDone {
									done++
									break
								}
								if err := m.Step(Completed(a)); err != nil {
									b.Fatal(err)
								}
								actions++
								inbox = append(inbox, m.Sends(a)...)
							}
						}
						for _, msg := range inbox {
							if err := ms[msg.To].Step(Arrived(msg)); err != nil {
								b.Fatal(err)
							}
						}
						inbox = inbox[:0]
					}
					for _, m := range ms {
						if err := m.Advance(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(actions), "ns/action")
			})
		}
	}
}

// BenchmarkAsyncMachine is the async machine's own overhead per action,
// driving every stage with zero-time messages through whole runs.
func BenchmarkAsyncMachine(b *testing.B) {
	for _, sh := range [][3]int{{4, 8, 2}, {32, 64, 2}} {
		S, M, D := sh[0], sh[1], sh[2]
		b.Run(fmt.Sprintf("S=%d/M=%d/D=%d", S, M, D), func(b *testing.B) {
			const steps = 4
			p := Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}
			actions := 0
			b.ReportAllocs()
			for b.Loop() {
				ms := make([]*AsyncMachine, S)
				for s := range S {
					ms[s], _ = NewAsyncMachine(p, s, steps)
				}
				var inbox []Message
				for done := 0; done < S; {
					done = 0
					for _, m := range ms {
						for {
							a := m.Next()
							if a.Kind == ActionWait {
								break
							}
							if a.Kind == ActionDone {
								done++
								break
							}
							_ = m.Step(Completed(a))
							inbox = append(inbox, m.Sends(a)...)
							actions++
						}
					}
					for _, msg := range inbox {
						_ = ms[msg.To].Step(Arrived(msg))
					}
					inbox = inbox[:0]
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(actions), "ns/action")
		})
	}
}
