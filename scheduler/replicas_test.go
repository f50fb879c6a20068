package scheduler

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// replicasGolden are the (S, R, M) replica plans kept in testdata: the
// shape of the equivalence test, a chain of three, and an uneven share.
var replicasGolden = [][3]int{{2, 2, 4}, {2, 3, 6}, {1, 2, 5}}

// replicasTranscript is the readable plan of one step: per stage and
// replica, the micro-batches it computes and whom it sends to, then the
// order of the gradient sum.
func replicasTranscript(p Replicas) string {
	var b strings.Builder
	S, R := p.Stages(), p.Count()
	fmt.Fprintf(&b, "# %d stages × %d replicas, %d micro-batches a step: the same every step.\n", S, R, p.Micro())
	fmt.Fprintf(&b, "# sN.rK = replica K of stage N; worker = its control-link index; mj = micro-batch j of the step.\n")
	for i := 0; i < S; i++ {
		fmt.Fprintf(&b, "\nstage %d\n", i)
		for r := 0; r < R; r++ {
			var ms []string
			for _, m := range p.Micros(r) {
				ms = append(ms, fmt.Sprintf("m%d", m))
			}
			line := fmt.Sprintf("  s%d.r%d (worker %d): %s", i, r, p.Worker(i, r), strings.Join(ms, " "))
			if n := p.Next(i, r); n >= 0 {
				line += fmt.Sprintf("; activations -> s%d.r%d", i+1, n)
			}
			if q := p.Prev(i, r); q >= 0 {
				line += fmt.Sprintf("; gradients -> s%d.r%d", i-1, q)
			}
			b.WriteString(line + "\n")
		}
		var up, down, sum []string
		for r := 0; r < R; r++ {
			if to := p.SumTo(r); to >= 0 {
				up = append(up, fmt.Sprintf("r%d->r%d", r, to))
			}
			if from := p.SumFrom(R - 1 - r); from >= 0 {
				down = append(down, fmt.Sprintf("r%d->r%d", R-1-r, from))
			}
		}
		sum = append(sum, "g0")
		for r := 1; r < R; r++ {
			sum[0] = fmt.Sprintf("(%s + g%d)", sum[0], r)
		}
		if R == 1 {
			b.WriteString("  gradient sum: none (one replica)\n")
			continue
		}
		fmt.Fprintf(&b, "  gradient sum %s: partial sums %s, the total back %s\n", sum[0], strings.Join(up, " "), strings.Join(down, " "))
	}
	return b.String()
}

func TestGoldenReplicas(t *testing.T) {
	for _, sh := range replicasGolden {
		name := fmt.Sprintf("replicas_s%d_r%d_m%d.txt", sh[0], sh[1], sh[2])
		t.Run(name, func(t *testing.T) {
			p, err := NewReplicas(sh[0], sh[1], sh[2])
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", name), replicasTranscript(p))
		})
	}
}

// TestReplicasCoverEveryMicroBatchOnce: each micro-batch of a step is
// computed by exactly one replica of each stage, and each lane hands it to
// the replica of the next stage that computes it (so no micro-batch is
// lost, doubled, or sent to a replica waiting for another).
func TestReplicasCoverEveryMicroBatchOnce(t *testing.T) {
	for _, sh := range [][3]int{{1, 1, 1}, {2, 2, 4}, {3, 2, 5}, {4, 3, 3}, {2, 4, 9}} {
		t.Run(fmt.Sprintf("S=%d/R=%d/M=%d", sh[0], sh[1], sh[2]), func(t *testing.T) {
			p, err := NewReplicas(sh[0], sh[1], sh[2])
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < p.Stages(); i++ {
				seen := make([]int, p.Micro())
				for r := 0; r < p.Count(); r++ {
					ms := p.Micros(r)
					if len(ms) == 0 {
						t.Errorf("stage %d replica %d computes nothing", i, r)
					}
					for _, m := range ms {
						seen[m]++
						if o := p.Owner(m); o != r {
							t.Errorf("micro-batch %d: Micros puts it on replica %d, Owner says %d", m, r, o)
						}
						if n := p.Next(i, r); n >= 0 && p.Owner(m) != n {
							t.Errorf("stage %d replica %d sends micro-batch %d to replica %d of stage %d, which does not compute it", i, r, m, n, i+1)
						}
					}
				}
				for m, n := range seen {
					if n != 1 {
						t.Errorf("stage %d: micro-batch %d computed %d times", i, m, n)
					}
				}
			}
			for k := 0; k < p.Stages()*p.Count(); k++ {
				if got := p.Worker(p.StageOf(k), p.ReplicaOf(k)); got != k {
					t.Errorf("worker %d: stage %d replica %d maps back to %d", k, p.StageOf(k), p.ReplicaOf(k), got)
				}
			}
		})
	}
}

// TestReplicasAgreeWithMembershipRoute: the runtime's plan is what the
// membership machine routes when every replica has the same weight, so the
// two cannot drift apart as the swarm grows.
func TestReplicasAgreeWithMembershipRoute(t *testing.T) {
	const S, R, M = 2, 3, 7
	layout, err := NewLayout([]Range{{0, 1}, {1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	holders := []string{"a0", "b0"}
	more := [][]string{{"a1", "a2"}, {"b1", "b2"}}
	m, err := NewMembership(MembershipConfig{Layout: layout, Holders: holders, Replicas: more, TimeoutTicks: 1, MaxRejects: 1, SnapshotEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewReplicas(S, R, M)
	if err != nil {
		t.Fatal(err)
	}
	names := m.Replicas()
	for i, route := range m.Route(M) {
		for j, h := range route {
			if want := names[i][p.Owner(j)]; h != want {
				t.Errorf("stage %d micro-batch %d: Route names %s, the plan replica %d (%s)", i, j, h, p.Owner(j), want)
			}
		}
	}
}

func TestNewReplicasRefusesBadShapes(t *testing.T) {
	for _, sh := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {2, 3, 2}} {
		if _, err := NewReplicas(sh[0], sh[1], sh[2]); !errors.Is(err, ErrBadShape) {
			t.Errorf("NewReplicas(%v): %v, want ErrBadShape", sh, err)
		}
	}
}
