// Package tokenizer is narrowband's own byte-level BPE tokenizer, so a run
// can train a model on a vocabulary of thousands of tokens without
// downloading one.
//
// It is GPT-2's scheme: text is cut into pre-tokens by GPT-2's expression
// (pretokenize.go: words with their leading space, numbers, runs of
// punctuation, whitespace), and inside each pre-token bytes are merged
// into tokens by a learned list of merges, lowest rank first. Every byte
// has a token of its own, so any byte sequence, valid UTF-8 or not,
// encodes and decodes back to itself.
//
//	docs ─► Train (count pre-tokens on 2+ goroutines, merge the most frequent
//	        pair, update pair counts incrementally) ─► *Tokenizer
//	*Tokenizer ─► Save / WriteJSON ─► tokenizer.json (Hugging Face format)
//	tokenizer.json ─► Load / ReadJSON ─► *Tokenizer
//	text ─► Encode ─► []int32 ─► Decode ─► text
//
// Files are Hugging Face tokenizers' tokenizer.json (hfjson.go), so the
// vocabulary travels with a Llama checkpoint and its config.json
// (stages.HFConfigJSON). Token ids are int32, as the model's inputs.
// narrowband tokenizer train is the command-line front.
package tokenizer
