/* One token through every decoder layer of a DeepSeek-V3 model in one call: the batch-1 decode step.
 *
 * Built with kernels.c into one library and driven by decode_one.py (`OneTokenDecoder`), which fills
 * the Layer structs below with pointers to FastDecoder's fused weights. At batch 1 a decode step is
 * the weights streamed once (kernels.c's matmuls) plus ~70 small operations per layer (norms, rope,
 * the attention over the cache, routing, activations) that cost a few microseconds each as torch
 * calls and well under one here: this file is those operations, written out plainly, in the order
 * and with the formulas of decode.py's `LayerWeights.forward` for one row:
 *
 *   x = rms_norm(h)                              attention input
 *   a = x Wqkv^T = [q_nope (H*Dn) | q_rope (H*Dr) | k_rope (Dr) | latent (R)]   (or via q_a, q_b)
 *   cache[pos] = [rms_norm(latent) | rope(k_rope)]
 *   q[h] = [W_uk[h]^T q_nope[h] (R) | rope(q_rope[h]) (Dr)]                      absorbed query
 *   p[h, t] = softmax_t(scale * q[h] . cache[t]),  t <= pos
 *   h += Wo [W_uv[h] sum_t p[h, t] cache[t][:R]]_h
 *   x = rms_norm(h);  h += dense SwiGLU(x), or shared expert(x) + sum_k w_k expert_k(x) (MoE)
 *
 * Rope dimensions arrive in [evens | odds] order (the fused rows were reordered that way), so rope is
 * x * [cos | cos] + swap_halves(x) * [-sin | sin]. Routing follows `LayerWeights.route_one`: sigmoid
 * scores, bias-corrected group-limited top-k, ties to the lower index, weights normalized in double.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

void matmul_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                int accumulate);
int matmul_i8(const float *x, const int8_t *q, const float *ws, float *y, long rows, long in, long out,
              float alpha, int accumulate);

/* y = (accumulate ? y : 0) + alpha x W^T for one row: fp32 W (out, in), or int8 q (out, in) with
 * per-row scales. out == 0 means the matrix is absent. */
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
    Weight router;                   /* (E [+ 2 I_shared], C), fp32 */
    Weight shared_gu, shared_down;   /* out == 0: no shared expert (or fused into router) */
    const float *bias;               /* (E,) e_score_correction_bias */
    const Weight *experts_gu, *experts_down; /* E each: (2I, C), (C, I) */
} Layer;

enum { LANES = 16 };

static int mm(const Weight *W, const float *x, float *y, float alpha, int accumulate) {
    if (W->w != NULL) {
        matmul_f32(x, W->w, y, 1, W->in, W->out, alpha, accumulate);
        return 0;
    }
    return matmul_i8(x, W->q, W->scale, y, 1, W->in, W->out, alpha, accumulate);
}

static float dot(const float *a, const float *b, long n) {
    float p[LANES] = {0}, sum = 0.0f;
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) p[l] += a[i + l] * b[i + l];
    for (; i < n; i++) sum += a[i] * b[i];
    for (int l = 0; l < LANES; l++) sum += p[l];
    return sum;
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

static float silu(float g) { return g / (1.0f + expf(-g)); }

/* act[i] = silu(gu[i]) * gu[I + i] */
static void swiglu(const float *gu, float *act, long I) {
    for (long i = 0; i < I; i++) act[i] = silu(gu[i]) * gu[I + i];
}

/* h += MLA(x) for the token at `pos`, whose cache rows (R + Dr each) start at `cache`. */
static int attention(const Layer *L, const float *x, float *h, float *cache, long pos, const float *cos2,
                     const float *sin2, float *work) {
    long H = L->H, Dn = L->Dn, Dr = L->Dr, R = L->R, Dv = L->Dv, D = R + Dr, S = pos + 1;
    float *a = work;                       /* qkv.out */
    float *qb = a + L->qkv.out;            /* q_b.out (low-rank query) or q_rank (its normed input) */
    float *qn = qb + L->q_b.out;           /* q_rank */
    float *q = qn + L->q_rank;             /* (H, D) */
    float *p = q + H * D;                  /* (H, S) */
    float *ol = p + H * S;                 /* (H, R) */
    float *o_in = ol + H * R;              /* (H * Dv) */
    if (mm(&L->qkv, x, a, 1.0f, 0)) return -1;
    const float *q_nope, *q_rope, *k_rope = a + L->qkv.out - R - Dr, *latent = a + L->qkv.out - R;
    if (L->q_rank) {
        rms_norm(a, L->norm_q, L->eps_q, qn, L->q_rank);
        if (mm(&L->q_b, qn, qb, 1.0f, 0)) return -1;
        q_nope = qb, q_rope = qb + H * Dn;
    } else {
        q_nope = a, q_rope = a + H * Dn;
    }
    float *row = cache + pos * D;
    rms_norm(latent, L->norm_kv, L->eps_kv, row, R);
    rope(k_rope, cos2, sin2, row + R, Dr);
    for (long hd = 0; hd < H; hd++) {
        matmul_f32(q_nope + hd * Dn, L->uk + hd * R * Dn, q + hd * D, 1, Dn, R, 1.0f, 0);
        rope(q_rope + hd * Dr, cos2, sin2, q + hd * D + R, Dr);
    }
    for (long t = 0; t < S; t++) /* scores, each cache row read once for all heads */
        for (long hd = 0; hd < H; hd++) p[hd * S + t] = L->scale * dot(q + hd * D, cache + t * D, D);
    for (long hd = 0; hd < H; hd++) { /* softmax over t */
        float *ph = p + hd * S, top = -INFINITY, total = 0.0f;
        for (long t = 0; t < S; t++) top = fmaxf(top, ph[t]);
        for (long t = 0; t < S; t++) total += ph[t] = expf(ph[t] - top);
        for (long t = 0; t < S; t++) ph[t] /= total;
    }
    for (long i = 0; i < H * R; i++) ol[i] = 0.0f;
    for (long t = 0; t < S; t++) /* out latent: sum_t p[h, t] cache[t][:R] */
        for (long hd = 0; hd < H; hd++) {
            float pt = p[hd * S + t], *olh = ol + hd * R;
            const float *c = cache + t * D;
            for (long i = 0; i < R; i++) olh[i] += pt * c[i];
        }
    for (long hd = 0; hd < H; hd++) matmul_f32(ol + hd * R, L->uv + hd * Dv * R, o_in + hd * Dv, 1, R, Dv, 1.0f, 0);
    return mm(&L->o, o_in, h, 1.0f, 1);
}

/* The K experts of `logits` (E): ids[k] and weights[k], as `LayerWeights.route_one` picks them. */
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

/* h += MLP(x): dense SwiGLU, or MoE (shared expert first, then the routed experts in routing order) */
static int mlp(const Layer *L, const float *x, float *h, float *work) {
    if (L->E == 0) {
        long I = L->gate_up.out / 2;
        if (mm(&L->gate_up, x, work, 1.0f, 0)) return -1;
        swiglu(work, work + 2 * I, I);
        return mm(&L->down, work + 2 * I, h, 1.0f, 1);
    }
    float *logits = work, *rest = work + L->router.out;
    if (mm(&L->router, x, logits, 1.0f, 0)) return -1;
    const float *shared_gu = logits + L->E;
    if (!L->shared_fused && L->shared_gu.out) {
        if (mm(&L->shared_gu, x, rest, 1.0f, 0)) return -1;
        shared_gu = rest;
        rest += L->shared_gu.out;
    }
    if (L->shared_down.out) {
        long I = L->shared_down.in;
        swiglu(shared_gu, rest, I);
        if (mm(&L->shared_down, rest, h, 1.0f, 1)) return -1;
    }
    long ids[L->K];
    float weights[L->K];
    route(L, logits, ids, weights);
    for (long k = 0; k < L->K; k++) {
        const Weight *gu = L->experts_gu + ids[k], *down = L->experts_down + ids[k];
        long I = down->in;
        if (mm(gu, x, rest, 1.0f, 0)) return -1;
        swiglu(rest, rest + 2 * I, I);
        if (mm(down, rest + 2 * I, h, weights[k], 1)) return -1;
    }
    return 0;
}

/* Floats of scratch space one layer needs at cache length S (decode_one.py allocates it). */
long decode_one_work(const Layer *L, long S) {
    long attn = L->qkv.out + L->q_b.out + L->q_rank + L->H * (L->R + L->Dr) + L->H * S + L->H * L->R +
                L->H * L->Dv;
    long widest = L->gate_up.out + L->gate_up.out / 2;
    for (long e = 0; e < L->E; e++) {
        long expert = L->experts_gu[e].out + L->experts_gu[e].out / 2;
        widest = expert > widest ? expert : widest;
    }
    long moe = L->router.out + L->shared_gu.out + L->shared_down.in + widest;
    return (attn > moe ? attn : moe) + L->C;
}

/* h (C) += every layer's output for the token at position `pos` of cache slot `slot`: layer l's cache
 * is kv[l], (slots, max_len, R + Dr) fp32 contiguous; cos2 = [cos | cos], sin2 = [-sin | sin] (Dr).
 * work: at least decode_one_work(layer, pos + 1) floats for every layer. Returns 0, or -1 when an
 * int8 matmul could not allocate its row buffer. */
int decode_one(const Layer *layers, long n_layers, float *h, float *const *kv, long slot, long pos,
               long max_len, const float *cos2, const float *sin2, float *work) {
    for (long l = 0; l < n_layers; l++) {
        const Layer *L = layers + l;
        float *x = work, *rest = work + L->C;
        float *cache = kv[l] + slot * max_len * (L->R + L->Dr);
        rms_norm(h, L->norm_attn, L->eps_attn, x, L->C);
        if (attention(L, x, h, cache, pos, cos2, sin2, rest)) return -1;
        rms_norm(h, L->norm_mlp, L->eps_mlp, x, L->C);
        if (mlp(L, x, h, rest)) return -1;
    }
    return 0;
}
