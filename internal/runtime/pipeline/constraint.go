package pipeline

import (
	"fmt"
	"strings"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/stages"
)

// constraint keeps a stage's weights that write into the residual stream
// inside span(U), as the subspace codec (Protocol Models) needs: then the
// residual stream at every stage boundary is exactly E0[tok] + U·c and the
// boundary carries c (k numbers per token) plus the token ids.
//
// Constrained: the token embedding (as E0 + W̃ with W̃'s rows in span(U), so
// the stored, exported matrix is the effective one and the LM head tied to
// it is a plain GPT's), the position embedding, and the output projections
// (attention c_proj, MLP c_proj, weights and biases) of every block that is
// not on the last stage. In a Llama the same roles are played by
// model.embed_tokens, self_attn.o_proj and mlp.down_proj (no biases, no
// position embedding: RoPE rotates q and k inside a block and writes
// nothing into the residual stream). The last stage's blocks are free: nothing they
// write crosses a link.
//
// Gradients of constrained weights are projected before the optimizer (the
// exact gradient of the reparametrized model, and the same whether or not
// the boundary gradient was compressed to Uᵀg), and the weights are
// projected again after it, since AdamW's elementwise update leaves the
// subspace.
type constraint struct {
	basis *compression.Basis
	e0    []float32
	rows  []*stages.Param // rows are residual vectors: wte, lm_head, wpe
	cols  []*stages.Param // columns are residual vectors: c_proj weights, biases
	C     int
}

// newConstraint picks stage's constrained params; nil when nothing is.
func newConstraint(st *stages.Stage, sub *compression.Subspace, stage, stages_ int, untied bool) *constraint {
	if stages_ < 2 {
		return nil
	}
	c := &constraint{basis: sub.Basis, e0: sub.E0, C: st.Config().NEmbd}
	last := stage == stages_-1
	for _, p := range st.Params() {
		switch constraintRole(p.Name, last, untied) {
		case coefRows:
			c.rows = append(c.rows, p)
		case coefCols:
			c.cols = append(c.cols, p)
		}
	}
	return c
}

// constraintRole says how the constraint holds the parameter called name
// on a stage (the last one, or not) of a pipeline of at least 2 stages:
// its rows in span(U), its columns, or free. The sum among replicas counts
// its coefficients by it too (ReplicaSumBytes).
func constraintRole(name string, last, untied bool) coefKind {
	switch {
	case name == "lm_head.weight" && untied:
		// A free head: nothing it computes crosses a link.
	case isTokenEmbeddingName(name) || name == "transformer.wpe.weight":
		return coefRows
	case !last && writesResidual(name):
		return coefCols
	}
	return coefNone
}

func isTokenEmbedding(p *stages.Param) bool { return isTokenEmbeddingName(p.Name) }

func isTokenEmbeddingName(name string) bool {
	return name == "transformer.wte.weight" || name == "model.embed_tokens.weight" || name == "lm_head.weight"
}

// writesResidual says whether a block's parameter is an output projection
// into the residual stream, stored (C, n) or (C): its columns are residual
// vectors. GPT: attn.c_proj and mlp.c_proj, weights and biases; Llama:
// self_attn.o_proj and mlp.down_proj.
func writesResidual(name string) bool {
	for _, suf := range []string{".attn.c_proj.weight", ".attn.c_proj.bias", ".mlp.c_proj.weight", ".mlp.c_proj.bias",
		".self_attn.o_proj.weight", ".mlp.down_proj.weight"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

// projectWeights moves the constrained weights into the subspace (the token
// embedding to E0 + its projected offset from E0).
func (c *constraint) projectWeights() error {
	return c.project(func(p *stages.Param) []float32 { return p.Data })
}

// projectMaster projects the optimizer's own copy of the iterate (the
// async Nesterov correction keeps it apart from the look-ahead in Data):
// it is what evaluation and checkpoints read, so it must be the model the
// codec carries exactly. master is AdamW.Master(): views, in param order.
func (c *constraint) projectMaster(master []stages.Tensor) error {
	byName := make(map[string][]float32, len(master))
	for _, t := range master {
		byName[t.Name] = t.Data
	}
	return c.project(func(p *stages.Param) []float32 { return byName[p.Name] })
}

// project keeps data(p) of every constrained param in span(U).
func (c *constraint) project(data func(p *stages.Param) []float32) error {
	for _, p := range c.rows {
		x := data(p)
		if len(x) != len(p.Data) {
			return fmt.Errorf("constrain %s: %d values, the param has %d", p.Name, len(x), len(p.Data))
		}
		off := isTokenEmbedding(p)
		if off {
			for i := range x {
				x[i] -= c.e0[i]
			}
		}
		if err := c.basis.ProjectRows(x, len(x)/c.C, c.C); err != nil {
			return fmt.Errorf("constrain %s: %w", p.Name, err)
		}
		if off {
			for i := range x {
				x[i] += c.e0[i]
			}
		}
	}
	for _, p := range c.cols {
		x := data(p)
		if len(x) != len(p.Data) {
			return fmt.Errorf("constrain %s: %d values, the param has %d", p.Name, len(x), len(p.Data))
		}
		if err := c.basis.ProjectCols(x, c.C, len(x)/c.C); err != nil {
			return fmt.Errorf("constrain %s: %w", p.Name, err)
		}
	}
	return nil
}

// projectGrads projects the gradients of the constrained weights.
func (c *constraint) projectGrads() error {
	for _, p := range c.rows {
		if err := c.basis.ProjectRows(p.Grad, len(p.Grad)/c.C, c.C); err != nil {
			return fmt.Errorf("constrain grad of %s: %w", p.Name, err)
		}
	}
	for _, p := range c.cols {
		if err := c.basis.ProjectCols(p.Grad, c.C, len(p.Grad)/c.C); err != nil {
			return fmt.Errorf("constrain grad of %s: %w", p.Name, err)
		}
	}
	return nil
}

// coeffs returns g's (V×d) coordinates in span(U), V×k, in buf (grown as
// needed): what a stage sends of the tied embedding's gradient.
func (c *constraint) coeffs(g []float32, buf []float32) []float32 {
	rows := len(g) / c.C
	if cap(buf) < rows*c.basis.K {
		buf = make([]float32, rows*c.basis.K)
	}
	buf = buf[:rows*c.basis.K]
	c.basis.Coeffs(buf, g, rows)
	return buf
}

// expand sets g (V×d) to coef·Uᵀ.
func (c *constraint) expand(g, coef []float32) {
	c.basis.Expand(g, coef, len(g)/c.C)
}
