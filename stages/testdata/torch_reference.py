#!/usr/bin/env python3
"""Writes torch_reference_bias{0,1}.safetensors: a tiny nanoGPT model's
weights, a batch, and PyTorch's loss and gradients for it.

The model below is karpathy/nanoGPT model.py (GPT, Block, CausalSelfAttention,
MLP, LayerNorm) cut to what the comparison needs: dropout 0, tanh GELU as
GPT-2, tied lm_head. TestTorchReference loads each file with the Go engine
and checks loss and every gradient against PyTorch's.

Regenerate (needs Debian's python3-torch, run with /usr/bin/python3):
    /usr/bin/python3 testdata/torch_reference.py
"""
import json, math, struct, sys, os
import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
        self.n_head, self.n_embd = c["n_head"], c["n_embd"]
        T = c["block_size"]
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = LayerNorm(c["n_embd"], c["bias"])
        self.attn = CausalSelfAttention(c)
        self.ln_2 = LayerNorm(c["n_embd"], c["bias"])
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c["vocab_size"], c["n_embd"]),
            wpe=nn.Embedding(c["block_size"], c["n_embd"]),
            h=nn.ModuleList([Block(c) for _ in range(c["n_layer"])]),
            ln_f=LayerNorm(c["n_embd"], c["bias"]),
        ))
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def write_safetensors(path, tensors, metadata):
    header, off = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        n = t.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors.values():
            f.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for bias in (True, False):
        torch.manual_seed(1234)
        c = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32, bias=bias)
        model = GPT(c)
        with torch.no_grad():
            for p in model.parameters():  # move away from the init so every path matters
                p.add_(0.3 * torch.randn_like(p))
        B, T = 3, 8
        idx = torch.randint(0, c["vocab_size"], (B, T))
        tgt = torch.randint(0, c["vocab_size"], (B, T))
        loss = model(idx, tgt)
        loss.backward()
        out = {}
        sd = model.state_dict()
        for name, t in sd.items():
            if name.endswith(".mask"):
                continue
            out[name] = t
        for name, p in model.named_parameters():
            out["grad." + name] = p.grad
        out["test.tokens"] = idx.float()
        out["test.targets"] = tgt.float()
        out["test.loss"] = loss.detach().reshape(1)
        md = {"config": json.dumps(c), "torch": torch.__version__}
        path = os.path.join(here, "torch_reference_bias%d.safetensors" % int(bias))
        write_safetensors(path, out, md)
        print(path, "loss", loss.item())


if __name__ == "__main__":
    sys.exit(main())
