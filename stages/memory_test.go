package stages

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
)

// stageBufferBytes sums the capacity of every float32 and int32 buffer a
// Stage owns, found by walking its fields (and its slots' and blocks'),
// so it does not share EstimateMemory's arithmetic. Views into the
// parameter array (the Params, the fused Llama weights) and the exec's
// jobs, which point at buffers counted elsewhere, are left out.
func stageBufferBytes(s *Stage) float64 {
	skip := map[reflect.Type]bool{
		reflect.TypeFor[exec]():               true,
		reflect.TypeFor[[]llamaBlockParams](): true,
		reflect.TypeFor[[]blockParams]():      true,
		reflect.TypeFor[[]*Param]():           true,
	}
	var walk func(v reflect.Value) float64
	walk = func(v reflect.Value) float64 {
		var n float64
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if skip[f.Type()] || f.Kind() != reflect.Slice {
				continue
			}
			switch f.Type().Elem().Kind() {
			case reflect.Float32, reflect.Int32:
				n += 4 * float64(f.Cap())
			case reflect.Struct:
				for k := 0; k < f.Len(); k++ {
					n += walk(f.Index(k))
				}
			}
		}
		return n
	}
	return walk(reflect.ValueOf(s).Elem())
}

// EstimateMemory is exactly what NewStage allocates in buffers, for both
// families, every kind of stage (first, middle, last, whole, without
// blocks), tied and untied, grouped-query or not; and what NewAdamW adds.
func TestMemoryEstimateIsExact(t *testing.T) {
	gptB, gptNB := tinyConfig(true), tinyConfig(false)
	gptB.VocabSize = 5000
	llamaT, llamaU := tinyLlama(false), tinyLlama(true)
	llamaMHA := tinyLlama(false)
	llamaMHA.NKVHead = 4
	for _, cfg := range []Config{gptB, gptNB, llamaT, llamaU, llamaMHA} {
		for _, r := range []struct {
			lo, hi      int
			first, last bool
		}{{0, 3, true, true}, {0, 1, true, false}, {1, 2, false, false}, {2, 3, false, true}, {3, 3, false, true}, {0, 0, true, false}} {
			for _, sh := range [][2]int{{1, 1}, {3, 2}} {
				name := fmt.Sprintf("%v untied=%v kv=%d [%d,%d) first=%v last=%v B=%d slots=%d",
					cfg.Family, cfg.UntiedEmbeddings, cfg.kvHeads(), r.lo, r.hi, r.first, r.last, sh[0], sh[1])
				s, err := NewStage(cfg, r.lo, r.hi, r.first, r.last, sh[0], sh[1])
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				m := EstimateMemory(cfg, r.lo, r.hi, r.first, r.last, sh[0], sh[1])
				if got := stageBufferBytes(s); got != m.Stage() {
					t.Errorf("%s: buffers hold %v bytes, EstimateMemory says %v (%+v)", name, got, m.Stage(), m)
				}
				if p := float64(4 * s.NumParams()); m.Params != p || m.Grads != p || m.AdamW != 2*p {
					t.Errorf("%s: %d parameters, estimate %+v", name, s.NumParams(), m)
				}
				if MemoryBytes(cfg, r.lo, r.hi, r.first, r.last, sh[0], sh[1]) != m.Stage() {
					t.Errorf("%s: MemoryBytes is not EstimateMemory(…).Stage()", name)
				}
			}
		}
	}
}

// What the Go heap really grows by when NewStage and NewAdamW run is the
// estimate, plus Go's own overhead (rounding of large allocations to
// pages, the small Param structs and names): within 1% + 256 KiB.
func TestMemoryEstimateMatchesHeap(t *testing.T) {
	for _, cfg := range []Config{DefaultConfig(), DefaultLlamaConfig(), func() Config {
		c := DefaultLlamaConfig()
		c.NKVHead, c.UntiedEmbeddings, c.VocabSize = 2, true, 4096
		return c
	}()} {
		m := EstimateMemory(cfg, 0, cfg.NLayer, true, true, 4, 2)
		var a, b, c runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		s, err := NewStage(cfg, 0, cfg.NLayer, true, true, 4, 2)
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&b)
		opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
		runtime.ReadMemStats(&c)
		stage, adam := float64(b.TotalAlloc-a.TotalAlloc), float64(c.TotalAlloc-b.TotalAlloc)
		t.Logf("%v kv=%d V=%d: NewStage allocated %.2f MB (estimate %.2f MB: params %.2f, grads %.2f, %d slots × %.2f, scratch %.2f); NewAdamW %.2f MB (estimate %.2f)",
			cfg.Family, cfg.kvHeads(), cfg.VocabSize, stage/1e6, m.Stage()/1e6, m.Params/1e6, m.Grads/1e6, m.Slots, m.PerSlot/1e6, m.Scratch/1e6, adam/1e6, m.AdamW/1e6)
		for _, x := range []struct {
			what      string
			got, want float64
		}{{"NewStage", stage, m.Stage()}, {"NewAdamW", adam, m.AdamW}} {
			if x.got < x.want || x.got > 1.01*x.want+256<<10 {
				t.Errorf("%v: %s allocated %.0f bytes, estimate %.0f", cfg.Family, x.what, x.got, x.want)
			}
		}
		runtime.KeepAlive(opt)
	}
}
