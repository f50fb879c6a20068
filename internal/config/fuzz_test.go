package config

import (
	"reflect"
	"testing"
)

// FuzzParse: any bytes as a config file give a config or an error, never a
// panic; what parses and validates also survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add("[run]\nname = \"x\"\nsteps = 3\n")
	f.Add("[model]\nn_layer = 2\n[sweep]\n\"train.batch_size\" = [1, 2]\n")
	f.Add("[[network.link]]\nfrom = 0\nto = 1\nbandwidth_mbps = 5\n")
	f.Add("[[variant]]\nname = \"a\"\n\"compression.method\" = \"int8\"\n")
	f.Add("= = =\n[[[")
	f.Add("[run]\nseed = \"18446744073709551615\"\n[compression]\nmethod = \"subspace\"\nrank = 48\nprecision = \"int4\"\n")
	f.Add("[train]\nmin_lr = nan\n")
	f.Add("[pipeline]\nschedule = \"gpipe\"\nstages = 2\n[[network.link]]\nfrom = 0\nto = 1\nlatency_ms = 25\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse(text, "fuzz.toml")
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		c.Variants()
		out, err := c.TOML()
		if err != nil {
			t.Fatalf("a valid config does not encode: %v", err)
		}
		again, err := Parse(string(out), "resolved")
		if err != nil {
			t.Fatalf("the resolved config does not parse back: %v\n%s", err, out)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("the resolved config does not validate: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("the resolved config loads back different:\n%+v\n%+v\n%s", again, c, out)
		}
	})
}
