// Package data turns text on disk into training and held-out token ids and
// hands out seeded random windows of block_size+1 ids.
//
//	data.path (files, folders, globs) ─► list (extensions, include, exclude)
//	  ─► read each file: sha256, text or JSON Lines ─► documents
//	  ─► split by document (a stable hash) ─► Manifest (manifest.json)
//	  ─► bytes: the text is the ids (Tokens of width 1)
//	     tokenizer: encode each document once ─► cache file (header, crc32c)
//	        ─► memory-mapped by every later run (Tokens of width 2 or 4)
//	Tokens ─► Batch (training), EvalWindows (held-out), Chunks (eval command)
//
// The default corpus is the Go standard library's own source, which every
// machine with Go has, so a run never downloads anything. The held-out split
// is by document (a file by its path below its folder, a JSON Lines record
// by its text), so it never changes between runs, machines or stage counts.
// Batches are a pure function of (seed, step, micro-batch): resuming at step
// s needs no saved data-loader state and gives the same ids an uninterrupted
// run would have seen. A byte corpus gives exactly the bytes and batches it
// gave before tokenizers (TestBytePathUnchanged keeps the old loader as the
// reference).
package data
