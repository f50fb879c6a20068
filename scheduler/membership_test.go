package scheduler

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A membership scenario is a script of what the runtime observes, one
// report per line; the transcript interleaves each line (after "> ") with
// what the machine then says (notes, and commands with their IDs).
//
//	joined NAME                 a spare joins
//	step N                      step N is about to run
//	snapshot N                  the runtime holds a snapshot of step N
//	tick N [quiet S...]         N heartbeat intervals, every holder heard
//	                            in each but those of the quiet stages
//	lost S @N [applied]         stage S's control link broke during an
//	                            operation at step N
//	linkdown S P @N [applied]   stage S's link to P failed
//	rejected S P @N [applied]   stage S rejected a frame from P
//	interrupted @N [applied]    the runtime stopped its operation at step N
//	done                        the outstanding command was carried out
//	spare-failed NAME           that spare could not be set up
//	lost-replica NAME S @N [applied]  replica NAME of stage S died
//	left NAME                   NAME asks to leave
//	rate NAME R                 NAME ran at R micro-batches/s
//	synced NAME                 NAME's background sync finished
//	sync-failed NAME            NAME's download broke
//	route M                     how the next step's M micro-batches are routed
type membershipScenario struct {
	name     string
	what     string // the transcript's title
	stages   int
	spares   []string
	handOver bool
	async    bool // MembershipConfig.Async
	script   string
	// The swarm's settings: further replicas per stage (named
	// peer-<stage>-<k>), joiners placed on stages, slow demotion.
	replicas   int
	join       bool
	keepSpares int // MembershipConfig.KeepSpares
	slow       float64
}

var membershipScenarios = []membershipScenario{
	{
		name: "swarm_join", stages: 2, replicas: 2, join: true, handOver: true,
		what: "a peer joins a running run of 2 stages × 2 replicas: it goes to the stage with the least throughput per replica, syncs from a live replica while the others train, and is admitted at the next step boundary; round-robin routing then spreads 4 micro-batches over 2 and 3 replicas",
		script: `
step 0
snapshot 0
route 4
rate peer-0 10
rate peer-0-1 10
rate peer-1 6
rate peer-1-1 6
joined newcomer
step 1
synced newcomer
step 2
done
route 4`,
	},
	{
		name: "swarm_leave", stages: 2, replicas: 2, handOver: true,
		what: "a replica of stage 0 leaves cleanly: it is dropped at the next step boundary, no recovery, nothing rolled back",
		script: `
step 0
snapshot 0
left peer-0-1
step 1
done
route 4`,
	},
	{
		name: "swarm_mismatch_evicts", stages: 2, replicas: 3,
		what: "spot checks of stage 0's replica peer-0-2 fail in steps 3 and 6 (verify.max_mismatches = 2): the first attempt is aborted and redone with it, the second evicts it and is redone by the other two; no rollback; an honest replica's count is its own",
		script: `
step 0
step 3
mismatch peer-0-2 0 @3
done
step 4
mismatch peer-1 1 @4
done
step 6
mismatch peer-0-2 0 @6
done
route 6`,
	},
	{
		name: "swarm_replica_dies", stages: 2, replicas: 2, handOver: true,
		what: "one of stage 1's two replicas dies during step 3: the attempt is aborted and redone by the survivors, no hand-over, no rollback; had the step been applied, it would stand",
		script: `
step 0
snapshot 0
step 3
lost-replica peer-1-1 1 @3
done
route 4
step 5
lost-replica peer-0-1 0 @5 applied
done`,
	},
	{
		name: "swarm_last_replica_dies", stages: 2, replicas: 2, spares: []string{"spare-a"}, handOver: true,
		what: "stage 1 loses one replica, then its last one: only then does the stage go to a spare through the snapshot path, and every stage rolls back",
		script: `
step 0
snapshot 0
step 2
lost-replica peer-1-1 1 @2
done
step 3
lost 1 @3
done
done
done`,
	},
	{
		name: "swarm_keeps_a_spare", stages: 2, replicas: 2, join: true, keepSpares: 1, handOver: true,
		what: "with one spare kept (pipeline.spares = 1), the first peer to join waits as a spare and the second is placed on a stage; when stage 1 then loses both its replicas, the kept spare takes it through the snapshot path",
		script: `
step 0
snapshot 0
joined early
joined late
step 1
lost-replica peer-1-1 1 @1
done
step 2
lost 1 @2
done
done
done`,
	},
	{
		name: "swarm_slow_replica", stages: 1, replicas: 3, handOver: true, slow: 0.5,
		what: "one of three replicas runs at a third of the others' rate: after 2 slow steps it gets half the micro-batches; 2 more and it is dropped back to the spares at the next boundary, with the reason",
		script: `
step 0
snapshot 0
route 6
rate peer-0 9
rate peer-0-1 9
rate peer-0-2 3
rate peer-0 9
rate peer-0-1 9
rate peer-0-2 3
route 6
rate peer-0-2 3
rate peer-0-2 3
step 1
done
route 6`,
	},
	{
		name: "swarm_join_while_source_dies", stages: 2, replicas: 2, join: true, handOver: true,
		what: "a peer syncs stage 0 from peer-0 when peer-0 is killed mid-download: the replica is lost (nothing rolls back), and the download goes on from the other replica, where it stopped",
		script: `
step 0
snapshot 0
joined newcomer
step 1
lost-replica peer-0 0 @1
sync-failed newcomer
done
synced newcomer
step 2
done
route 4`,
	},
	{
		name: "async_corrupt_in_process", stages: 2, async: true,
		what: "async pipeline in one process (no hand-over): snapshots are taken all the same; a rejected frame during step 6 cannot be redone in place (other steps are half applied), so every stage restores the snapshot of step 4 and the run goes back to it",
		script: `
step 0
snapshot 0
step 4
snapshot 4
step 6
rejected 1 0 @6
done
done`,
	},
	{
		name: "async_cut_link", stages: 3, async: true,
		what: "async pipeline over processes: the link 1-2 fails during step 5; it is re-established and every stage rolls back to the snapshot of step 4",
		script: `
step 0
snapshot 0
step 4
snapshot 4
step 5
linkdown 1 2 @5
done
done
done`,
	},
	{
		name: "async_kill_with_spare", stages: 4, spares: []string{"spare-a"}, handOver: true, async: true,
		what: "async pipeline over WebRTC: stage 2's peer dies during step 6; the spare takes the stage over and every stage rolls back to the snapshot of step 4, as with 1F1B",
		script: `
step 0
snapshot 0
step 4
snapshot 4
step 6
lost 2 @6
done
done
done`,
	},
	{
		name: "async_kill_in_process", stages: 2, async: true,
		what: "async pipeline over processes: a dead stage cannot be handed over, and the run fails saying so",
		script: `
step 0
snapshot 0
step 2
lost 1 @2`,
	},
	{
		name: "kill_with_spare", stages: 4, spares: []string{"spare-a"}, handOver: true,
		what: "stage 2's peer is SIGKILLed mid-step 6: its neighbours' links go silent first, then its heartbeats stop; the spare takes the stage over and every stage rolls back to the snapshot of step 4",
		script: `
step 0
snapshot 0
step 4
snapshot 4
step 6
tick 3 quiet 2
linkdown 1 2 @6
done
tick 5 quiet 2
done
done
done`,
	},
	{
		name: "kill_detected_by_silence", stages: 3, spares: []string{"spare-a"}, handOver: true,
		what: "stage 1's peer stops answering during step 2 while its links stay quiet (nothing was in flight): the driver's ticks find it silent for the peer timeout; the runtime stops its operation, the spare takes over, and the run rolls back",
		script: `
step 0
snapshot 0
step 2
tick 5 quiet 1
done
done
done`,
	},
	{
		name: "kill_without_spare_waits", stages: 2, handOver: true,
		what: "stage 1's peer dies and no spare is in the room: the run says it waits; a peer that joins while it waits takes the stage over",
		script: `
step 0
snapshot 0
lost 1 @3 applied
done
tick 4
joined newcomer
done
done`,
	},
	{
		name: "kill_in_process", stages: 2,
		what: "a stage dies where stages cannot change hands (goroutines, processes): the run stops and says why",
		script: `
lost 1 @3`,
	},
	{
		name: "cut_shorter_than_timeout", stages: 2, handOver: true,
		what: "the link 0-1 drops everything for a while shorter than the peer timeout: both ends keep heartbeating the coordinator, the link is re-established and the step redone; nobody is declared dead",
		script: `
step 0
snapshot 0
step 3
linkdown 0 1 @3
done
tick 2
linkdown 0 1 @3
done
tick 2
done`,
	},
	{
		name: "cut_longer_than_timeout", stages: 2, handOver: true,
		what: "the same cut lasting three peer timeouts (TimeoutTicks = 4): every relink attempt times out, the ends are still heard, so the link is retried until it works; still nobody is declared dead",
		script: `
step 0
snapshot 0
step 3
linkdown 0 1 @3
done
tick 4
linkdown 0 1 @3
done
tick 4
linkdown 0 1 @3
done
tick 4
done`,
	},
	{
		name: "corrupt_below_max_rejects", stages: 2, handOver: true,
		what: "stage 0 sends two corrupt frames (faults.max_rejects = 3): each is rejected, the attempt aborted and redone; nobody is evicted",
		script: `
step 0
snapshot 0
rejected 1 0 @2
done
rejected 1 0 @2
done`,
	},
	{
		name: "corrupt_above_max_rejects", stages: 2, spares: []string{"spare-a"}, handOver: true,
		what: "stage 0 keeps sending corrupt frames: the third is one too many, its peer is evicted (and killed), the spare takes stage 0 over; an optimizer step may have run in the last attempt, so every stage rolls back",
		script: `
step 0
snapshot 0
rejected 1 0 @2
done
rejected 1 0 @2
done
rejected 1 0 @2 applied
done
done
done
done`,
	},
	{
		name: "corrupt_above_max_rejects_in_process", stages: 2,
		what: "the same eviction where stages cannot change hands: the run stops, naming the bad frames and spares",
		script: `
rejected 1 0 @2
done
rejected 1 0 @2
done
rejected 1 0 @2`,
	},
	{
		name: "spare_joins_while_waiting", stages: 3, spares: []string{"spare-a"}, handOver: true,
		what: "stage 1's peer dies; the only spare cannot be set up, so the run waits; other stages stay heard meanwhile; a peer joining then takes the stage",
		script: `
step 0
snapshot 0
lost 1 @1
done
spare-failed spare-a
done
tick 3 quiet 1
joined late
done
done`,
	},
	{
		name: "two_failures_in_one_step", stages: 4, spares: []string{"spare-a", "spare-b"}, handOver: true,
		what: "during step 5 stage 1 rejects a frame, then stage 1's peer dies while the attempt is aborted, then stage 3's peer dies too: both stages are handed over, one after the other, then one rollback",
		script: `
step 0
snapshot 0
rejected 1 0 @5
lost 1 @5
tick 4 quiet 1 3
done
done
done
done`,
	},
}

func TestMembershipTranscripts(t *testing.T) {
	for _, sc := range membershipScenarios {
		t.Run(sc.name, func(t *testing.T) {
			got := runMembership(t, sc)
			checkGolden(t, filepath.Join("testdata", "membership_"+sc.name+".txt"), got)
		})
	}
}

// runMembership plays a scenario and returns its transcript.
func runMembership(t *testing.T, sc membershipScenario) string {
	t.Helper()
	var ranges []Range
	var holders []string
	for i := 0; i < sc.stages; i++ {
		ranges = append(ranges, Range{i, i + 1})
		holders = append(holders, fmt.Sprintf("peer-%d", i))
	}
	layout, err := NewLayout(ranges)
	if err != nil {
		t.Fatal(err)
	}
	cfg := MembershipConfig{Layout: layout, Holders: holders, TimeoutTicks: 4, MaxRejects: 3, MaxMismatches: 2, SnapshotEvery: 4, CanHandOver: sc.handOver, Async: sc.async,
		Join: sc.join, KeepSpares: sc.keepSpares, SlowFraction: sc.slow, SlowSteps: 2}
	for i := 0; i < sc.stages && sc.replicas > 1; i++ {
		var extra []string
		for k := 1; k < sc.replicas; k++ {
			extra = append(extra, fmt.Sprintf("peer-%d-%d", i, k))
		}
		cfg.Replicas = append(cfg.Replicas, extra)
	}
	m, err := NewMembership(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", sc.what)
	fmt.Fprintf(&b, "# %d stages held by %s; spares %v; stages can change hands: %v\n", sc.stages, strings.Join(holders, ", "), sc.spares, sc.handOver)
	if sc.async {
		fmt.Fprintf(&b, "# async schedule: every recovery rolls back to the snapshot\n")
	}
	fmt.Fprintf(&b, "# dead after %d silent ticks; evicted after %d bad frames; snapshots every %d steps\n", cfg.TimeoutTicks, cfg.MaxRejects, cfg.SnapshotEvery)
	var last *Command
	bg := map[string]int{} // holder → its running background sync
	opStep := 0            // the step of the runtime's operation
	emit := func() {
		rd := m.Ready()
		for _, n := range rd.Notes {
			fmt.Fprintf(&b, "  note %v (step %d)\n", n, n.Step)
		}
		for _, c := range rd.Commands {
			fmt.Fprintf(&b, "  cmd #%d %v\n", c.ID, c)
			c := c
			last = &c
		}
		for _, c := range rd.Background {
			fmt.Fprintf(&b, "  background #%d %v\n", c.ID, c)
			bg[c.Holder] = c.ID
		}
	}
	step := func(r Report) {
		if err := m.Step(r); err != nil {
			t.Fatalf("%v: %v", r, err)
		}
	}
	for _, s := range sc.spares {
		step(Report{Kind: ReportJoined, Holder: s})
	}
	emit()
	for _, line := range strings.Split(strings.TrimSpace(sc.script), "\n") {
		fmt.Fprintf(&b, "> %s\n", line)
		f := strings.Fields(line)
		num := func(i int) int {
			n, err := strconv.Atoi(strings.TrimPrefix(f[i], "@"))
			if err != nil {
				t.Fatalf("%q: field %d: %v", line, i, err)
			}
			return n
		}
		applied := slices.Contains(f, "applied")
		for _, x := range f {
			if v, ok := strings.CutPrefix(x, "@"); ok {
				opStep, _ = strconv.Atoi(v)
			}
		}
		if f[0] == "step" {
			opStep = num(1)
		}
		switch f[0] {
		case "joined":
			step(Report{Kind: ReportJoined, Holder: f[1]})
		case "spare-failed":
			step(Report{Kind: ReportSpareFailed, Holder: f[1]})
		case "step":
			step(Report{Kind: ReportStepBegins, Step: num(1)})
		case "snapshot":
			step(Report{Kind: ReportSnapshot, Step: num(1)})
		case "tick":
			var quiet []int
			if len(f) > 3 && f[2] == "quiet" {
				for i := 3; i < len(f); i++ {
					quiet = append(quiet, num(i))
				}
			}
			for n := num(1); n > 0; n-- {
				for i, h := range m.Holders() {
					if h != "" && !slices.Contains(quiet, i) {
						step(Report{Kind: ReportHeard, Stage: i})
					}
				}
				m.Tick()
				if m.Pending() {
					break // a tick found a failure: the runtime stops waiting
				}
			}
		case "lost":
			step(Report{Kind: ReportLost, Stage: num(1), Step: num(2), Applied: applied, Err: "control link closed"})
		case "linkdown":
			step(Report{Kind: ReportLinkDown, Stage: num(1), Peer: num(2), Step: num(3), Applied: applied, Err: "silent for 1.5s"})
		case "rejected":
			step(Report{Kind: ReportRejected, Stage: num(1), Peer: num(2), Step: num(3), Applied: applied, Err: "bad checksum"})
		case "interrupted":
			step(Report{Kind: ReportInterrupted, Step: num(1), Applied: applied})
		case "lost-replica":
			step(Report{Kind: ReportLost, Holder: f[1], Stage: num(2), Step: num(3), Applied: applied, Err: "control link closed"})
		case "mismatch":
			step(Report{Kind: ReportMismatch, Holder: f[1], Stage: num(2), Step: num(3), Err: "output hash differs from a replica's recomputation"})
		case "left":
			step(Report{Kind: ReportLeft, Holder: f[1]})
		case "rate":
			r, _ := strconv.ParseFloat(f[2], 64)
			step(Report{Kind: ReportRate, Holder: f[1], Rate: r})
		case "synced":
			step(Report{Kind: ReportDone, Cmd: bg[f[1]]})
		case "sync-failed":
			step(Report{Kind: ReportSyncFailed, Holder: f[1], Err: "the link to its source dropped"})
		case "route":
			for i, r := range m.Route(num(1)) {
				fmt.Fprintf(&b, "  route stage %d: %s\n", i, strings.Join(r, " "))
			}
		case "done":
			if last == nil {
				t.Fatalf("%q: no command to acknowledge", line)
			}
			step(Report{Kind: ReportDone, Cmd: last.ID})
		default:
			t.Fatalf("unknown script line %q", line)
		}
		if m.Interrupting() {
			// A tick found a failure during the runtime's operation.
			fmt.Fprintf(&b, "> (the runtime stops its operation at step %d)\n", opStep)
			step(Report{Kind: ReportInterrupted, Step: opStep})
		}
		emit()
	}
	c := m.Counts()
	fmt.Fprintf(&b, "# counts: failures %d, recoveries %d, rejected frames %d, steps redone %d; holders %v; failed %v\n",
		c.Failures, c.Recoveries, c.RejectedFrames, c.StepsRedone, m.Holders(), m.Failed())
	if sc.replicas > 1 || sc.join {
		fmt.Fprintf(&b, "# swarm: joins %d, leaves %d, drops %d, replicas lost %d; replicas %v\n", c.Joins, c.Leaves, c.Drops, c.ReplicasLost, m.Replicas())
	}
	return b.String()
}

// TestMembershipEndsEveryRecovery: whatever the failures, every recovery
// ends in exactly one redo, rollback or fail, and epochs only grow.
func TestMembershipEndsEveryRecovery(t *testing.T) {
	for _, sc := range membershipScenarios {
		t.Run(sc.name, func(t *testing.T) {
			out := runMembership(t, sc)
			ends := strings.Count(out, " redo") + strings.Count(out, " rollback step") + strings.Count(out, " fail: ")
			if ends == 0 {
				t.Errorf("no recovery ended:\n%s", out)
			}
			var epochs []int
			for _, l := range strings.Split(out, "\n") {
				if _, rest, ok := strings.Cut(l, "abort epoch "); ok {
					n, _ := strconv.Atoi(strings.Fields(rest)[0])
					epochs = append(epochs, n)
				}
			}
			if !slices.IsSorted(epochs) {
				t.Errorf("epochs %v go back", epochs)
			}
		})
	}
}

func TestMembershipRefusesNonsense(t *testing.T) {
	layout, _ := NewLayout([]Range{{0, 1}, {1, 2}})
	if _, err := NewMembership(MembershipConfig{Layout: layout, Holders: []string{"a"}, TimeoutTicks: 1, MaxRejects: 1, SnapshotEvery: 1}); err == nil {
		t.Error("accepted one holder for two stages")
	}
	if _, err := NewMembership(MembershipConfig{Layout: layout, Holders: []string{"a", "a"}, TimeoutTicks: 1, MaxRejects: 1, SnapshotEvery: 1}); err == nil {
		t.Error("accepted one holder on two stages")
	}
	m, err := NewMembership(MembershipConfig{Layout: layout, Holders: []string{"a", "b"}, TimeoutTicks: 1, MaxRejects: 1, SnapshotEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Report{{Kind: ReportLost, Stage: 2}, {Kind: ReportLinkDown, Stage: 0, Peer: 0}, {Kind: ReportJoined}, {Kind: ReportUnknown}} {
		if err := m.Step(r); err == nil {
			t.Errorf("accepted %+v", r)
		}
	}
	if !m.Ready().Empty() || m.Recovering() {
		t.Error("a refused report changed the machine")
	}
}
