"""Cross-entropy of a linear output head without materializing the (tokens, vocab) logits.

    loss = linear_cross_entropy(h, lm_head.weight, targets)   # == F.cross_entropy(h @ W^T, targets)

h (N, C), W (V, C), targets (N,) with -100 ignored; the mean over the counted targets (0, not NaN,
when every target is ignored). Rows are processed in chunks of about `chunk_elems / V` rows, and the
gradient is computed during the forward pass (the loss is a scalar, so its gradient is known up to
the incoming scale, which backward applies):

    z   = h_c W^T                 (n, V)  one chunk of logits, fp32
    p   = softmax(z),  loss_c = sum over counted rows of (logsumexp(z) - z[target])
    dz  = (p - onehot(target)) * counted / N_counted        (n, V)  in place in z's buffer
    dh_c = dz W                   (n, C),   dW += dz^T h_c   (V, C)

The matmuls are exactly those of the plain head (forward, grad input, grad weight); what goes away
is the full fp32 (N, V) logits tensor, its log-softmax copy and the gradient of each, several
passes over N x V floats (at d10, 2048 x 16384: 128 MiB apiece) that the chunked form keeps in cache.
"""

from __future__ import annotations

import torch

from nanoseek.model.linear import matmul_nt


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_elems: int = 1 << 21
) -> torch.Tensor:
    """Mean cross-entropy of logits h @ weight^T against targets (ignore index -100).
    h (N, C), weight (V, C), targets (N,) -> scalar fp32."""
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
