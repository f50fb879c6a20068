package engine

import (
	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// ModelConfig is the run config's [model]: the engine's own config.
func ModelConfig(c config.Config) stages.Config { return c.Model }

// AdamConfig maps the run config's [train] onto AdamW's.
func AdamConfig(c config.Config) stages.AdamWConfig {
	t := c.Train
	return stages.AdamWConfig{Beta1: float32(t.Beta1), Beta2: float32(t.Beta2), Eps: float32(t.Eps), WeightDecay: float32(t.WeightDecay),
		Nesterov: t.Optimizer == "nadamw", MomentumDecay: float32(t.MomentumDecay)}
}

// Layout is the run's stage layout: pipeline.split if given, else blocks
// balanced by compute over pipeline.stages. Everything that needs the
// number of stages or a stage's neighbours reads it from here.
func Layout(c config.Config) (scheduler.Layout, error) {
	var ranges []scheduler.Range
	var err error
	if len(c.Pipeline.Split) > 0 {
		ranges, err = scheduler.Split(c.Model.NLayer, c.Pipeline.Split)
	} else {
		ranges, err = scheduler.Assign(c.Model.NLayer, c.Pipeline.Stages, scheduler.GPTCosts(c.Model.NEmbd, c.Model.VocabSize))
	}
	if err != nil {
		return scheduler.Layout{}, err
	}
	return scheduler.NewLayout(ranges)
}

// UntiedHead reports whether the run trains a separate LM head on the last
// stage of a pipeline: a model with untied embeddings (model.untied_embeddings,
// Llama), or the subspace codec's compression.untie_head. Then the ends
// exchange no tied gradient, only the news that their step is done.
func UntiedHead(c config.Config) bool {
	if c.Pipeline.Stages <= 1 {
		return false
	}
	return c.Model.UntiedEmbeddings || (c.Compression.Method == compression.MethodSubspace && c.Compression.UntieHead)
}
