package config

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Variant is one combination of a sweep: its name (e.g.
// "compression.method=int8,network.bandwidth_mbps=60") and its config.
type Variant struct {
	Name   string
	Values map[string]string // key → value as TOML
	Config Config
}

// OnlyVariants keeps the [[variant]] entries named in names (in the file's
// order), for running part of a sweep; a name the file does not have is an
// error that lists the names it has.
func (c *Config) OnlyVariants(names []string) error {
	if len(names) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			if part = strings.TrimSpace(part); part != "" {
				want[part] = true
			}
		}
	}
	var kept []map[string]any
	var have []string
	for _, v := range c.Variant {
		name := fmt.Sprint(v["name"])
		have = append(have, name)
		if want[name] {
			kept = append(kept, v)
			delete(want, name)
		}
	}
	if len(want) > 0 {
		var missing []string
		for n := range want {
			missing = append(missing, n)
		}
		sort.Strings(missing)
		return fmt.Errorf("--only %s: no such [[variant]] (this file has: %s)", strings.Join(missing, ", "), strings.Join(have, ", "))
	}
	c.Variant = kept
	return nil
}

// MaxVariants bounds how many runs one config's sweep may ask for: a
// sweep past it is almost surely a typo, and each variant is a run of its
// own.
const MaxVariants = 1000

// Variants expands the [sweep] table into every combination of its values,
// in a fixed order (keys sorted, values as listed). Without a sweep it
// returns the config itself as the single variant with an empty name. Each
// variant is validated.
func (c Config) Variants() ([]Variant, error) {
	flat := map[string][]any{}
	if err := flatten("", c.Sweep, flat); err != nil {
		return nil, err
	}
	base := c
	base.Sweep, base.Variant = nil, nil
	if len(flat) == 0 && len(c.Variant) == 0 {
		return []Variant{{Config: base}}, nil
	}
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Count before building: each variant is a whole config, and a few
	// short lists multiply fast (a config of 200 bytes can ask for 10^8).
	n := max(1, len(c.Variant))
	for _, k := range keys {
		if n *= len(flat[k]); n > MaxVariants {
			break
		}
	}
	if n > MaxVariants {
		return nil, fmt.Errorf("sweep: more than %d variants (%d [[variant]] entries × the [sweep] lists of %s); split it into several runs", MaxVariants, max(1, len(c.Variant)), strings.Join(keys, ", "))
	}
	out := []Variant{{Config: base, Values: map[string]string{}}}
	if len(c.Variant) > 0 {
		out = nil
		for i, v := range c.Variant {
			cfg := base
			name := fmt.Sprint(i)
			vals := map[string]string{}
			over := map[string][]any{}
			if err := flattenOne("", v, over); err != nil {
				return nil, fmt.Errorf("variant %d: %w", i+1, err)
			}
			vkeys := make([]string, 0, len(over))
			for k := range over {
				vkeys = append(vkeys, k)
			}
			sort.Strings(vkeys)
			for _, k := range vkeys {
				val := over[k][0]
				if k == "name" {
					name = fmt.Sprint(val)
					continue
				}
				lit, err := tomlLiteral(val)
				if err != nil {
					return nil, fmt.Errorf("variant %d: %q: %w", i+1, k, err)
				}
				if err := cfg.Set(k + "=" + lit); err != nil {
					return nil, fmt.Errorf("variant %d (%s): %w", i+1, name, err)
				}
				vals[k] = lit
			}
			vals["variant"] = strconv.Quote(name)
			out = append(out, Variant{Config: cfg, Values: vals})
		}
		keys = append([]string{"variant"}, keys...)
	}
	for _, k := range keys {
		var next []Variant
		if k == "variant" {
			continue
		}
		for _, v := range out {
			for _, val := range flat[k] {
				lit, err := tomlLiteral(val)
				if err != nil {
					return nil, fmt.Errorf("sweep.%q: %w", k, err)
				}
				cfg := v.Config
				cfg.Network.Links = append([]Link(nil), cfg.Network.Links...)
				cfg.Pipeline.Split = append([]int(nil), cfg.Pipeline.Split...)
				if err := cfg.Set(k + "=" + lit); err != nil {
					return nil, fmt.Errorf("sweep: %w", err)
				}
				vals := map[string]string{}
				for kk, vv := range v.Values {
					vals[kk] = vv
				}
				vals[k] = lit
				next = append(next, Variant{Config: cfg, Values: vals})
			}
		}
		out = next
	}
	for i := range out {
		var parts []string
		for _, k := range keys {
			if k == "variant" {
				parts = append(parts, strings.Trim(out[i].Values[k], `"`))
				continue
			}
			parts = append(parts, k+"="+strings.Trim(out[i].Values[k], `"`))
		}
		out[i].Name = strings.Join(parts, ",")
		out[i].Config.Run.Name = c.Run.Name + "/" + out[i].Name
		if err := out[i].Config.Validate(); err != nil {
			return nil, fmt.Errorf("sweep variant %s: %w", out[i].Name, err)
		}
	}
	return out, nil
}

// flattenOne flattens one variant's table of single values.
func flattenOne(prefix string, m map[string]any, out map[string][]any) error {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			if err := flattenOne(key, sub, out); err != nil {
				return err
			}
			continue
		}
		out[key] = []any{v}
	}
	return nil
}

func flatten(prefix string, m map[string]any, out map[string][]any) error {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		switch v := v.(type) {
		case map[string]any:
			if err := flatten(key, v, out); err != nil {
				return err
			}
		case []any:
			if len(v) == 0 {
				return fmt.Errorf("sweep.%q = []: list at least one value", key)
			}
			out[key] = v
		default:
			return fmt.Errorf("sweep.%q = %v: want a list of values, e.g. [1, 2]", key, v)
		}
	}
	return nil
}

// tomlLiteral renders one value as TOML.
func tomlLiteral(v any) (string, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": v}); err != nil {
		return "", err
	}
	s := strings.TrimSpace(buf.String())
	return strings.TrimSpace(strings.TrimPrefix(s, "v =")), nil
}
