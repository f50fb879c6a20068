package trainer

import (
	"fmt"
	"strings"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/web"
)

// tabSpeed is how fast a browser tab computes a stage relative to a native
// peer on the same machine, measured by BenchmarkTabStage (docs/browser.md):
// median 0.047 (0.032–0.079) over five rounds with a 4-layer d=128 model on
// the 2-vCPU development machine, whose native peers use the AVX-512
// kernel; against a -tags purego native build it is 0.95. The page
// multiplies a stage's current native rate by it to tell a visitor what to
// expect.
const tabSpeed = 0.05

// offerRoom returns what the WebRTC placement calls once its room is open:
// with web.contribute on, it hands the web view what a visitor's tab needs
// to join (the room's URL and join token) and what it would take on.
func offerRoom(cfg config.Config, view *web.Server) func(launch.Room) {
	if view == nil || !cfg.Web.Contribute {
		return nil
	}
	return func(r launch.Room) {
		c := &web.Contribute{Signal: r.URL, Token: r.JoinToken, Stage: r.Vacant, Stages: cfg.Pipeline.Stages,
			Replica: r.Replica, Replicas: cfg.Pipeline.ReplicaCount(),
			TokensPerStep: cfg.Train.BatchSize * cfg.Model.BlockSize, TabSpeed: tabSpeed}
		for _, s := range r.ICEServers {
			// TURN credentials come from the run key, which a tab never
			// gets: it may use STUN only.
			if strings.HasPrefix(s, "stun:") {
				c.ICE = append(c.ICE, s)
			}
		}
		if layout, err := engine.Layout(cfg); err == nil {
			if plan, err := engine.PlanMemory(cfg, layout); err == nil && len(plan.Process) > 0 {
				st := r.Vacant
				if st < 0 {
					// A spare must be able to take any stage.
					for i, m := range plan.Process {
						if m > plan.Process[max(st, 0)] {
							st = i
						}
					}
					st = max(st, 0)
				}
				c.MemoryBytes = int64(plan.Process[st])
			}
			if r.Vacant >= 0 && r.Vacant < layout.Stages() {
				rg := layout.Range(r.Vacant)
				c.Layers = fmt.Sprintf("blocks %d–%d", rg.Lo, rg.Hi-1)
				if rg.Len() == 1 {
					c.Layers = fmt.Sprintf("block %d", rg.Lo)
				}
			}
		}
		view.SetContribute(c)
	}
}
