// Command vs-pytorch measures narrowband's training speed against PyTorch
// on the same CPU, model and data, in one run:
//
//	go run ./experiments/vs-pytorch [-steps 20] [-rounds 2] [-pipeline]
//
// The model is stages.DefaultConfig (GPT, 4 layers, d=256, 4 heads, context
// 128, byte vocabulary, biases), batch 16, trained with AdamW on windows of
// the Go standard library's source. Each side runs in its own process (so
// peak memory, VmHWM, is each side's own): this binary re-executed with
// -side=go for narrowband, and /usr/bin/python3 train_torch.py (nanoGPT's
// model code) for PyTorch, with OPENBLAS_NUM_THREADS=1 and =2 and the
// OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE variables removed. Sides alternate
// within each round, so both see the same load on a shared machine.
//
// It prints wall-clock tokens/s and tokens per CPU-second (user+system
// time of the process: on a loaded machine the fairer figure) for each
// side, the ratios against PyTorch's best setting, and peak RSS.
//
// The narrowband side is the engine a run uses: engine.Local for the whole
// model. With -pipeline it also trains the model cut into two stages as a
// run with pipeline.processes = true does (launch.Processes, pipeline.New,
// GPipe): each stage in a worker process of its own (this binary), pinned
// to its own core with one thread, linked over loopback TCP, against
// PyTorch with one thread pinned to one core.
package main
