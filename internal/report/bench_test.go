package report

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWrite measures a whole report, which the trainer draws at the end
// of every run: steps per run and runs per report vary.
func BenchmarkWrite(b *testing.B) {
	for _, steps := range []int{200, 20000} {
		for _, n := range []int{1, 6} {
			b.Run(fmt.Sprintf("steps=%d/runs=%d", steps, n), func(b *testing.B) {
				dir := b.TempDir()
				var dirs []string
				for i := 0; i < n; i++ {
					d := filepath.Join(dir, fmt.Sprint(i))
					methods := []string{"none", "int8", "lowrank"}
					fakeRun{method: methods[i%3], rank: "32", bandwidth: float64(i/3) * 60, stages: 2, steps: steps, evalEvery: steps / 10,
						tps: 1000 + 100*float64(i), bytesFwd: 512 / float64(1+i%3), bytesBwd: 512 / float64(1+i%3), finalVal: 2.3 + 0.01*float64(i), timeline: true}.write(b, d, fmt.Sprint("run", i))
					dirs = append(dirs, d)
				}
				runs, err := Load(dirs...)
				if err != nil {
					b.Fatal(err)
				}
				var in int64
				for _, d := range dirs {
					st, _ := os.Stat(filepath.Join(d, MetricsFile))
					in += st.Size()
				}
				b.SetBytes(in)
				b.ReportAllocs()
				out := b.TempDir()
				var files []string
				for b.Loop() {
					if files, err = Write(out, runs); err != nil {
						b.Fatal(err)
					}
				}
				var size int64
				for _, f := range files {
					st, _ := os.Stat(f)
					size += st.Size()
				}
				b.ReportMetric(float64(len(files)), "files")
				b.ReportMetric(float64(size)/1e6, "MB-out")
			})
		}
	}
}
