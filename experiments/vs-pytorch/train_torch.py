#!/usr/bin/env python3
"""PyTorch side of experiments/vs-pytorch: train nanoGPT's GPT on bytes of the
Go standard library's source and print one JSON line of throughput and peak
memory. Run by `go run ./experiments/vs-pytorch`, or by hand:

    OPENBLAS_NUM_THREADS=2 /usr/bin/python3 train_torch.py --src $(go env GOROOT)/src

The model is nanoGPT's model.py (pre-LayerNorm blocks, causal attention,
tanh-GELU MLP, learned positions, tied LM head), same shapes as narrowband's
stages.DefaultConfig: 4 layers, d=256, 4 heads, context 128, byte vocabulary,
biases on. Debian's python3-torch 1.13 has no scaled_dot_product_attention,
so attention is nanoGPT's explicit (B, nh, T, T) path, as nanoGPT runs on it.
"""
import argparse
import hashlib
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, C, nh, T):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.nh = nh
        self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        k = k.view(B, T, self.nh, C // self.nh).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.nh, C // self.nh).transpose(1, 2)
        v = v.view(B, T, self.nh, C // self.nh).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C, nh, T):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention(C, nh, T)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, L, C, nh, T, V):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, nh, T) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for n, p in self.named_parameters():
            if n.endswith(".weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if n.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif n.endswith(".bias") and "ln" not in n:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.size()
        pos = torch.arange(T, dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for blk in self.h:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def load_bytes(src, limit):
    """The .go files (not tests, not testdata) under src, in sorted path order, up to limit bytes."""
    out = bytearray()
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "testdata")
        for f in sorted(files):
            if f.endswith(".go") and not f.endswith("_test.go"):
                with open(os.path.join(root, f), "rb") as fh:
                    out += fh.read()
                if len(out) >= limit:
                    return bytes(out[:limit])
    return bytes(out)


def vm_hwm_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def blas_in_use():
    """Which BLAS library torch loaded: Debian's torch links the reference
    BLAS unless libopenblas0-pthread is installed (then ~15x faster)."""
    with open("/proc/self/maps") as fh:
        maps = fh.read()
    if "openblas" in maps:
        return "openblas"
    if "libblas" in maps:
        return "reference"
    return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="folder of .go files (the Go source tree)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=128)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    raw = load_bytes(a.src, 8 << 20)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    if len(data) < a.ctx + 2:
        sys.exit("train_torch.py: too few bytes under --src")
    model = GPT(a.layers, a.embd, a.heads, a.ctx, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    B, T = a.batch, a.ctx

    def step():
        ix = torch.randint(len(data) - T - 1, (B,), generator=g)
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    w0, c0 = time.perf_counter(), time.process_time()
    loss = 0.0
    for _ in range(a.steps):
        loss = step()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tokens = a.steps * B * T
    print(json.dumps({
        "side": "pytorch", "blas": blas_in_use(), "torch": torch.__version__,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "steps": a.steps, "tokens": tokens, "wall_s": wall, "cpu_s": cpu,
        "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
        "loss": loss, "peak_rss_bytes": vm_hwm_bytes(),
        "data_sha256": hashlib.sha256(raw).hexdigest()[:16],
        "params": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
