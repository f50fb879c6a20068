package config

import "testing"

// FuzzParse: any bytes as a config file give a config or an error, never a
// panic; what parses and validates also survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add("[run]\nname = \"x\"\nsteps = 3\n")
	f.Add("[model]\nn_layer = 2\n[sweep]\n\"train.batch_size\" = [1, 2]\n")
	f.Add("[[network.link]]\nfrom = 0\nto = 1\nbandwidth_mbps = 5\n")
	f.Add("[[variant]]\nname = \"a\"\n\"compression.method\" = \"int8\"\n")
	f.Add("= = =\n[[[")
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
		if _, err := Parse(string(out), "resolved"); err != nil {
			t.Fatalf("the resolved config does not parse back: %v\n%s", err, out)
		}
	})
}
