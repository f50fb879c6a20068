package scheduler

import (
	"fmt"
	"slices"
	"sort"
)

// The swarm part of the membership machine: stages held by several
// replicas, peers that join a running run (synced from a live replica, then
// admitted at a step boundary), leave it (dropped at a step boundary), die
// (dropped; the step is redone without them, no stage rolls back), or are
// too slow (first given fewer micro-batches, then dropped back to the
// spares, with the reason), and the routing of each step's micro-batches
// over the replicas.
//
// Joining, syncing and leaving run beside training: their commands come in
// Ready.Background, which the runtime starts without waiting for them and
// answers with ReportDone (or ReportSyncFailed) whenever they end.

// swarm is the machine's account of replicas coming and going.
type swarm struct {
	joining  map[string]int      // holder → the stage it is syncing for
	from     map[string]string   // joining holder → the replica it syncs from
	synced   map[string]bool     // joining holders ready to be admitted
	leaving  map[string]string   // holder → why it is to be dropped at the next step
	rate     map[string]float64  // holder → its latest micro-batches per compute-second
	slow     map[string]int      // holder → consecutive slow reports
	weight   map[string]float64  // holder → routing weight (1 unless demoted)
	bg       map[int]*Command    // background commands by ID
	moved    map[string][]string // holder → why it was dropped (for the notes)
	routeGen int
}

func newSwarm() swarm {
	return swarm{joining: map[string]int{}, from: map[string]string{}, synced: map[string]bool{}, leaving: map[string]string{},
		rate: map[string]float64{}, slow: map[string]int{}, weight: map[string]float64{}, bg: map[int]*Command{}, moved: map[string][]string{}}
}

// busy reports whether id is joining (so not a free spare).
func (s *swarm) busy(id string) bool { _, ok := s.joining[id]; return ok }

// forget drops what the swarm knows of a holder that left the stages.
func (s *swarm) forget(id string) {
	delete(s.leaving, id)
	delete(s.rate, id)
	delete(s.slow, id)
	delete(s.weight, id)
}

// holderOf is the holder a report is about: its Holder, or the first
// replica of its stage.
func (m *Membership) holderOf(r Report) string {
	if r.Holder != "" {
		return r.Holder
	}
	if r.Stage >= 0 && r.Stage < len(m.reps) && len(m.reps[r.Stage]) > 0 {
		return m.reps[r.Stage][0]
	}
	return ""
}

// join places a spare that just joined (or a peer dropped for being slow)
// on the stage that most needs it, if the run places joiners (Config.Join).
func (m *Membership) join(id string) {
	if !m.cfg.Join || m.rec != nil || m.failed[id] || m.holds(id) || m.swarm.busy(id) {
		return
	}
	if len(m.Spares()) <= m.cfg.KeepSpares {
		return // kept as a spare (this one counts among them)
	}
	stage := m.neediest()
	if stage < 0 || len(m.reps[stage]) == 0 {
		return // a vacant stage is the recovery's to fill
	}
	m.swarm.joining[id] = stage
	m.swarm.from[id] = m.reps[stage][0]
	m.note(Note{Kind: NoteJoining, Stage: stage, Holder: id, Peer: -1})
	m.background(Command{Kind: CmdSync, Stage: stage, Holder: id, Peer: -1, Holders: []string{m.reps[stage][0]}})
}

// neediest is the stage a joiner should take: the one with the least
// measured throughput per replica (micro-batches per second over its
// replicas; unmeasured replicas count as the stage's measured ones), ties
// to fewer replicas, then the lower stage.
func (m *Membership) neediest() int {
	best, bestRate, bestN := -1, 0.0, 0
	for i, reps := range m.reps {
		if len(reps) == 0 {
			continue
		}
		n := len(reps)
		for id := range m.swarm.joining {
			if m.swarm.joining[id] == i {
				n++ // already being reinforced
			}
		}
		sum, k := 0.0, 0
		for _, h := range reps {
			if r, ok := m.swarm.rate[h]; ok {
				sum += r
				k++
			}
		}
		per := 0.0
		if k > 0 {
			per = sum / float64(k) * float64(len(reps)) / float64(n)
		}
		if best < 0 || per < bestRate || (per == bestRate && n < bestN) {
			best, bestRate, bestN = i, per, n
		}
	}
	return best
}

// background issues a command the runtime carries out beside training.
func (m *Membership) background(c Command) {
	m.nextID++
	c.ID = m.nextID
	m.swarm.bg[c.ID] = &c
	m.ready.Background = append(m.ready.Background, c)
}

// backgroundDone handles the end of a background command.
func (m *Membership) backgroundDone(c Command) {
	delete(m.swarm.bg, c.ID)
	switch c.Kind {
	case CmdSync:
		if _, ok := m.swarm.joining[c.Holder]; ok {
			m.swarm.synced[c.Holder] = true
			m.note(Note{Kind: NoteSynced, Stage: c.Stage, Holder: c.Holder, Peer: -1})
		}
	}
}

// syncFailed is a joiner whose download broke: it goes on from another live
// replica of its stage (the runtime resumes where it stopped), or waits as
// a spare if none is left.
func (m *Membership) syncFailed(holder, why string) {
	stage, ok := m.swarm.joining[holder]
	if !ok {
		return
	}
	for id, c := range m.swarm.bg {
		if c.Kind == CmdSync && c.Holder == holder {
			delete(m.swarm.bg, id)
		}
	}
	var src string
	for _, h := range m.reps[stage] {
		if h != m.swarm.from[holder] && !m.failed[h] {
			src = h
			break
		}
	}
	if src == "" && len(m.reps[stage]) > 0 && !m.failed[m.reps[stage][0]] {
		src = m.reps[stage][0]
	}
	m.note(Note{Kind: NoteSyncBroke, Stage: stage, Holder: holder, Peer: -1, Err: why})
	if src == "" {
		delete(m.swarm.joining, holder)
		delete(m.swarm.from, holder)
		return
	}
	m.swarm.from[holder] = src
	m.background(Command{Kind: CmdSync, Stage: stage, Holder: holder, Peer: -1, Holders: []string{src}, Err: "resume"})
}

// boundary is what happens between two steps: synced joiners are
// admitted, leaving and demoted-for-good replicas dropped.
func (m *Membership) boundary(step int) {
	var admit []string
	for id := range m.swarm.synced {
		admit = append(admit, id)
	}
	sort.Strings(admit)
	for _, id := range admit {
		stage := m.swarm.joining[id]
		delete(m.swarm.synced, id)
		delete(m.swarm.joining, id)
		delete(m.swarm.from, id)
		if len(m.reps[stage]) == 0 {
			continue // its stage was lost meanwhile: it was synced from the dead
		}
		m.reps[stage] = append(m.reps[stage], id)
		m.silent[id] = 0
		m.counts.Joins++
		m.note(Note{Kind: NoteJoined, Stage: stage, Holder: id, Peer: -1, Step: step})
		m.issue(Command{Kind: CmdAdmit, Stage: stage, Holder: id, Peer: -1, Holders: slices.Clone(m.reps[stage])})
	}
	var drop []string
	for id := range m.swarm.leaving {
		drop = append(drop, id)
	}
	sort.Strings(drop)
	for _, id := range drop {
		why := m.swarm.leaving[id]
		stage := m.stageOf(id)
		if stage < 0 || len(m.reps[stage]) < 2 {
			continue // the last replica stays until a spare takes over (or it dies)
		}
		m.reps[stage] = slices.DeleteFunc(m.reps[stage], func(h string) bool { return h == id })
		m.swarm.forget(id)
		delete(m.silent, id)
		kind := NoteLeft
		if why != "left" {
			kind = NoteDropped
			m.counts.Drops++
		} else {
			m.counts.Leaves++
		}
		m.note(Note{Kind: kind, Stage: stage, Holder: id, Peer: -1, Err: why, Step: step})
		m.issue(Command{Kind: CmdDrop, Stage: stage, Holder: id, Peer: -1, Holders: slices.Clone(m.reps[stage]), Err: why})
		if why != "left" {
			// A slow replica goes back to the spares: it may serve
			// another stage better.
			m.swarm.moved[id] = append(m.swarm.moved[id], why)
		}
	}
}

// leave is a replica asking to go (a closed browser tab, a peer stopped
// with Ctrl-C): it is dropped at the next step boundary. The last replica
// of a stage goes as a dead one would, through the spare/snapshot path,
// when it is gone.
func (m *Membership) leave(holder string) {
	if m.stageOf(holder) < 0 {
		delete(m.swarm.joining, holder)
		return
	}
	m.swarm.leaving[holder] = "left"
}

// rate takes a replica's measured speed and demotes one that stays slow:
// below Config.SlowFraction of its stage's median rate for
// Config.SlowSteps reports it gets half the micro-batches; as long again,
// it is dropped (back to the spares) at the next boundary.
func (m *Membership) rate(holder string, r float64) {
	stage := m.stageOf(holder)
	if stage < 0 || !(r >= 0) {
		return
	}
	m.swarm.rate[holder] = r
	if m.cfg.SlowFraction <= 0 || len(m.reps[stage]) < 2 {
		return
	}
	var rs []float64
	for _, h := range m.reps[stage] {
		if x, ok := m.swarm.rate[h]; ok {
			rs = append(rs, x)
		}
	}
	if len(rs) < len(m.reps[stage]) {
		return // not every replica measured yet
	}
	sort.Float64s(rs)
	median := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		median = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	if r >= m.cfg.SlowFraction*median {
		m.swarm.slow[holder] = 0
		return
	}
	m.swarm.slow[holder]++
	n := m.swarm.slow[holder]
	switch {
	case n == m.cfg.SlowSteps && m.weight(holder) == 1:
		m.swarm.weight[holder] = 0.5
		m.swarm.slow[holder] = 0
		m.note(Note{Kind: NoteDemoted, Stage: stage, Holder: holder, Peer: -1, Err: fmt.Sprintf("%.3g micro-batches/s, below %.2g × the stage's median %.3g for %d steps: half the micro-batches", r, m.cfg.SlowFraction, median, n)})
	case n == m.cfg.SlowSteps:
		m.swarm.leaving[holder] = fmt.Sprintf("slow: %.3g micro-batches/s, below %.2g × the stage's median %.3g for %d more steps after its demotion", r, m.cfg.SlowFraction, median, n)
	}
}

func (m *Membership) weight(holder string) float64 {
	if w, ok := m.swarm.weight[holder]; ok {
		return w
	}
	return 1
}

// Route assigns the M micro-batches of a step to each stage's replicas:
// route[i][j] is the holder that computes micro-batch j on stage i. It is a
// smooth weighted round-robin over the replicas in admission order (weight
// 1, or ½ once demoted; Config.RouteByRate uses the measured rates
// instead), so with equal weights micro-batch j goes to replica j mod R,
// and the same config always routes the same way.
func (m *Membership) Route(M int) [][]string {
	route := make([][]string, len(m.reps))
	for i, reps := range m.reps {
		route[i] = make([]string, M)
		if len(reps) == 0 {
			continue
		}
		w := make([]float64, len(reps))
		for k, h := range reps {
			w[k] = m.weight(h)
			if m.cfg.RouteByRate {
				if r, ok := m.swarm.rate[h]; ok && r > 0 {
					w[k] *= r
				}
			}
		}
		cur := make([]float64, len(reps))
		var total float64
		for _, x := range w {
			total += x
		}
		for j := 0; j < M; j++ {
			best := 0
			for k := range reps {
				cur[k] += w[k]
				if cur[k] > cur[best] {
					best = k
				}
			}
			cur[best] -= total
			route[i][j] = reps[best]
		}
	}
	return route
}
