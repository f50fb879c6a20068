package main

import (
	"fmt"
	"strconv"
	"strings"
)

// args is a small flag parser that, unlike package flag, accepts flags after
// positional arguments (`narrowband run exp.toml --set a.b=1`) and repeated
// flags (--set).
type args struct {
	pos   []string
	vals  map[string][]string
	known map[string]bool // flag name → takes a value
}

func parseArgs(in []string, known map[string]bool) (*args, error) {
	a := &args{vals: map[string][]string{}, known: known}
	for i := 0; i < len(in); i++ {
		s := in[i]
		if !strings.HasPrefix(s, "-") || s == "-" {
			a.pos = append(a.pos, s)
			continue
		}
		if s == "--" {
			a.pos = append(a.pos, in[i+1:]...)
			break
		}
		name := strings.TrimLeft(s, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		takes, ok := known[name]
		if !ok {
			return nil, fmt.Errorf("unknown flag --%s", name)
		}
		if takes && !hasVal {
			if i+1 >= len(in) {
				return nil, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = in[i]
		}
		if !takes {
			val = "true"
		}
		a.vals[name] = append(a.vals[name], val)
	}
	return a, nil
}

func (a *args) str(name, def string) string {
	if v := a.vals[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return def
}

func (a *args) all(name string) []string { return a.vals[name] }

func (a *args) int(name string, def int) (int, error) {
	s := a.str(name, "")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a whole number", name, s)
	}
	return n, nil
}

func (a *args) float(name string, def float64) (float64, error) {
	s := a.str(name, "")
	if s == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a number", name, s)
	}
	return f, nil
}
