/* A whole decode step in one call (`decode_tokens`): N new token ids, each at a position of a cache
 * slot, looked up in the embedding table, through every decoder layer, and on through the final norm
 * and the output head to logits (and their argmax: the MTP drafter's drafts). Rows may share a slot at
 * consecutive positions (speculation's [pending, draft]): every row's cache entry is written before
 * any row attends, and each attends up to its position.
 *
 * Built with kernels.c into one library and driven by decode_step.py (`CDecodeStep`), which fills the
 * Layer structs below with pointers to FastDecoder's fused weights. A decode step is the weights
 * streamed once (kernels.c's matmuls) plus ~70 small operations per layer (norms, rope, attention over
 * the cache, routing, activations) that cost a few microseconds each as torch calls and well under
 * one here. This file is those operations written out plainly, with the formulas of reference.py
 * (the same step in torch, the specification this code is tested against), row by row:
 *
 *   x = rms_norm(h)                              attention input, (N, C)
 *   a = x Wqkv^T = [q_nope (H*Dn) | q_rope (H*Dr) | k_rope (Dr) | latent (R)]   (or via q_a, q_b)
 *   cache[slot, pos] = [rms_norm(latent) | rope(k_rope)]
 *   q[h] = [W_uk[h]^T q_nope[h] (R) | rope(q_rope[h]) (Dr)]                      absorbed query
 *   p[h, t] = softmax_t(scale * q[h] . cache[slot, t]),  t <= pos
 *   h += Wo [W_uv[h] sum_t p[h, t] cache[slot, t][:R]]_h
 *   x = rms_norm(h);  h += dense SwiGLU(x), or shared expert(x) + sum_k w_k expert_k(x) (MoE)
 *
 * Rope dimensions arrive in [evens | odds] order (the fused rows were reordered that way), so rope is
 * x * [cos | cos] + swap_halves(x) * [-sin | sin]. Routing follows reference.py's `route`: sigmoid
 * scores, bias-corrected group-limited top-k, ties to the lower index, weights normalized in double.
 * Each expert runs once on the rows routed to it, and a row adds its experts in expert order.
 *
 * Dense families (Llama, Qwen2, Qwen3: `kind` 1) replace MLA by grouped-query attention over a K/V cache
 * whose rows are [K heads (G*D) | V heads (G*D)], K already rotated (reference.py's `gqa_attention`):
 *
 *   a = x Wqkv^T (+ bias) = [q (H*D) | k (G*D) | v (G*D)]
 *   q, k = rms_norm per head (Qwen3), then rope on each head's halves [x1 | x2] (HF's rotate_half)
 *   cache[slot, pos] = [k | v]
 *   p[h, t] = softmax_t(scale * q[h] . k_t[h / (H/G)]),  t <= pos
 *   h += Wo [sum_t p[h, t] v_t[h / (H/G)]]_h (+ o bias)
 *
 * Every row is computed the same way whatever the other sequences in the batch are (the matmuls give
 * a row the same bits in any batch, attention and routing are per row), so a request's tokens do not
 * depend on what else is being decoded.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void matmul_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                int accumulate);
int matmul_i8(const float *x, const int8_t *q, const float *ws, float *y, long rows, long in, long out,
              float alpha, int accumulate);

/* y = (accumulate ? y : 0) + alpha x W^T: fp32 W (out, in), or int8 q (out, in) with per-row scales.
 * out == 0 means the matrix is absent. */
typedef struct {
    const float *w;
    const int8_t *q;
    const float *scale;
    long out, in;
} Weight;

typedef struct {
    long C, H, Dn, Dr, R, Dv, q_rank; /* q_rank 0: a full-rank query, qkv = [q | k_rope | latent] */
    const float *norm_attn, *norm_mlp, *norm_kv, *norm_q;
    float eps_attn, eps_mlp, eps_kv, eps_q;
    Weight qkv, q_b, o;
    const float *uk; /* (H, R, Dn): W_uk^T per head */
    const float *uv; /* (H, Dv, R) */
    float scale;
    /* MLP: dense when E == 0 (gate_up (2I, C), down (C, I)); else MoE */
    Weight gate_up, down;
    long E, K, G, topk_group;
    int norm_topk, shared_fused; /* shared_fused: router's rows E.. are the shared expert's gate, up */
    double routed_scaling;
    Weight router;                 /* (E [+ 2 I_shared], C), fp32 */
    Weight shared_gu, shared_down; /* out == 0: no shared expert (or its gate, up fused into router) */
    const float *bias;             /* (E,) e_score_correction_bias */
    const Weight *experts_gu, *experts_down; /* E each: (2I, C), (C, I) */
    /* kind 1: grouped-query attention (dense families); H query heads, Hkv K/V heads, of D dims */
    int kind;
    long Hkv, D;
    const float *qkv_bias;          /* (H*D + 2*Hkv*D) or NULL */
    const float *o_bias;            /* (C) or NULL */
    const float *norm_qh, *norm_kh; /* (D) per-head RMSNorm of q and k (Qwen3), or NULL */
    float eps_qh, eps_kh;
} Layer;


static int mm(const Weight *W, const float *x, float *y, long rows, float alpha, int accumulate) {
    if (W->w != NULL) {
        matmul_f32(x, W->w, y, rows, W->in, W->out, alpha, accumulate);
        return 0;
    }
    return matmul_i8(x, W->q, W->scale, y, rows, W->in, W->out, alpha, accumulate);
}

/* y = x / sqrt(mean(x^2) + eps) * w */
static void rms_norm(const float *x, const float *w, float eps, float *y, long n) {
    double squares = 0.0;
    for (long i = 0; i < n; i++) squares += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(squares / n + eps));
    for (long i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

/* x (Dr) in [evens | odds] order -> y = x * cos2 + swap_halves(x) * sin2 */
static void rope(const float *x, const float *cos2, const float *sin2, float *y, long Dr) {
    long half = Dr / 2;
    for (long j = 0; j < Dr; j++) y[j] = x[j] * cos2[j] + x[(j + half) % Dr] * sin2[j];
}

/* act[i] = silu(gu[i]) * gu[I + i] */
static void swiglu(const float *gu, float *act, long I) {
    for (long i = 0; i < I; i++) act[i] = gu[i] / (1.0f + expf(-gu[i])) * gu[I + i];
}

/* For each head: y[n] (out) = W[head] x[n], x[n] = the head's `in` entries of row n of src (row stride
 * ld_src, head stride in), written to row n of dst (row stride ld_dst, head stride hs_dst). gather and
 * out are scratch of rows * in and rows * out floats. */
static void per_head(const float *src, long ld_src, const float *W, long H, long in, long out, float *dst,
                     long ld_dst, long hs_dst, long rows, float *gather, float *result) {
    for (long hd = 0; hd < H; hd++) {
        for (long n = 0; n < rows; n++)
            memcpy(gather + n * in, src + n * ld_src + hd * in, sizeof(float) * in);
        matmul_f32(gather, W + hd * out * in, result, rows, in, out, 1.0f, 0);
        for (long n = 0; n < rows; n++)
            memcpy(dst + n * ld_dst + hd * hs_dst, result + n * out, sizeof(float) * out);
    }
}

/* p (H, S): each row h -> softmax over its S entries, in place */
static void softmax_rows(float *p, long H, long S) {
    for (long hd = 0; hd < H; hd++) {
        float *ph = p + hd * S, top = -INFINITY, total = 0.0f;
        for (long t = 0; t < S; t++) top = fmaxf(top, ph[t]);
        for (long t = 0; t < S; t++) total += ph[t] = expf(ph[t] - top);
        for (long t = 0; t < S; t++) ph[t] /= total;
    }
}

/* One row's attention over its cache rows 0..S-1 (D = R + Dr each): q (H, D) -> out latent (H, R).
 * p: scratch of H * S floats. */
static void attend(const float *q, const float *cache, long S, long H, long R, long D, float scale, float *p,
                   float *ol) {
    matmul_f32(q, cache, p, H, D, S, scale, 0); /* p[h, t] = scale * q[h] . cache[t], (H, S) */
    softmax_rows(p, H, S);
    memset(ol, 0, sizeof(float) * H * R);
    for (long t = 0; t < S; t++) /* sum_t p[h, t] cache[t][:R] */
        for (long hd = 0; hd < H; hd++) {
            float pt = p[hd * S + t], *olh = ol + hd * R;
            const float *c = cache + t * D;
            for (long i = 0; i < R; i++) olh[i] += pt * c[i];
        }
}

/* Where each row's cache rows start, and the rope factors of every position. */
typedef struct {
    long N, max_len;
    const long *slots, *positions;
    const float *cos2, *sin2; /* (max_len, Dr): row p holds position p's factors (GQA: (max_len, D)) */
} Rows;

/* h (N, C) += MLA(x) for every row; writes each row's cache entry at its position. */
static int attention(const Layer *L, const float *x, float *h, float *kv, const Rows *rows, float *work) {
    long N = rows->N, H = L->H, Dn = L->Dn, Dr = L->Dr, R = L->R, Dv = L->Dv, D = R + Dr;
    long A = L->qkv.out, B = L->q_b.out, wide = R > Dn ? (R > Dv ? R : Dv) : (Dn > Dv ? Dn : Dv);
    float *a = work, *qn = a + N * A, *qb = qn + N * L->q_rank, *q = qb + N * B;
    float *ol = q + N * H * D, *o_in = ol + N * H * R, *gather = o_in + N * H * Dv;
    float *result = gather + N * wide, *p = result + N * wide; /* p: H * max_len */
    if (mm(&L->qkv, x, a, N, 1.0f, 0)) return -1;
    const float *q_src = a; /* q_nope then q_rope, row stride ld */
    long ld = A;
    if (L->q_rank) {
        for (long n = 0; n < N; n++) rms_norm(a + n * A, L->norm_q, L->eps_q, qn + n * L->q_rank, L->q_rank);
        if (mm(&L->q_b, qn, qb, N, 1.0f, 0)) return -1;
        q_src = qb, ld = B;
    }
    for (long n = 0; n < N; n++) {
        const float *an = a + n * A, *cos2 = rows->cos2 + rows->positions[n] * Dr;
        const float *sin2 = rows->sin2 + rows->positions[n] * Dr;
        float *entry = kv + (rows->slots[n] * rows->max_len + rows->positions[n]) * D;
        rms_norm(an + A - R, L->norm_kv, L->eps_kv, entry, R);
        rope(an + A - R - Dr, cos2, sin2, entry + R, Dr);
        for (long hd = 0; hd < H; hd++)
            rope(q_src + n * ld + H * Dn + hd * Dr, cos2, sin2, q + (n * H + hd) * D + R, Dr);
    }
    per_head(q_src, ld, L->uk, H, Dn, R, q, H * D, D, N, gather, result); /* q[n, h, :R] = W_uk[h]^T q_nope */
    for (long n = 0; n < N; n++) {
        const float *cache = kv + rows->slots[n] * rows->max_len * D;
        attend(q + n * H * D, cache, rows->positions[n] + 1, H, R, D, L->scale, p, ol + n * H * R);
    }
    per_head(ol, H * R, L->uv, H, R, Dv, o_in, H * Dv, Dv, N, gather, result); /* o_in[n, h] = W_uv[h] ol */
    return mm(&L->o, o_in, h, N, 1.0f, 1);
}

/* The cache rows one row's attention walks are far apart in memory (a slot's positions, then the next
 * slot's) and each is a few hundred floats read once: the hardware prefetcher falls behind, and the
 * loads stall on memory. So each loop asks for the row PREFETCH_ROWS positions ahead. */
enum { PREFETCH_ROWS = 4 };
static inline void prefetch_row(const float *row, long n) {
    for (long i = 0; i < n; i += 16) __builtin_prefetch(row + i);
}

/* a . b over n floats: 16 partial sums (one vector register), added pairwise (a few vector adds) */
static inline float dot(const float *a, const float *b, long n) {
    float part[16] = {0}, tail = 0.0f;
    long i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) part[l] += a[i + l] * b[i + l];
    for (; i < n; i++) tail += a[i] * b[i];
    for (int width = 8; width > 0; width /= 2)
        for (int l = 0; l < width; l++) part[l] += part[l + width];
    return part[0] + tail;
}

/* h (N, C) += GQA(x) for every row (kind 1); writes each row's [K | V] cache entry at its position. */
static int gqa_attention(const Layer *L, const float *x, float *h, float *kv, const Rows *rows, float *work) {
    long N = rows->N, H = L->H, G = L->Hkv, D = L->D, A = L->qkv.out, W = 2 * G * D, group = H / G;
    float *a = work, *out = a + N * A, *p = out + N * H * D; /* p: H * max_len */
    float rotated[D];
    if (mm(&L->qkv, x, a, N, 1.0f, 0)) return -1;
    for (long n = 0; n < N; n++) {
        float *an = a + n * A, *entry = kv + (rows->slots[n] * rows->max_len + rows->positions[n]) * W;
        const float *cos2 = rows->cos2 + rows->positions[n] * D, *sin2 = rows->sin2 + rows->positions[n] * D;
        if (L->qkv_bias)
            for (long i = 0; i < A; i++) an[i] += L->qkv_bias[i];
        for (long hd = 0; hd < H + G; hd++) { /* q heads, then k heads: norm (Qwen3), rope in place */
            float *head = an + hd * D;
            if (L->norm_qh)
                rms_norm(head, hd < H ? L->norm_qh : L->norm_kh, hd < H ? L->eps_qh : L->eps_kh, head, D);
            rope(head, cos2, sin2, rotated, D);
            memcpy(head, rotated, sizeof(float) * D);
        }
        memcpy(entry, an + H * D, sizeof(float) * W); /* [k | v] */
    }
    for (long n = 0; n < N; n++) { /* each cache row read once, front to back, for every head */
        const float *cache = kv + rows->slots[n] * rows->max_len * W, *q = a + n * A;
        long S = rows->positions[n] + 1;
        float *o = out + n * H * D;
        for (long t = 0; t < S; t++) { /* p[hd, t] = scale * q[hd] . k[t] of its group */
            if (t + PREFETCH_ROWS < S) prefetch_row(cache + (t + PREFETCH_ROWS) * W, G * D);
            for (long hd = 0; hd < H; hd++)
                p[hd * S + t] = L->scale * dot(q + hd * D, cache + t * W + hd / group * D, D);
        }
        softmax_rows(p, H, S);
        memset(o, 0, sizeof(float) * H * D);
        for (long t = 0; t < S; t++) { /* o[hd] = sum_t p[hd, t] v[t] of its group */
            const float *v = cache + t * W + G * D;
            if (t + PREFETCH_ROWS < S) prefetch_row(v + PREFETCH_ROWS * W, G * D);
            for (long hd = 0; hd < H; hd++) {
                float pt = p[hd * S + t], *oh = o + hd * D;
                const float *vg = v + hd / group * D;
                for (long d = 0; d < D; d++) oh[d] += pt * vg[d];
            }
        }
    }
    if (mm(&L->o, out, h, N, 1.0f, 1)) return -1;
    if (L->o_bias)
        for (long n = 0; n < N; n++)
            for (long c = 0; c < L->C; c++) h[n * L->C + c] += L->o_bias[c];
    return 0;
}

/* The K experts of one row's router logits (E): ids[k] and weights[k], as reference.py's `route`
 * picks them. */
static void route(const Layer *L, const float *logits, long ids[], float weights[]) {
    long E = L->E, G = L->G, n = E / G;
    float s[E], b[E];
    int allowed[E];
    for (long e = 0; e < E; e++) {
        s[e] = 1.0f / (1.0f + expf(-logits[e]));
        b[e] = s[e] + L->bias[e];
        allowed[e] = G <= 1;
    }
    if (G > 1) {
        double group[G];
        int taken[G];
        for (long g = 0; g < G; g++) { /* a group's score: the sum of its two best biased scores */
            const float *bg = b + g * n;
            long first = 0;
            for (long e = 1; e < n; e++) first = bg[e] > bg[first] ? e : first;
            long second = first == 0 ? 1 : 0;
            for (long e = 0; e < n; e++) second = e != first && bg[e] > bg[second] ? e : second;
            group[g] = (double)bg[first] + bg[second];
            taken[g] = 0;
        }
        for (long k = 0; k < L->topk_group; k++) {
            long best = -1;
            for (long g = 0; g < G; g++) best = !taken[g] && (best < 0 || group[g] > group[best]) ? g : best;
            taken[best] = 1;
            for (long e = best * n; e < (best + 1) * n; e++) allowed[e] = 1;
        }
    }
    double w[L->K], total = 0.0;
    for (long k = 0; k < L->K; k++) { /* best biased score first, the lower index on a tie */
        long best = -1;
        for (long e = 0; e < E; e++) best = allowed[e] && (best < 0 || b[e] > b[best]) ? e : best;
        allowed[best] = 0;
        ids[k] = best;
        w[k] = s[best];
        total += w[k];
    }
    for (long k = 0; k < L->K; k++)
        weights[k] = (float)((L->norm_topk ? w[k] / (total + 1e-20) : w[k]) * L->routed_scaling);
}

/* h (N, C) += MLP(x): dense SwiGLU, or MoE: the shared expert, then each routed expert once on the rows
 * routed to it (gathered), each row adding its experts' outputs in expert order. */
static int mlp(const Layer *L, const float *x, float *h, long N, float *work) {
    long C = L->C;
    if (L->E == 0) {
        long I = L->gate_up.out / 2;
        float *gu = work, *act = gu + N * 2 * I;
        if (mm(&L->gate_up, x, gu, N, 1.0f, 0)) return -1;
        for (long n = 0; n < N; n++) swiglu(gu + n * 2 * I, act + n * I, I);
        return mm(&L->down, act, h, N, 1.0f, 1);
    }
    long E = L->E, K = L->K, ldr = L->router.out, Is = L->shared_down.in;
    float *logits = work, *shared_gu = logits + N * ldr, *shared_act = shared_gu + N * L->shared_gu.out;
    float *xe = shared_act + N * Is, *ye = xe + N * C, *gu = ye + N * C; /* then act */
    if (mm(&L->router, x, logits, N, 1.0f, 0)) return -1;
    const float *sgu = logits + E; /* the shared expert's [gate | up], row stride lds */
    long lds = ldr;
    if (!L->shared_fused && L->shared_gu.out) {
        if (mm(&L->shared_gu, x, shared_gu, N, 1.0f, 0)) return -1;
        sgu = shared_gu, lds = L->shared_gu.out;
    }
    if (L->shared_down.out) {
        for (long n = 0; n < N; n++) swiglu(sgu + n * lds, shared_act + n * Is, Is);
        if (mm(&L->shared_down, shared_act, h, N, 1.0f, 1)) return -1;
    }
    long *ids = malloc(sizeof(long) * N * K * 2), *members = ids + N * K;
    float *weights = malloc(sizeof(float) * N * K * 2), *member_weights = weights + N * K;
    if (ids == NULL || weights == NULL) {
        free(ids);
        free(weights);
        return -1;
    }
    for (long n = 0; n < N; n++) route(L, logits + n * ldr, ids + n * K, weights + n * K);
    int status = 0;
    for (long e = 0; e < E && status == 0; e++) {
        long rows = 0;
        for (long n = 0; n < N; n++)
            for (long k = 0; k < K; k++)
                if (ids[n * K + k] == e) {
                    members[rows] = n, member_weights[rows] = weights[n * K + k];
                    memcpy(xe + rows++ * C, x + n * C, sizeof(float) * C);
                }
        if (rows == 0) continue;
        const Weight *up = L->experts_gu + e, *down = L->experts_down + e;
        long I = down->in;
        float *act = gu + rows * 2 * I;
        status = mm(up, xe, gu, rows, 1.0f, 0);
        for (long r = 0; r < rows && status == 0; r++) swiglu(gu + r * 2 * I, act + r * I, I);
        if (status == 0) status = mm(down, act, ye, rows, 1.0f, 0);
        for (long r = 0; r < rows && status == 0; r++) {
            float *hn = h + members[r] * C, wr = member_weights[r];
            for (long c = 0; c < C; c++) hn[c] += wr * ye[r * C + c];
        }
    }
    free(ids);
    free(weights);
    return status;
}

/* Floats of scratch space a layer needs for N rows and caches of max_len positions. */
static long layer_work(const Layer *L, long N, long max_len) {
    if (L->kind == 1) {
        long attn = N * (L->qkv.out + L->H * L->D) + L->H * max_len;
        long dense = N * (L->gate_up.out + L->gate_up.out / 2);
        return (attn > dense ? attn : dense) + N * L->C;
    }
    long wide = L->R > L->Dn ? (L->R > L->Dv ? L->R : L->Dv) : (L->Dn > L->Dv ? L->Dn : L->Dv);
    long attn = N * (L->qkv.out + L->q_rank + L->q_b.out + L->H * (L->R + L->Dr) + L->H * L->R +
                     L->H * L->Dv + 2 * wide) +
                L->H * max_len;
    long dense = N * (L->gate_up.out + L->gate_up.out / 2), expert = 0;
    for (long e = 0; e < L->E; e++) {
        long need = L->experts_gu[e].out + L->experts_gu[e].out / 2;
        expert = need > expert ? need : expert;
    }
    long moe = N * (L->router.out + L->shared_gu.out + L->shared_down.in + 2 * L->C + expert);
    long most = attn > dense ? attn : dense;
    return (most > moe ? most : moe) + N * L->C;
}

/* What a step starts from and ends with, around its layers. A plain step starts from the tokens'
 * embeddings; the MTP module's starts from eh_proj [enorm(embedding) | hnorm(h_prev)], the main
 * model's hidden state one position back beside the embedding of the token one ahead. Either ends,
 * when the caller asks for logits, with the final norm and the output head. */
typedef struct {
    const float *embed; /* (V, C): token t's embedding is row t */
    long V;
    const float *norm_emb, *norm_prev; /* the MTP module's enorm, hnorm (C); NULL: a plain step */
    float eps_emb, eps_prev;
    Weight mix;             /* the MTP module's eh_proj (C, 2C) */
    const float *norm_out;  /* the final norm (C) before the head */
    float eps_out;
    Weight head;            /* (V, C) */
    const float *cos2, *sin2; /* (max_len, Dr) rope factors by position: [cos | cos], [-sin | sin] */
} Ends;

/* Floats of scratch space decode_tokens needs for N rows and caches of max_len positions: the MTP
 * input (N, 2C), then the largest layer's. */
long decode_tokens_work(const Layer *layers, long n_layers, long N, long max_len) {
    long most = 0;
    for (long l = 0; l < n_layers; l++) {
        long need = layer_work(layers + l, N, max_len);
        most = need > most ? need : most;
    }
    return 2 * N * layers[0].C + most;
}

/* N tokens through every layer: row n is token tokens[n] at positions[n] of cache slot slots[n] (h_prev
 * (N, C): the MTP step's main hidden states, else NULL). Layer l's cache is kv[l], (slots, max_len,
 * R + Dr) fp32 contiguous (GQA: 2 Hkv D). Writes each layer's cache rows and h (N, C), the final hidden
 * states before the final norm; with logits (N, V) also the head's logits, and with argmax (N) each
 * row's most likely token (the lowest id among ties). work: decode_tokens_work(layers, n_layers, N,
 * max_len) floats. Returns 0; -1 when a buffer could not be allocated; -2 for a token id outside
 * [0, V). */
int decode_tokens(const Layer *layers, long n_layers, const Ends *ends, const long *tokens, const float *h_prev,
                  long N, float *const *kv, const long *slots, const long *positions, long max_len, float *h,
                  float *logits, long *argmax, float *work) {
    long C = layers[0].C, V = ends->V;
    float *x = work, *rest = work + 2 * N * C; /* x: the MTP input (N, 2C), then the head's input (N, C) */
    for (long n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= V) return -2;
    for (long n = 0; n < N; n++) {
        const float *e = ends->embed + tokens[n] * C;
        if (ends->norm_emb == NULL) {
            memcpy(h + n * C, e, sizeof(float) * C);
            continue;
        }
        rms_norm(e, ends->norm_emb, ends->eps_emb, x + n * 2 * C, C);
        rms_norm(h_prev + n * C, ends->norm_prev, ends->eps_prev, x + n * 2 * C + C, C);
    }
    if (ends->norm_emb != NULL && mm(&ends->mix, x, h, N, 1.0f, 0)) return -1;
    Rows rows = {N, max_len, slots, positions, ends->cos2, ends->sin2};
    for (long l = 0; l < n_layers; l++) {
        const Layer *L = layers + l;
        float *y = rest, *scratch = rest + N * C;
        for (long n = 0; n < N; n++) rms_norm(h + n * C, L->norm_attn, L->eps_attn, y + n * C, C);
        if ((L->kind == 1 ? gqa_attention : attention)(L, y, h, kv[l], &rows, scratch)) return -1;
        for (long n = 0; n < N; n++) rms_norm(h + n * C, L->norm_mlp, L->eps_mlp, y + n * C, C);
        if (mlp(L, y, h, N, scratch)) return -1;
    }
    if (logits == NULL) return 0;
    for (long n = 0; n < N; n++) rms_norm(h + n * C, ends->norm_out, ends->eps_out, x + n * C, C);
    if (mm(&ends->head, x, logits, N, 1.0f, 0)) return -1;
    for (long n = 0; n < N && argmax != NULL; n++) {
        const float *row = logits + n * V;
        long best = 0;
        for (long v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        argmax[n] = best;
    }
    return 0;
}
