"""CPU speed kernels for the model's training and prefill forward, kept apart from the architecture.

The architecture files (layers.py, attention.py, moe.py, transformer.py) call these plain functions and
read like the math; each function computes exactly what its one-line reference says, only faster on
this project's CPU. On GPU, under bf16 or autocast, or without oneDNN, each is the plain torch call.
`tests/test_model.py` pins every kernel, forward and backward, to its reference, and the whole model's
loss and gradients to transformers'; `bench/model_bench.py` measures a training step.

    y  = rms_norm(x, weight, eps)                 # x / rms(x) * weight, fp32 inside
    y  = linear(x, layer)                         # layer(x) for a bias-free nn.Linear
    q, kv = fused_linear(x, q_proj, kv_a_proj)    # several layers reading the same x, one matmul
    y  = experts_ffn(x, expert_ids, weights, gate_proj, up_proj, down_proj)   # routed SwiGLU experts
    o  = causal_attention(q, k, v, scale)         # softmax(q k^T * scale + causal mask) v
    l  = linear_cross_entropy(h, lm_head.weight, targets)   # F.cross_entropy(h W^T, targets)

What each computes and why it exists (figures measured on this project's CPU, an AMD EPYC, fp32, one
thread; `python bench/model_bench.py` repeats the training-step measurement):

- **rms_norm**: y = x_hat * w, x_hat = x r, r = rsqrt(mean(x^2) + eps) (.., 1), in fp32. Its backward
  is written by hand in a few whole-tensor passes (half the time of autograd through F.rms_norm's
  composite):  g = dy * w,  dx = r * (g - x_hat * mean(g * x_hat)),  dw = sum over rows of dy * x_hat.
- **linear / fused_linear / matmul_nt**: oneDNN's linear measured 5-20% faster than the MKL sgemm that
  F.linear and torch.mm call on most training shapes, forward (x W^T) and grad-input (dy W) (slower on
  one, (2048, 640) x (640, 320)); MKL stays for the weight gradient (dy^T x), whose operands oneDNN
  would need as transposed copies:

      forward   y  = x W^T        oneDNN          x (.., in), W (out, in)
      backward  dx = dy W         oneDNN (W^T as the weight)
                dW = dy^T x       torch.mm        (out, in)

  `fused_linear` concatenates the weights of layers that read the same x (MLA's q_a/q and kv_a; an
  MLP's gate and up) into one wider matmul, split back per layer (wider matmuls run closer to peak);
  the parameters stay the separate HF-named layers. Only an exact bias-free `nn.Linear` takes these
  routes; any other layer (an int8 layer, a LoRA-wrapped one, one with a bias) runs as itself.
- **experts_ffn**: sum_k w_k FFN_{e_k}(x) for each token's K experts. The (token, expert) pairs are
  sorted by expert so each expert runs one matmul over its own rows, never every token through every
  expert: on GPU all experts in one `torch._grouped_mm` kernel; on CPU `_ExpertsFFN`, a loop of plain
  matmuls with a hand-written backward (torch's CPU grouped kernel measured ~15x slower than the loop).
  The hand-written backward matters: autograd through `weight[e]` for each of E experts materializes a
  zero (E, C, I) gradient per expert and adds them up, O(E^2) memory traffic; `_ExpertsFFN` writes each
  expert's gradient into its slice of one buffer. Gate and up run as one (C, 2I) matmul per expert;
  SwiGLU runs once over all rows and takes the routing weights there, on (rows, I) rather than on the
  (rows, C) outputs. Without autograd (generation) only the experts in use get their [gate | up]
  concatenated: the same matmuls on the same values, without copying every expert's weights per call
  (a quarter of a one-token forward; docs/engine.md).
- **causal_attention**: on GPU, SDPA (flash / memory-efficient kernels). On CPU, SDPA's fused kernel
  needs D == Dv (MLA has Dn + Dr != Dv) and its fallback computes every score and masks half; here the
  queries go in blocks of 128 rows and block i multiplies only the keys up to its last row, skipping
  (nb - 1) / (2 nb) of the score and value FLOPs for nb blocks (measured ~25% faster than SDPA's CPU
  fallback, forward + backward, at T = 256; smaller blocks lose to call overhead).
- **linear_cross_entropy**: the head's loss without the (tokens, vocab) fp32 logits. Rows go in chunks
  of about `chunk_elems / V` and the gradient is computed during the forward (the loss is a scalar, so
  its gradient is known up to the incoming scale, which backward applies):

      z    = h_c W^T               (n, V)   one chunk of logits, fp32
      loss = sum over counted rows of (logsumexp(z) - z[target]) / N_counted
      dz   = (softmax(z) - onehot(target)) * counted / N_counted   (n, V), in place in z's buffer
      dh_c = dz W   (n, C),   dW += dz^T h_c   (V, C)

  The matmuls are exactly those of the plain head; what goes away is the full fp32 (N, V) logits, its
  log-softmax copy and the gradient of each, several passes over N x V floats (at d10, 2048 x 16384:
  128 MiB apiece) that the chunked form keeps in cache.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


# ------------------------------------------------------------------------------ RMSNorm
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (.., C) / sqrt(mean(x^2) + eps) * weight (C,), computed in fp32, returned in x's dtype."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _RMSNormFn.apply(x, weight, eps)
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        x_hat = xf * r
        ctx.save_for_backward(x_hat, r, weight)
        ctx.x_dtype = x.dtype
        return (x_hat * weight.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x_hat, r, weight = ctx.saved_tensors
        dy = dy.float()
        g = dy * weight.float()
        dx = (g - x_hat * (g * x_hat).mean(-1, keepdim=True)).mul_(r)
        dw = (dy * x_hat).flatten(0, -2).sum(0)
        return dx.to(ctx.x_dtype), dw.to(weight.dtype), None


# ------------------------------------------------------------------------------ linear layers
def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (
        ONEDNN
        and x.device.type == "cpu"
        and x.dtype == w.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def matmul_nt(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (.., K) @ w^T for w (N, K) -> (.., N), through oneDNN on CPU in fp32 (with its backward)."""
    return _Linear.apply(x, w) if _use_onednn(x, w) else F.linear(x, w)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _onednn(x, w)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()
        dx = _onednn(dy, w.t()) if ctx.needs_input_grad[0] else None  # dy W: W^T (in, out) as the weight
        dw = dy.reshape(-1, w.shape[0]).T @ x.reshape(-1, w.shape[1]) if ctx.needs_input_grad[1] else None
        return dx, dw


def plain_linear(layer: nn.Module) -> bool:
    """Exactly a bias-free nn.Linear: its weight is all there is to it (not an int8 or LoRA layer)."""
    return type(layer) is nn.Linear and layer.bias is None


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """layer(x): a bias-free nn.Linear through `matmul_nt`; any other layer runs as itself."""
    return matmul_nt(x, layer.weight) if plain_linear(layer) else layer(x)


def fused_linear(x: torch.Tensor, *layers: nn.Module) -> list[torch.Tensor]:
    """[layer(x) for layer in layers] for layers that read the same x (.., C), as one matmul
    x [W_1; W_2; ..]^T split back per layer when all are bias-free nn.Linear and autograd records
    (training: one backward matmul for all of them). Without autograd (no_grad, inference_mode, or
    nothing requiring grad: the engine's forward, evaluation) one matmul per layer instead: the
    concatenation would copy every weight on every call (~35 MB per layer per token on a
    Qwen2.5-0.5B layer, more than the matmuls read)."""
    if not all(plain_linear(layer) for layer in layers):
        return [layer(x) for layer in layers]
    weights = [layer.weight for layer in layers]
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights))):
        return [matmul_nt(x, w) for w in weights]
    w = torch.cat(weights)  # (sum of outs, C)
    return list(matmul_nt(x, w).split([layer.out_features for layer in layers], dim=-1))


# ------------------------------------------------------------------------------ routed experts
def experts_ffn(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    weights: torch.Tensor,
    gate_proj: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """sum_k weights_k * down_e(silu(gate_e(x)) * up_e(x)) with e = expert_ids_k, per token.
    x (N, C), expert_ids / weights (N, K), stacked gate_proj / up_proj (E, C, I), down_proj (E, I, C)
    -> (N, C)."""
    N, K = expert_ids.shape
    E = gate_proj.shape[0]
    flat_ids = expert_ids.flatten()  # (N*K,)
    order = flat_ids.argsort(stable=True)
    token_of = order // K  # which token each sorted row comes from
    counts = torch.bincount(flat_ids, minlength=E)
    xs = x.index_select(0, token_of)  # (N*K, C) grouped by expert; backward is one index_add
    if HAS_GROUPED_MM and x.is_cuda and x.dtype in (torch.float32, torch.bfloat16):
        offsets = counts.cumsum(0).to(torch.int32)
        h = F.silu(_grouped_mm(xs, gate_proj, offsets)) * _grouped_mm(xs, up_proj, offsets)
        ys = _grouped_mm(h, down_proj, offsets)
        ys = ys * weights.flatten()[order, None].to(ys.dtype)
    else:
        # under autocast compute in its dtype, as the matmuls the Function replaces would have
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        xs, gate, up, down = (t.to(dtype) for t in (xs, gate_proj, up_proj, down_proj))
        row_weights = weights.flatten()[order].to(dtype)  # (N*K,) in the sorted order
        if torch.is_grad_enabled() and any(t.requires_grad for t in (xs, gate, up, down, row_weights)):
            ys = _ExpertsFFN.apply(xs, gate, up, down, row_weights, counts.tolist())
        else:  # no backward to write: concatenate [gate | up] of the experts in use only
            rows = _expert_rows(counts.tolist())
            ys, _ = _swiglu_experts(xs, lambda e: torch.cat([gate[e], up[e]], -1), down, row_weights, rows)
    return torch.zeros_like(x).index_add_(0, token_of, ys.to(x.dtype))


def _swiglu_experts(xs, gate_up, down, w, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """_ExpertsFFN's forward: ys (M, C) and gu (M, 2I), where gate_up(e) is expert e's [gate_e | up_e]
    (C, 2I) and rows lists (expert, its row range)."""
    gu = xs.new_empty(xs.shape[0], 2 * down.shape[1])
    for e, r in rows:
        torch.mm(xs[r], gate_up(e), out=gu[r])
    g, u = gu.chunk(2, dim=-1)
    hw = (F.silu(g) * u).mul_(w[:, None])
    ys = xs.new_empty(xs.shape[0], down.shape[-1])
    for e, r in rows:
        torch.mm(hw[r], down[e], out=ys[r])
    return ys, gu


class _ExpertsFFN(torch.autograd.Function):
    """Weighted SwiGLU experts over rows grouped by expert: xs (M, C), the first counts[0] rows for
    expert 0, ...; w (M,) each row's routing weight, applied to h (M, I) rather than to ys (M, C).

        gu_e = xs_e [gate_e | up_e]        (n_e, 2I)   one matmul per expert
        hw   = w * silu(g) * u             (M, I)      one elementwise pass over all rows
        ys_e = hw_e down_e                 (n_e, C)

    Backward (per expert e, rows r_e; s = sigmoid(g), h = silu(g) * u):
        dhw = dys_e down_e^T,  d down_e = hw_e^T dys_e,  dw = sum_I dhw * h,  dh = w * dhw
        dg = dh * u * s * (1 + g (1 - s)),  du = dh * silu(g)
        dxs_e = [dg | du] [gate_e | up_e]^T,  d[gate_e | up_e] = xs_e^T [dg | du]
    Each expert's weight gradient is written into its slice of one (E, ..) buffer; h is recomputed
    from the saved gu rather than kept.
    """

    @staticmethod
    def forward(ctx, xs, gate, up, down, w, counts: list[int]):
        gate_up = torch.cat([gate, up], dim=-1)  # (E, C, 2I): backward writes d[gate | up] into one buffer
        rows = _expert_rows(counts)
        ys, gu = _swiglu_experts(xs, gate_up.__getitem__, down, w, rows)
        ctx.save_for_backward(xs, gate_up, down, gu, w)
        ctx.rows = rows
        return ys

    @staticmethod
    def backward(ctx, dys):
        xs, gate_up, down, gu, w = ctx.saved_tensors
        rows, dys = ctx.rows, dys.contiguous()
        g, u = gu.chunk(2, dim=-1)
        s = torch.sigmoid(g)
        silu_g = g * s
        h = silu_g * u
        hw = h * w[:, None]
        dhw = torch.empty_like(h)
        d_down = torch.zeros_like(down)
        for e, r in rows:
            torch.mm(dys[r], down[e].T, out=dhw[r])
            torch.mm(hw[r].T, dys[r], out=d_down[e])
        dw = (dhw * h).sum(-1)
        dh = dhw.mul_(w[:, None])
        dgu = torch.cat([dh * u * s * (1 + g * (1 - s)), dh * silu_g], dim=-1)  # (M, 2I)
        dxs = torch.empty_like(xs)
        d_gate_up = torch.zeros_like(gate_up)
        for e, r in rows:
            torch.mm(dgu[r], gate_up[e].T, out=dxs[r])
            torch.mm(xs[r].T, dgu[r], out=d_gate_up[e])
        d_gate, d_up = d_gate_up.chunk(2, dim=-1)
        return dxs, d_gate.contiguous(), d_up.contiguous(), d_down, dw, None


def _expert_rows(counts: list[int]) -> list[tuple[int, slice]]:
    """(expert, its row range) for every expert with at least one row."""
    ends = list(itertools.accumulate(counts))
    return [(e, slice(end - n, end)) for e, (n, end) in enumerate(zip(counts, ends)) if n]


def _grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    # (N, in) x (E, in, out) -> (N, out), rows grouped by expert; offsets (E,) are the groups' ends.
    # torch's CPU backward needs a dense incoming gradient; _DenseGrad makes sure it gets one
    out = torch._grouped_mm(a, b, offs=offsets)
    return _DenseGrad.apply(out) if out.requires_grad else out


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward passes on a contiguous gradient (grouped_mm's CPU kernel rejects
    expanded ones)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


# ------------------------------------------------------------------------------ attention
def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, block: int = 128
) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v for q, k (B, H, T, D), v (B, H, T, Dv) -> (B, H, T, Dv).
    On CPU, query blocks of `block` rows; block i sees keys [0, e_i) only:

        S_i = q[i] k[:e_i]^T * scale + mask   (B, H, block, e_i),   out[i] = softmax(S_i) v[:e_i]
    """
    B, H, T, _ = q.shape
    if q.is_cuda or block >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    q, k, v = q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)  # (B*H, T, D): views when contiguous
    mask = torch.full((T, T), float("-inf"), device=q.device, dtype=q.dtype).triu_(1)  # 0 on/below diagonal
    outs = []
    for start in range(0, T, block):
        end = min(start + block, T)
        # mask + scale * q k^T in one batched GEMM: (B*H, rows, end)
        scores = torch.baddbmm(
            mask[start:end, :end], q[:, start:end], k[:, :end].transpose(1, 2), alpha=scale
        )
        probs = scores.float().softmax(dim=-1).to(v.dtype)
        outs.append(torch.bmm(probs, v[:, :end]))  # (B*H, rows, Dv)
    return torch.cat(outs, dim=1).view(B, H, T, -1)


# ------------------------------------------------------------------------------ output head loss
def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_elems: int = 1 << 21
) -> torch.Tensor:
    """Mean cross-entropy of logits h @ weight^T against targets (ignore index -100; 0, not NaN, when
    every target is ignored). h (N, C), weight (V, C), targets (N,) -> scalar fp32."""
    return _LinearCrossEntropy.apply(h, weight, targets, chunk_elems)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_elems: int):
        N, V = h.shape[0], weight.shape[0]
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        counted = targets != -100  # (N,)
        n_counted = counted.sum().clamp(min=1).float()
        safe_targets = targets.clamp(min=0)
        dz = h.new_empty(N, V) if want_dh or want_dw else None  # d loss / d logits, filled per chunk
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        rows = max(1, chunk_elems // V)
        for start in range(0, N, rows):
            c = slice(start, min(start + rows, N))
            z = matmul_nt(h[c], weight).float()  # (n, V)
            t, keep = safe_targets[c, None], counted[c]
            target_logit = z.gather(1, t).squeeze(1)
            zmax = z.amax(dim=1, keepdim=True)
            p = z.sub_(zmax).exp_()  # z's buffer now holds exp(z - max)
            sums = p.sum(dim=1, keepdim=True)
            lse = zmax.squeeze(1) + sums.log().squeeze(1)
            total += ((lse - target_logit) * keep).sum()
            if dz is not None:
                p.mul_((keep[:, None] / n_counted) / sums)  # softmax, scaled per counted row
                dz[c] = p.scatter_add_(1, t, -(keep / n_counted)[:, None])
        dh = matmul_nt(dz, weight.T) if want_dh else None  # (N, C)
        dw = dz.T @ h if want_dw else None  # (V, C)
        ctx.save_for_backward(dh, dw)
        return total / n_counted

    @staticmethod
    def backward(ctx, grad):
        dh, dw = ctx.saved_tensors
        return (
            None if dh is None else dh * grad.to(dh.dtype),
            None if dw is None else dw * grad.to(dw.dtype),
            None,
            None,
        )
