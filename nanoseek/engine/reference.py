"""The decode step written out in torch, row by row: the specification `decode_step.c` is tested against.

    h = reference_step(FastDecoder(model).layers, h, positions, slots, cache.kv, cos, sin)   # tests

Not a runtime path: the engine decodes with the C step where `FastDecoder.supports` the model and with
the model's own forward everywhere else. This file states, in plain torch and in the C step's order,
what the C step computes on the fused weights (`decode.LayerWeights`), so a reader checks ~300 lines of
C against a page of torch, and the tests check both ends: this step equals the model's own cached
forward (`DeepSeekV3.hidden_states`), and the C step equals this step.

Row n holds the embedded token h (C,) at position p of cache slot s. Per layer, with [a | b] a
concatenation and rope(x) = x * [cos | cos] + swap_halves(x) * [-sin | sin] on [evens | odds] order:

    x = rms_norm(h)
    [q_nope (H*Dn) | q_rope (H*Dr) | k_rope (Dr) | latent (R)] = Wqkv x
        (low-rank query: [q_a | k_rope | latent] = Wqkv x, [q_nope | q_rope] = Wq_b rms_norm(q_a))
    cache[s, p] = [rms_norm(latent) | rope(k_rope)]            every row's entry, before any row attends
    q[h] = [W_uk[h]^T q_nope[h] (R) | rope(q_rope[h]) (Dr)]     the absorbed query
    P[h, t] = softmax_t(scale * q[h] . cache[s, t]),  t <= p
    h += Wo [W_uv[h] sum_t P[h, t] cache[s, t][:R]]_h
    x = rms_norm(h)
    h += Wdown (silu(gate) * up)(Wgate_up x)                                       dense layers
    h += shared(x) + sum_k w_k expert_k(x), experts in increasing index order         MoE layers

Dense GQA layers (`DenseLayerWeights`: Llama, Qwen2, Qwen3) replace the attention by `gqa_attention`,
on a cache whose rows are [K heads (G*D) | V heads (G*D)]; rope(x) on a head's halves [x1 | x2] is the
same formula (HF's rotate_half):

    [q (H*D) | k (G*D) | v (G*D)] = Wqkv x (+ bias)
    q[h], k[g] = rms_norm(q[h]), rms_norm(k[g])                   per head, Qwen3 only
    cache[s, p] = [rope(k[g])]_g | v                              every row's entry, before any row attends
    P[h, t] = softmax_t(scale * rope(q[h]) . K_t[h // (H/G)]),  t <= p
    h += Wo [sum_t P[h, t] V_t[h // (H/G)]]_h (+ o bias)

Routing (`route`): sigmoid scores s = sigmoid(Wrouter x); selection by s + bias: the topk_group groups
with the largest sum of their two best biased scores, then the top K experts of those groups, a tie
going to the lower index; weights s[expert] (normalized in float64 when norm_topk_prob) times
routed_scaling_factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanoseek.engine.decode import DenseLayerWeights, LayerWeights, Matrix
from nanoseek.engine.quant import int8_matmul


def matmul(x: torch.Tensor, m: Matrix) -> torch.Tensor:
    """x (N, in) W^T -> (N, out); int8 as `quant.int8_matmul` computes it (the same kernel as the C)."""
    if m.w is not None:
        return F.linear(x, m.w)
    return int8_matmul(x, m.q, m.scale, m.scale.to(torch.bfloat16))


def rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    w, eps = norm
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., Dr) in [evens | odds] order, cos / sin (Dr/2,): each pair (even, odd) rotated."""
    even, odd = x.chunk(2, dim=-1)
    return torch.cat([even * cos - odd * sin, odd * cos + even * sin], dim=-1)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def route(lw: LayerWeights, logits: torch.Tensor) -> list[tuple[int, float]]:
    """One row's router logits (E,) -> its K (expert, weight) pairs, best biased score first."""
    E, K, G, topk_group, norm_topk, scaling = lw.routing
    scores = logits.sigmoid()
    s, b = scores.tolist(), (scores + lw.bias).tolist()
    allowed = range(E)
    if G > 1:
        n = E // G
        group = [sum(sorted(b[g * n : (g + 1) * n], reverse=True)[:2]) for g in range(G)]
        best = sorted(range(G), key=lambda g: -group[g])[:topk_group]  # stable: lower index on ties
        allowed = [e for g in sorted(best) for e in range(g * n, (g + 1) * n)]
    ids = sorted(allowed, key=lambda e: -b[e])[:K]
    weights = [s[e] for e in ids]
    if norm_topk:
        total = sum(weights) + 1e-20
        weights = [w / total for w in weights]
    return [(e, w * scaling) for e, w in zip(ids, weights)]


def attention(lw: LayerWeights, h, x, rows, kv, cos, sin) -> torch.Tensor:
    """h + MLA(x) for rows [(slot, position)]; writes every row's cache entry first."""
    H, Dn, Dr, R, Dv = lw.dims
    a = matmul(x, lw.qkv)
    if lw.q_b is not None:
        q = matmul(rms_norm(a[:, : -Dr - R], lw.norm_q), lw.q_b)
    else:
        q = a[:, : H * (Dn + Dr)]
    k_rope, latent = a[:, -Dr - R : -R], a[:, -R:]
    for n, (slot, pos) in enumerate(rows):
        kv[slot, pos] = torch.cat([rms_norm(latent[n], lw.norm_kv), rope(k_rope[n], cos[n], sin[n])])
    outs = []
    for n, (slot, pos) in enumerate(rows):
        q_nope = q[n, : H * Dn].view(H, Dn, 1)
        q_rope = rope(q[n, H * Dn :].view(H, Dr), cos[n], sin[n])
        query = torch.cat([torch.bmm(lw.uk, q_nope)[..., 0], q_rope], dim=-1)  # (H, R + Dr)
        cached = kv[slot, : pos + 1]  # (S, R + Dr)
        p = (lw.scale * query @ cached.T).softmax(-1)  # (H, S)
        out_latent = p @ cached[:, :R]  # (H, R)
        outs.append(torch.bmm(lw.uv, out_latent[:, :, None]).flatten())  # (H * Dv,)
    return h + matmul(torch.stack(outs), lw.o)


def gqa_attention(lw: DenseLayerWeights, h, x, rows, kv, cos, sin) -> torch.Tensor:
    """h + GQA(x) for rows [(slot, position)]; writes every row's [K | V] cache entry first."""
    H, G, D = lw.dims
    a = matmul(x, lw.qkv)
    if lw.qkv_bias is not None:
        a = a + lw.qkv_bias
    q, k, v = a[:, : H * D].view(-1, H, D), a[:, H * D : (H + G) * D].view(-1, G, D), a[:, (H + G) * D :]
    if lw.norm_q is not None:
        q, k = rms_norm(q, lw.norm_q), rms_norm(k, lw.norm_k)
    for n, (slot, pos) in enumerate(rows):
        kv[slot, pos] = torch.cat([rope(k[n], cos[n], sin[n]).flatten(), v[n]])
    outs = []
    for n, (slot, pos) in enumerate(rows):
        query = rope(q[n], cos[n], sin[n]).view(G, H // G, D)  # the query heads of each K/V head
        keys, values = kv[slot, : pos + 1].view(pos + 1, 2, G, D).unbind(1)  # (S, G, D) each
        p = (lw.scale * query @ keys.permute(1, 2, 0)).softmax(-1)  # (G, H/G, S)
        outs.append((p @ values.transpose(0, 1)).flatten())  # (H * D,)
    out = matmul(torch.stack(outs), lw.o)
    return h + (out + lw.o_bias if lw.o_bias is not None else out)


def mlp(lw: LayerWeights, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h + MLP(x): dense SwiGLU, or the shared expert plus each row's routed experts."""
    if lw.router is None:
        return h + matmul(swiglu(matmul(x, lw.gate_up)), lw.down)
    E = lw.routing[0]
    logits = matmul(x, lw.router)
    if lw.shared_down is not None:
        shared_gu = logits[:, E:] if lw.shared_fused else matmul(x, lw.shared_gu)
        h = h + matmul(swiglu(shared_gu), lw.shared_down)
    out = []
    for n in range(x.shape[0]):
        row = h[n]
        for e, w in sorted(route(lw, logits[n, :E])):
            row = row + w * matmul(swiglu(matmul(x[n : n + 1], lw.experts_gu[e])), lw.experts_down[e])[0]
        out.append(row)
    return torch.stack(out)


@torch.no_grad()
def reference_step(layers: list[LayerWeights], h, positions, slots, kv, cos, sin) -> torch.Tensor:
    """What `CDecodeStep.hidden` computes, with the same arguments: h (N, C) the embedded tokens, row n
    at positions[n] (list of ints) of slot slots[n]; cos, sin (N, Dr/2); kv the layers' caches, one
    (slots, max_len, R + Dr) tensor each (dense: cos, sin (N, D/2), caches (slots, max_len, 2 G D)).
    Writes the cache rows; returns the final hidden states (N, C)."""
    rows = list(zip(slots, positions))
    for lw, cache in zip(layers, kv):
        attend = gqa_attention if isinstance(lw, DenseLayerWeights) else attention
        h = attend(lw, h, rms_norm(h, lw.norm_attn), rows, cache, cos, sin)
        h = mlp(lw, h, rms_norm(h, lw.norm_mlp))
    return h
