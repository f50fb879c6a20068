#!/usr/bin/env python3
"""Writes torch_reference_bias{0,1}.safetensors: a tiny nanoGPT model's
weights, a batch, and PyTorch's loss and gradients for it; and
torch_reference_llama_{gqa_tied,mha_untied}.safetensors: the same for tiny
Llamas.

The GPT below is karpathy/nanoGPT model.py (GPT, Block, CausalSelfAttention,
MLP, LayerNorm) cut to what the comparison needs: dropout 0, tanh GELU as
GPT-2, tied lm_head. TestTorchReference loads each file with the Go engine
and checks loss and every gradient against PyTorch's.

The Llama is Hugging Face transformers' modeling_llama.py (LlamaRMSNorm,
LlamaRotaryEmbedding, rotate_half, apply_rotary_pos_emb, repeat_kv, eager
LlamaAttention, LlamaMLP, LlamaDecoderLayer, LlamaModel, LlamaForCausalLM)
rewritten in plain torch, since transformers is not installed here: same
module names (so the same state_dict names), same operations in the same
order, no KV cache, no padding mask, no tensor parallelism. Its config
metadata is the model's Hugging Face config.json. The loss is cross-entropy
against explicit targets, as the engine computes it (LlamaForCausalLM
shifts its labels by one itself; the logits are the same).
TestTorchReferenceLlama checks it.

Regenerate (needs Debian's python3-torch, run with /usr/bin/python3):
    /usr/bin/python3 testdata/torch_reference.py

Check that a Llama folder written by stages.WriteHFModel loads into the
PyTorch Llama with load_state_dict(strict=True) from its config.json and
gives the engine's loss (TestWriteHFModel leaves such folders):
    NARROWBAND_HF_EXPORT=/tmp/x go test ./stages -run TestWriteHFModel
    /usr/bin/python3 testdata/torch_reference.py --check-export /tmp/x/tied /tmp/x/untied
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


# --- Llama, following transformers/models/llama/modeling_llama.py ---------


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.hidden_size = c["hidden_size"]
        self.num_heads = c["num_attention_heads"]
        self.head_dim = self.hidden_size // self.num_heads
        self.num_key_value_heads = c["num_key_value_heads"]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)
        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.hidden_size)
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)
        self.act_fn = nn.SiLU()  # ACT2FN["silu"]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, attention_mask, position_embeddings)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = LlamaRMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])
        self.rotary_emb = LlamaRotaryEmbedding(c["hidden_size"] // c["num_attention_heads"], c["rope_theta"])

    def forward(self, input_ids):
        inputs_embeds = self.embed_tokens(input_ids)
        b, t = input_ids.shape
        position_ids = torch.arange(t).unsqueeze(0).expand(b, -1)
        # The 4-D causal mask of _update_causal_mask: the dtype's minimum above the diagonal.
        min_dtype = torch.finfo(inputs_embeds.dtype).min
        causal_mask = torch.triu(torch.full((t, t), min_dtype, dtype=inputs_embeds.dtype), diagonal=1)[None, None]
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, causal_mask, position_embeddings)
        return self.norm(hidden_states)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        for m in self.modules():  # LlamaPreTrainedModel._init_weights
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(mean=0.0, std=c["initializer_range"])

    def forward(self, idx, targets):
        logits = self.lm_head(self.model(idx)).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def llama_config(**kw):
    c = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", initializer_range=0.02,
             attention_bias=False, mlp_bias=False, attention_dropout=0.0, rope_scaling=None, pretraining_tp=1,
             torch_dtype="float32", bos_token_id=None, eos_token_id=None)
    c.update(kw)
    c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    return c


LLAMAS = {
    # Grouped-query attention (4 query heads on 2 key/value heads), tied
    # embeddings, a vocabulary past 256, SwiGLU width not a multiple of 8.
    "gqa_tied": llama_config(hidden_size=32, intermediate_size=44, num_attention_heads=4, num_key_value_heads=2,
                             num_hidden_layers=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=8,
                             vocab_size=300, tie_word_embeddings=True),
    # Multi-head attention, untied lm_head, Llama 3's theta, HF's default eps.
    "mha_untied": llama_config(hidden_size=16, intermediate_size=24, num_attention_heads=2, num_key_value_heads=2,
                               num_hidden_layers=2, rms_norm_eps=1e-6, rope_theta=500000.0, max_position_embeddings=8,
                               vocab_size=32, tie_word_embeddings=False),
}


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


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    md = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", e
        a, b = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(e["shape"])
    return out, md


def check_export(dirs):
    for d in dirs:
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        model = LlamaForCausalLM(c)
        sd, md = read_safetensors(os.path.join(d, "model.safetensors"))
        assert md.get("format") == "pt", md
        model.load_state_dict(sd, strict=True)
        with open(os.path.join(d, "check.json")) as f:
            chk = json.load(f)
        idx = torch.tensor(chk["tokens"]).view(chk["B"], chk["T"])
        tgt = torch.tensor(chk["targets"]).view(chk["B"], chk["T"])
        with torch.no_grad():
            loss = model(idx, tgt).item()
        rel = abs(loss - chk["loss"]) / chk["loss"]
        print(d, "PyTorch loss", loss, "engine", chk["loss"], "relative difference %.2g" % rel)
        assert rel < 1e-5


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--check-export":
        return check_export(sys.argv[2:])
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
    for name, c in LLAMAS.items():
        torch.manual_seed(1234)
        model = LlamaForCausalLM(c)
        with torch.no_grad():
            for p in model.parameters():  # move away from the init so every path matters
                p.add_(0.3 * torch.randn_like(p))
        B, T = 3, c["max_position_embeddings"]
        idx = torch.randint(0, c["vocab_size"], (B, T))
        tgt = torch.randint(0, c["vocab_size"], (B, T))
        loss = model(idx, tgt)
        loss.backward()
        out = dict(model.state_dict())  # a tied model lists lm_head.weight too, as HF's
        for pname, p in model.named_parameters():
            out["grad." + pname] = p.grad
        out["test.tokens"] = idx.float()
        out["test.targets"] = tgt.float()
        out["test.loss"] = loss.detach().reshape(1)
        md = {"config": json.dumps(c), "torch": torch.__version__}
        path = os.path.join(here, "torch_reference_llama_%s.safetensors" % name)
        write_safetensors(path, out, md)
        print(path, "loss", loss.item())


if __name__ == "__main__":
    sys.exit(main())
