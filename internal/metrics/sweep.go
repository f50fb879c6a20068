package metrics

// SweepResult is one element of a sweep's sweep.json: a variant, the values
// it set, its folder and its summary.
type SweepResult struct {
	Variant string            `json:"variant"`
	Values  map[string]string `json:"values"`
	Dir     string            `json:"dir"`
	Summary *Summary          `json:"summary"`
}
