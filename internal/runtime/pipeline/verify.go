package pipeline

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/scheduler"
)

// Spot checks on the driver's side (docs/trust.md). Once every replica
// has reported a step (so every output it will be judged by has been
// sent), the driver draws a seed from crypto/rand and picks a share
// verify.fraction of the (stage, micro-batch) forward outputs of every
// stage that sends activations and has another replica. For each, another
// replica of the stage recomputes the output from the same input — the
// kept frame of the upstream sender, passed over their own link, or on
// the first stage the batch's tokens, which every replica holds — and the
// hash of its encoding is compared with the hash the receiver reported
// of what it got. The weights have not moved (the apply has not been
// sent), so an honest output gives the same bits. A mismatch is a
// failure like a lost replica: the membership machine aborts the attempt
// and redoes it, and evicts the replica after verify.max_mismatches.

// verifyDrive is the driver's account of the checks.
type verifyDrive struct {
	fraction float64
	counts   metrics.VerifyCounts
	// of is the step whose attempts node → [passed, failed] counts.
	of      int
	checked map[int][2]int
	// faulty are the evicted peers not yet in a step's result.
	faulty []metrics.Faulty
}

func newVerifyDrive(fraction float64) *verifyDrive {
	return &verifyDrive{fraction: fraction, of: -1, checked: map[int][2]int{}}
}

// check is one output to recompute.
type check struct {
	stage, micro       int
	node, checker      int
	upstream, receiver int // upstream -1: the first stage, from tokens
}

// pickChecks draws the step's checks.
func pickChecks(rng *rand.Rand, fraction float64, chains, route [][]int) []check {
	var out []check
	S := len(chains)
	for i := 0; i+1 < S; i++ {
		ch := chains[i]
		if len(ch) < 2 {
			continue // nobody else holds the stage's weights
		}
		for j, k := range route[i] {
			if rng.Float64() >= fraction {
				continue
			}
			at := slices.Index(ch, k)
			q := ch[(at+1+rng.IntN(len(ch)-1))%len(ch)]
			up := -1
			if i > 0 {
				up = route[i-1][j]
			}
			out = append(out, check{stage: i, micro: j, node: k, checker: q, upstream: up, receiver: route[i+1][j]})
		}
	}
	return out
}

// spotCheck runs the step's checks between its reports and its apply; a
// mismatch is a *failure (ReportMismatch) naming the replica checked.
func (p *Driver) spotCheck(ctx context.Context, step int, chains, route [][]int, reps []ctrlMsg) error {
	v := p.vf
	if v == nil {
		return nil
	}
	if v.of != step {
		v.of, v.checked = step, map[int][2]int{}
	}
	var seed [16]byte
	crand.Read(seed[:]) // never fails (Go 1.24+)
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:]), binary.LittleEndian.Uint64(seed[8:])))
	for _, r := range reps {
		if len(r.Hashes) > 0 {
			b, _ := json.Marshal(r.Hashes)
			v.counts.ControlBytes += int64(len(b) + len(`,"hashes":`))
		}
	}
	checks := pickChecks(rng, v.fraction, chains, route)
	if len(checks) == 0 {
		return nil
	}
	hashes, err := p.runChecks(ctx, step, checks)
	if err != nil {
		return err
	}
	var bad *check
	var want, have uint64
	for n, c := range checks {
		h := reps[c.receiver].Hashes
		if len(h) != len(route[0]) || h[c.micro] == 0 {
			return fmt.Errorf("pipeline: %s received micro-batch %d of stage %d but reported no hash of it (a bug)", p.holders[c.receiver], c.micro, c.stage)
		}
		v.counts.Checks++
		pf := v.checked[c.node]
		if hashes[n] == h[c.micro] {
			pf[0]++
		} else {
			pf[1]++
			v.counts.Failed++
			if bad == nil {
				bad, want, have = &checks[n], hashes[n], h[c.micro]
			}
		}
		v.checked[c.node] = pf
	}
	if bad == nil {
		return nil
	}
	c := *bad
	suspect := c.node
	detail := map[string]any{"stage": c.stage, "micro": c.micro, "peer": p.holders[c.node], "key": string(p.place.Key(p.holders[c.node])),
		"checker": p.holders[c.checker], "receiver": p.holders[c.receiver], "received": fmt.Sprintf("%016x", have), "recomputed": fmt.Sprintf("%016x", want)}
	why := fmt.Sprintf("its output of micro-batch %d as %s received it hashes %016x; %s recomputed %016x", c.micro, p.holders[c.receiver], have, p.holders[c.checker], want)
	// A checker could lie too, to have an honest replica evicted: where
	// the stage has a third replica, it referees. If its recomputation is
	// what the receiver got, the checker is the one that lied.
	if others := slices.DeleteFunc(slices.Clone(chains[c.stage]), func(k int) bool { return k == c.node || k == c.checker }); len(others) > 0 {
		r := c
		r.checker = others[rng.IntN(len(others))]
		got, err := p.runChecks(ctx, step, []check{r})
		if err != nil {
			return err
		}
		v.counts.Checks++
		detail["referee"], detail["refereed"] = p.holders[r.checker], fmt.Sprintf("%016x", got[0])
		if got[0] == have {
			// The checked replica's output stands; the checker's check
			// of it is the failed one.
			pf := v.checked[c.node]
			pf[0], pf[1] = pf[0]+1, pf[1]-1
			v.checked[c.node] = pf
			pf = v.checked[c.checker]
			pf[1]++
			v.checked[c.checker] = pf
			suspect = c.checker
			detail["accused"] = p.holders[c.node]
			detail["peer"], detail["key"] = p.holders[c.checker], string(p.place.Key(p.holders[c.checker]))
			why = fmt.Sprintf("its recomputation of micro-batch %d of %s hashes %016x, but what %s received, %016x, is what %s recomputed", c.micro, p.holders[c.node], want, p.holders[c.receiver], have, p.holders[r.checker])
		}
	}
	p.event("verify_mismatch", step, detail)
	return &failure{rep: scheduler.Report{Kind: scheduler.ReportMismatch, Stage: c.stage, Holder: p.holders[suspect], Err: why}}
}

// runChecks has the checkers recompute checks and returns their hashes,
// in the checks' order. First every upstream sender passes its kept
// frames on (sending never waits), then every checker recomputes: no
// checker waits on a node that waits itself.
func (p *Driver) runChecks(ctx context.Context, step int, checks []check) ([]uint64, error) {
	v := p.vf
	serve := map[int]*ctrlMsg{}
	recomp := map[int]*ctrlMsg{}
	for _, c := range checks {
		if c.upstream >= 0 {
			m := serve[c.upstream]
			if m == nil {
				m = &ctrlMsg{Kind: ctrlVerifyServe, Step: step}
				serve[c.upstream] = m
			}
			m.Micros, m.Nodes = append(m.Micros, c.micro), append(m.Nodes, c.checker)
		}
		m := recomp[c.checker]
		if m == nil {
			m = &ctrlMsg{Kind: ctrlVerify, Step: step}
			recomp[c.checker] = m
		}
		m.Micros, m.Nodes = append(m.Micros, c.micro), append(m.Nodes, c.upstream)
	}
	ask := func(cmds map[int]*ctrlMsg) ([]ctrlMsg, error) {
		var nodes []int
		for k, m := range cmds {
			if err := p.send(ctx, k, *m); err != nil {
				return nil, err
			}
			nodes = append(nodes, k)
			v.counts.ControlBytes += ctrlSize(*m)
		}
		got, err := p.collectFrom(ctx, ctrlOK, nodes)
		for _, k := range nodes {
			v.counts.ControlBytes += ctrlSize(got[k])
		}
		return got, err
	}
	if len(serve) > 0 {
		got, err := ask(serve)
		if err != nil {
			return nil, err
		}
		for k := range serve {
			v.counts.Bytes += got[k].Count
		}
	}
	got, err := ask(recomp)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(checks))
	seen := map[int]int{} // checker → its replies used
	for n, c := range checks {
		r := got[c.checker].Hashes
		if seen[c.checker] >= len(r) {
			return nil, fmt.Errorf("pipeline: checker %s returned %d hashes, asked for more (a bug)", p.holders[c.checker], len(r))
		}
		out[n] = r[seen[c.checker]]
		seen[c.checker]++
	}
	return out, nil
}

// ctrlSize is a control message's frame size.
func ctrlSize(m ctrlMsg) int64 {
	b, err := encodeCtrl(m)
	if err != nil {
		return 0
	}
	return int64(len(b))
}

// evicted records a replica the machine evicted for failed checks.
func (p *Driver) evicted(n scheduler.Note, step int) {
	if p.vf == nil {
		return
	}
	f := metrics.Faulty{Peer: n.Holder, Key: string(p.place.Key(n.Holder)), Stage: n.Stage, Step: step + 1, Reason: n.Err}
	p.vf.counts.Faulty = append(p.vf.counts.Faulty, f)
	p.vf.faulty = append(p.vf.faulty, f)
}

// annotate puts the step's checks on its replicas' entries, and the peers
// evicted since the last step on its result.
func (p *Driver) annotate(step int, stats []metrics.StageStats) []metrics.Faulty {
	v := p.vf
	if v == nil {
		return nil
	}
	if v.of == step {
		for i := range stats {
			if k, ok := p.sw.node[stats[i].Peer]; ok {
				stats[i].ChecksPassed, stats[i].ChecksFailed = v.checked[k][0], v.checked[k][1]
			}
		}
	}
	// A replica evicted in this step has no entry: its checks go with
	// its eviction.
	f := v.faulty
	v.faulty = nil
	for i := range f {
		if k, ok := p.sw.node[f[i].Peer]; ok && v.of == step {
			f[i].ChecksPassed, f[i].ChecksFailed = v.checked[k][0], v.checked[k][1]
		}
		for j := range v.counts.Faulty {
			if c := &v.counts.Faulty[j]; c.Peer == f[i].Peer && c.Step == f[i].Step {
				c.ChecksPassed, c.ChecksFailed = f[i].ChecksPassed, f[i].ChecksFailed
			}
		}
	}
	return f
}

// verifyCounts are the run's checks so far; nil without them.
func (p *Driver) verifyCounts() *metrics.VerifyCounts {
	if p.vf == nil {
		return nil
	}
	c := p.vf.counts
	return &c
}

// injectLie makes replica e.Replica of stage e.Stage lie from now on.
func (p *Driver) injectLie(ctx context.Context, stage, replica int, share, scale float64, checks bool) error {
	ch := p.chains()[stage]
	if replica >= len(ch) {
		p.log.Warn("a lie names a replica the stage does not have; skipped", "stage", stage, "replica", replica, "replicas", len(ch))
		return nil
	}
	k := ch[replica]
	if err := p.send(ctx, k, ctrlMsg{Kind: ctrlLie, Share: share, Scale: float32(scale), Checks: checks}); err != nil {
		return err
	}
	_, err := p.collectFrom(ctx, ctrlOK, []int{k})
	return err
}
