/* nanoseek's hand-written CPU kernels: the matmuls of a decode step.
 *
 * Built and loaded by kernels.py (cc -O3 -march=native -shared -fPIC, on first use, cached per
 * machine). A decode step at batch 1 multiplies one row by every weight matrix once, so its time is
 * the time to stream the weights from memory. These loops stream them at close to the speed of a
 * plain sequential read, where MKL's fp32 gemv and torch's int8 kernel reach about half of it on
 * the AMD CPU this project is developed on (figures in kernels.py). With more rows (a batch) the
 * arithmetic dominates instead, and blocks of rows share each load.
 *
 * Every loop is plain C that -O3 vectorizes (vfmadd for fp32, vpmaddwd / vpdpwssd for int8) and runs
 * on any CPU; where the compiler targets AVX-512 (F, and VNNI for int8), or else AVX2 with FMA, the
 * blocked loops are written with intrinsics instead, computing the same numbers in the same order
 * (tested bit for bit against a build with -DNANOSEEK_PORTABLE, which keeps only the plain C).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(NANOSEEK_PORTABLE) && defined(__AVX512F__)
#define F32_AVX512 1
#elif !defined(NANOSEEK_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
#define F32_AVX2 1
#endif
#if !defined(NANOSEEK_PORTABLE) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define I8_VNNI 1
#elif !defined(NANOSEEK_PORTABLE) && defined(__AVX2__)
#define I8_AVX2 1
#endif
#if defined(F32_AVX512) || defined(F32_AVX2) || defined(I8_VNNI) || defined(I8_AVX2)
#include <immintrin.h>
#endif

/* fp32: y[m, j] = (accumulate ? y[m, j] : 0) + alpha * sum_i x[m, i] * w[j, i]
 *
 * x (rows, in), w (out, in), y (rows, out): float32, row-major, contiguous. One output j at a time:
 * its weight row is read once, front to back, and used for every row of x, four rows at a time
 * (each weight loaded once for the four). Sixteen partial sums per row, one vector register wide, so
 * -O3 vectorizes the inner loops without reassociating anything: a row's result is the same bits
 * whatever `rows` is, whichever group of four it falls in, and wherever j sits in w. */
enum { LANES = 16 };
/* The blocked loops prefetch the weight rows AHEAD blocks ahead: with this much arithmetic per byte
 * the hardware prefetcher falls behind (docs/engine.md has the gain on cold matrices). */
enum { AHEAD = 2 };

/* the 16 partial sums added pairwise (the same tree in every loop: a few vector adds, not 16 in a row) */
static inline float finish(float partial[LANES], float sum_tail, float y, float alpha, int accumulate) {
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) partial[l] += partial[l + width];
    float sum = partial[0] + sum_tail;
    return accumulate ? fmaf(alpha, sum, y) : alpha * sum;
}

static void dot_f32_1(const float *x, const float *wj, long in, float *y, float alpha, int accumulate) {
    float p[LANES] = {0}, tail = 0.0f;
    long i = 0;
    for (; i + LANES <= in; i += LANES)
        for (int l = 0; l < LANES; l++) p[l] += x[i + l] * wj[i + l];
    for (; i < in; i++) tail = fmaf(x[i], wj[i], tail);
    *y = finish(p, tail, *y, alpha, accumulate);
}

static void dot_f32_4(const float *x, long in, const float *wj, float *y, long out, float alpha,
                      int accumulate) {
    const float *x0 = x, *x1 = x + in, *x2 = x + 2 * in, *x3 = x + 3 * in;
    float p0[LANES] = {0}, p1[LANES] = {0}, p2[LANES] = {0}, p3[LANES] = {0};
    float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
    long i = 0;
    for (; i + LANES <= in; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float v = wj[i + l];
            p0[l] += x0[i + l] * v;
            p1[l] += x1[i + l] * v;
            p2[l] += x2[i + l] * v;
            p3[l] += x3[i + l] * v;
        }
    for (; i < in; i++) {
        t0 = fmaf(x0[i], wj[i], t0);
        t1 = fmaf(x1[i], wj[i], t1);
        t2 = fmaf(x2[i], wj[i], t2);
        t3 = fmaf(x3[i], wj[i], t3);
    }
    y[0] = finish(p0, t0, y[0], alpha, accumulate);
    y[out] = finish(p1, t1, y[out], alpha, accumulate);
    y[2 * out] = finish(p2, t2, y[2 * out], alpha, accumulate);
    y[3 * out] = finish(p3, t3, y[3 * out], alpha, accumulate);
}

#if defined(F32_AVX512)
/* From two rows on, blocks of NR rows x NC weight rows (4 x 4, or 2 x 4 for a last pair of rows) share
 * every load: a speculative step's [pending, draft] pair on a small model costs 1.2 one-row steps
 * instead of 1.7 (docs/engine.md). The lanes are the same 16 partial sums, each
 * accumulated with the same fused multiply-adds in the same order, and added up by `finish`'s tree,
 * so every row gets the bits the one-row loop gives it (tested). */

static inline __attribute__((always_inline)) void block_f32(const int NR, const int NC, const float *x,
                                                            const float *w, float *y, long in, long out,
                                                            float alpha, int accumulate) {
    __m512 acc[4][4];
    float tail[4][4] = {{0}};
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    long i = 0;
    for (; i + LANES <= in; i += LANES) {
        __m512 wv[4], xv[4];
        /* the empty asm keeps each vector in a register: left alone, the compiler re-reads one operand
         * from memory in every multiply-add, 20 loads for 16 of them instead of 8 (slower: docs/engine.md) */
        for (int c = 0; c < NC; c++) {
            _mm_prefetch((const char *)(w + (AHEAD * NC + c) * in + i), _MM_HINT_T0);
            wv[c] = _mm512_loadu_ps(w + c * in + i);
            __asm__("" : "+v"(wv[c]));
        }
        for (int r = 0; r < NR; r++) {
            xv[r] = _mm512_loadu_ps(x + r * in + i);
            __asm__("" : "+v"(xv[r]));
        }
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(xv[r], wv[c], acc[r][c]);
    }
    for (; i < in; i++)
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) tail[r][c] = fmaf(x[r * in + i], w[c * in + i], tail[r][c]);
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) { /* `finish`'s pairwise tree, in registers */
            __m256 lo = _mm512_castps512_ps256(acc[r][c]), hi = _mm512_extractf32x8_ps(acc[r][c], 1);
            __m256 s8 = _mm256_add_ps(lo, hi);
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
            __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2))) + tail[r][c];
            float *yo = y + r * out + c;
            *yo = accumulate ? fmaf(alpha, sum, *yo) : alpha * sum;
        }
}

static void blocks_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                       int accumulate) {
    for (long j = 0; j < out;) {
        long m = 0, nc = out - j >= 4 ? 4 : 1; /* weight rows four at a time, the last few one by one */
        const float *wj = w + j * in;
        for (; m + 4 <= rows; m += 4) {
            if (nc == 4) block_f32(4, 4, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
            else block_f32(4, 1, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
        }
        for (; m + 2 <= rows; m += 2) {
            if (nc == 4) block_f32(2, 4, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
            else block_f32(2, 1, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
        }
        for (; m < rows; m++) {
            if (nc == 4) block_f32(1, 4, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
            else block_f32(1, 1, x + m * in, wj, y + m * out + j, in, out, alpha, accumulate);
        }
        j += nc;
    }
}
#elif defined(F32_AVX2)
/* AVX2: the same 16 partial sums, as two 8-lane registers (lanes 0-7 and 8-15), so the same fused
 * multiply-adds in the same order and `finish`'s tree (lanes l + 8 first) give the one-row loop's bits.
 * Sixteen registers hold blocks of 2 rows x 3 weight rows: 12 accumulators, 3 weight vectors, 1 row
 * vector (12 multiply-adds per 10 loads, against 8 per 10 in the portable 4-row loop). The inputs are
 * walked in spans of SPAN floats, every row of x through one span before the next, so that the three
 * weight rows' span and x's stay in the L1 cache; between spans the accumulators wait in `acc`
 * (stored and reloaded exactly, so the sums are unchanged). */
enum { SPAN = 512 };

static inline __attribute__((always_inline)) void span_f32(const int NR, const int NC, const float *x,
                                                           const float *w, long in, long i0, long i1,
                                                           __m256 acc[2][3][2]) {
    __m256 a[2][3][2];
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) a[r][c][0] = acc[r][c][0], a[r][c][1] = acc[r][c][1];
    for (long i = i0; i < i1; i += LANES) {
        for (int c = 0; c < NC; c++) _mm_prefetch((const char *)(w + (AHEAD * NC + c) * in + i), _MM_HINT_T0);
        for (int half = 0; half < 2; half++) {
            __m256 wv[3];
            for (int c = 0; c < NC; c++) {
                wv[c] = _mm256_loadu_ps(w + c * in + i + 8 * half);
                __asm__("" : "+x"(wv[c]));
            }
            for (int r = 0; r < NR; r++) {
                __m256 xv = _mm256_loadu_ps(x + r * in + i + 8 * half);
                __asm__("" : "+x"(xv)); /* in a register: not re-read by each multiply-add (see above) */
                for (int c = 0; c < NC; c++) a[r][c][half] = _mm256_fmadd_ps(xv, wv[c], a[r][c][half]);
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c][0] = a[r][c][0], acc[r][c][1] = a[r][c][1];
}

/* NR rows of x (row stride in) against NC weight rows: sums by `finish`'s tree into y (row stride out) */
static inline __attribute__((always_inline)) void finish_f32(const int NR, const int NC, const float *x,
                                                             const float *w, float *y, long in, long out,
                                                             float alpha, int accumulate,
                                                             __m256 acc[2][3][2]) {
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) {
            float tail = 0.0f;
            for (long i = in - in % LANES; i < in; i++) tail = fmaf(x[r * in + i], w[c * in + i], tail);
            __m256 s8 = _mm256_add_ps(acc[r][c][0], acc[r][c][1]);
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
            __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2))) + tail;
            float *yo = y + r * out + c;
            *yo = accumulate ? fmaf(alpha, sum, *yo) : alpha * sum;
        }
}

/* every row of x against NC weight rows wj.. (rows >= 1); acc: scratch for (rows + 1) / 2 blocks */
static inline __attribute__((always_inline)) void panel_f32(const int NC, const float *x, const float *wj,
                                                            float *y, long rows, long in, long out,
                                                            float alpha, int accumulate,
                                                            __m256 (*acc)[2][3][2]) {
    long pairs = rows / 2, end = in - in % LANES;
    for (long b = 0; b < (rows + 1) / 2; b++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 3; c++) acc[b][r][c][0] = acc[b][r][c][1] = _mm256_setzero_ps();
    for (long i0 = 0; i0 < end; i0 += SPAN) {
        long i1 = i0 + SPAN < end ? i0 + SPAN : end;
        for (long b = 0; b < pairs; b++) span_f32(2, NC, x + 2 * b * in, wj, in, i0, i1, acc[b]);
        if (rows % 2) span_f32(1, NC, x + 2 * pairs * in, wj, in, i0, i1, acc[pairs]);
    }
    for (long b = 0; b < pairs; b++)
        finish_f32(2, NC, x + 2 * b * in, wj, y + 2 * b * out, in, out, alpha, accumulate, acc[b]);
    if (rows % 2)
        finish_f32(1, NC, x + 2 * pairs * in, wj, y + 2 * pairs * out, in, out, alpha, accumulate, acc[pairs]);
}

static void blocks_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                       int accumulate) {
    __m256 (*acc)[2][3][2] = aligned_alloc(32, sizeof(__m256[2][3][2]) * ((rows + 1) / 2));
    if (acc == NULL) { /* no scratch: the portable loop (the same bits) */
        for (long j = 0; j < out; j++)
            for (long m = 0; m < rows; m++) dot_f32_1(x + m * in, w + j * in, in, y + m * out + j, alpha, accumulate);
        return;
    }
    long j = 0;
    for (; j + 3 <= out; j += 3) panel_f32(3, x, w + j * in, y + j, rows, in, out, alpha, accumulate, acc);
    for (; j < out; j++) panel_f32(1, x, w + j * in, y + j, rows, in, out, alpha, accumulate, acc);
    free(acc);
}
#endif

void matmul_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                int accumulate) {
#if defined(F32_AVX512) || defined(F32_AVX2)
    if (rows >= 2) { /* from two rows on the blocks beat the one-row loop (docs/engine.md) */
        blocks_f32(x, w, y, rows, in, out, alpha, accumulate);
        return;
    }
#endif
    for (long j = 0; j < out; j++) {
        const float *wj = w + j * in;
        long m = 0;
        for (; m + 4 <= rows; m += 4) dot_f32_4(x + m * in, in, wj, y + m * out + j, out, alpha, accumulate);
        for (; m < rows; m++) dot_f32_1(x + m * in, wj, in, y + m * out + j, alpha, accumulate);
    }
}

/* Which fp32 loops this build runs: 2 AVX-512 blocks, 1 AVX2 blocks, 0 the portable loops only. */
int matmul_f32_path(void) {
#if defined(F32_AVX512)
    return 2;
#elif defined(F32_AVX2)
    return 1;
#else
    return 0;
#endif
}

/* int8 weights: y[m, j] = (accumulate ? y[m, j] : 0) + alpha * xs[m] * ws[j] * sum_i xq[m, i] q[j, i]
 *
 * Each row of x is rounded to 16-bit integers, xq = round(x / xs) with xs = max|x| / 32767, and the
 * products with the int8 weights are summed exactly (in int32 pieces that cannot overflow, then
 * int64). So the sum is the same whatever the order, the blocking or the other rows, and the only
 * roundings are x's (relative 2^-16 of the row's largest entry, against 2^-9 per entry for bfloat16)
 * and the final scaling. A row with inf or nan gives nan. */

static void quantize_rows(const float *x, int16_t *xq, float *xs, long rows, long in) {
    for (long m = 0; m < rows; m++) {
        const float *xm = x + m * in;
        /* probe: nan once any entry is inf or nan; 16 lanes of each, so that the loop vectorizes */
        float tops[LANES] = {0}, probes[LANES] = {0}, top = 0.0f, probe = 0.0f;
        long i = 0;
        for (; i + LANES <= in; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float a = fabsf(xm[i + l]);
                tops[l] = a > tops[l] ? a : tops[l];
                probes[l] += xm[i + l] * 0.0f;
            }
        for (; i < in; i++) {
            top = fabsf(xm[i]) > top ? fabsf(xm[i]) : top;
            probe += xm[i] * 0.0f;
        }
        for (int l = 0; l < LANES; l++) {
            top = tops[l] > top ? tops[l] : top;
            probe += probes[l];
        }
        int finite = probe == 0.0f;
        float s = top > 0.0f && finite ? top / 32767.0f : 1.0f, inv = 1.0f / s;
        xs[m] = finite ? s : NAN;
        if (!finite) {
            memset(xq + m * in, 0, sizeof(int16_t) * in);
            continue;
        }
        for (long i = 0; i < in; i++) xq[m * in + i] = (int16_t)rintf(xm[i] * inv); /* inlined, vectorized */
    }
}

/* sum_i a[i] b[i] exactly: int32 sums over blocks of 128 (|sum| < 128 * 32767 * 127 < 2^31), int64
 * across blocks; -O3 turns the inner loop into vpmaddwd / vpdpwssd where the CPU has them. It streams
 * one weight row from memory as fast as anything here (the int8 loops of few rows use it). */
enum { BLOCK = 128 };

static inline int64_t dot(const int16_t *a, const int8_t *b, long in) {
    int64_t total = 0;
    for (long i0 = 0; i0 < in; i0 += BLOCK) {
        long i1 = i0 + BLOCK < in ? i0 + BLOCK : in;
        int32_t sum = 0;
        for (long i = i0; i < i1; i++) sum += (int32_t)a[i] * b[i];
        total += sum;
    }
    return total;
}

/* total[r][c] = sum_i xq[r * in + i] * q[c * in + i] for NR rows of x against NC weight rows, exactly. */
#if defined(I8_VNNI)
/* AVX-512 VNNI: vpdpwssd adds a[2l] b[2l] + a[2l+1] b[2l+1] to int32 lane l, 32 products per
 * instruction. A lane gains at most 2 * 32767 * 127 per instruction, so 256 of them (CHUNK entries)
 * stay below 2^31; lanes are then summed in int64. The sums are exact, so the results are the
 * portable loop's, bit for bit. */
enum { I8_NC = 4 }; /* weight rows per block */

enum { CHUNK = 256 * 32 };

static inline int64_t lanes(__m512i acc) {
    __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
    __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1));
    return _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

/* Many rows: NR x NC (up to 4 x 4) accumulators share every load; each weight vector is widened
 * once for NR rows and each row vector used for NC weight rows. */
static inline __attribute__((always_inline)) void dots(const int NR, const int NC, const int16_t *xq,
                                                       const int8_t *q, long in, int64_t total[4][4]) {
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) total[r][c] = 0;
    for (long i0 = 0; i0 < in; i0 += CHUNK) {
        long i1 = i0 + CHUNK < in ? i0 + CHUNK : in, i = i0;
        __m512i acc[4][4], w[4], x[4];
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
        for (; i < i1; i += 32) {
            __mmask32 k = i1 - i >= 32 ? 0xffffffffu : (1u << (i1 - i)) - 1; /* masked: zeros past the end */
            for (int c = 0; c < NC; c++) {
                _mm_prefetch((const char *)(q + (AHEAD * NC + c) * in + i), _MM_HINT_T0);
                w[c] = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, q + c * in + i));
            }
            for (int r = 0; r < NR; r++) x[r] = _mm512_maskz_loadu_epi16(k, xq + r * in + i);
            for (int r = 0; r < NR; r++)
                for (int c = 0; c < NC; c++) acc[r][c] = _mm512_dpwssd_epi32(acc[r][c], x[r], w[c]);
        }
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) total[r][c] += lanes(acc[r][c]);
    }
}

/* Few rows (1-3): one weight row at a time, read front to back (what streams fastest from memory),
 * two accumulators per row so that consecutive vpdpwssd do not wait on each other. */
static inline __attribute__((always_inline)) void dots_row(const int NR, const int16_t *xq, const int8_t *q,
                                                           long in, int64_t total[4]) {
    for (int r = 0; r < NR; r++) total[r] = 0;
    for (long i0 = 0; i0 < in; i0 += CHUNK) {
        long i1 = i0 + CHUNK < in ? i0 + CHUNK : in, i = i0;
        __m512i acc[4][2];
        for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
        for (; i + 64 <= i1; i += 64) {
            __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + i)));
            __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + i + 32)));
            for (int r = 0; r < NR; r++) {
                acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], _mm512_loadu_si512(xq + r * in + i), w0);
                acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], _mm512_loadu_si512(xq + r * in + i + 32), w1);
            }
        }
        for (; i < i1; i += 32) {
            __mmask32 k = i1 - i >= 32 ? 0xffffffffu : (1u << (i1 - i)) - 1;
            __m512i w0 = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, q + i));
            for (int r = 0; r < NR; r++)
                acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], _mm512_maskz_loadu_epi16(k, xq + r * in + i), w0);
        }
        for (int r = 0; r < NR; r++) total[r] += lanes(acc[r][0]) + lanes(acc[r][1]);
    }
}
#elif defined(I8_AVX2)
/* AVX2 without VNNI: vpmaddwd gives a[2l] b[2l] + a[2l+1] b[2l+1] in int32 lane l (16 products per
 * instruction) and vpaddd accumulates it. A lane gains at most 2 * 32767 * 127 per step, so 256 steps
 * (CHUNK entries) stay below 2^31; lanes are then summed in int64, and entries past the last 16 one
 * by one. Exact sums: the portable loop's results, bit for bit. Blocks of up to 4 rows x 3 weight rows
 * (12 accumulators, 3 widened weight vectors and a row vector fill the 16 registers); fewer than four
 * rows use the plain `dot`, which streams a weight row faster than one block of these. */
enum { CHUNK = 256 * 16, I8_NC = 3 };

static inline int64_t lanes(__m256i acc) {
    __m256i wide = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc)),
                                    _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc, 1)));
    __m128i two = _mm_add_epi64(_mm256_castsi256_si128(wide), _mm256_extracti128_si256(wide, 1));
    return _mm_cvtsi128_si64(two) + _mm_extract_epi64(two, 1);
}

static inline __attribute__((always_inline)) void dots(const int NR, const int NC, const int16_t *xq,
                                                       const int8_t *q, long in, int64_t total[4][4]) {
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) total[r][c] = 0;
    long end = in - in % 16;
    for (long i0 = 0; i0 < end; i0 += CHUNK) {
        long i1 = i0 + CHUNK < end ? i0 + CHUNK : end;
        __m256i acc[4][3], w[3];
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
        for (long i = i0; i < i1; i += 16) {
            for (int c = 0; c < NC; c++) {
                if ((i & 63) == 0) _mm_prefetch((const char *)(q + (AHEAD * NC + c) * in + i), _MM_HINT_T0);
                w[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + c * in + i)));
                __asm__("" : "+x"(w[c]));
            }
            for (int r = 0; r < NR; r++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + r * in + i));
                __asm__("" : "+x"(xv));
                for (int c = 0; c < NC; c++) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(xv, w[c]));
            }
        }
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) total[r][c] += lanes(acc[r][c]);
    }
    for (long i = end; i < in; i++)
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) total[r][c] += (int32_t)xq[r * in + i] * q[c * in + i];
}

static inline void dots_row(const int NR, const int16_t *xq, const int8_t *q, long in, int64_t total[4]) {
    for (int r = 0; r < NR; r++) total[r] = dot(xq + r * in, q, in);
}
#else
/* Portable: the plain dot product above, one pair of rows at a time. */
enum { I8_NC = 4 };

static inline void dots(const int NR, const int NC, const int16_t *xq, const int8_t *q, long in,
                        int64_t total[4][4]) {
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) total[r][c] = dot(xq + r * in, q + c * in, in);
}

static inline void dots_row(const int NR, const int16_t *xq, const int8_t *q, long in, int64_t total[4]) {
    for (int r = 0; r < NR; r++) total[r] = dot(xq + r * in, q, in);
}
#endif

static void put(float *y, int64_t sum, double scale, float alpha, int accumulate) {
    float v = alpha * (float)((double)sum * scale);
    *y = accumulate ? *y + v : v;
}

/* rows m.. (NR of them) against weight rows j.. (NC) into y */
static inline __attribute__((always_inline)) void block_i8(const int NR, const int NC, const int16_t *xq,
                                                           const float *xs, const int8_t *q, const float *ws,
                                                           float *y, long m, long j, long in, long out,
                                                           float alpha, int accumulate) {
    int64_t total[4][4];
    if (NC == 1 && NR < 4) {
        dots_row(NR, xq + m * in, q + j * in, in, total[0]);
        for (int r = 0; r < NR; r++)
            put(y + (m + r) * out + j, total[0][r], (double)xs[m + r] * ws[j], alpha, accumulate);
        return;
    }
    dots(NR, NC, xq + m * in, q + j * in, in, total);
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++)
            put(y + (m + r) * out + j + c, total[r][c], (double)xs[m + r] * ws[j + c], alpha, accumulate);
}

/* x (rows, in) float32, q (out, in) int8, ws (out,) float32, y (rows, out) float32. From four rows of
 * x on: blocks of I8_NC (3 or 4) weight rows (read from memory once) against four rows of x at a time, then the
 * remaining rows against the same, cached, weights. Fewer rows: one weight row at a time. Returns 0,
 * or -1 when the row buffer cannot be allocated. */
int matmul_i8(const float *x, const int8_t *q, const float *ws, float *y, long rows, long in, long out,
              float alpha, int accumulate) {
    int16_t *xq = malloc(sizeof(int16_t) * rows * in);
    float *xs = malloc(sizeof(float) * rows);
    if (xq == NULL || xs == NULL) {
        free(xq);
        free(xs);
        return -1;
    }
    quantize_rows(x, xq, xs, rows, in);
    long j = 0;
    if (rows >= 4)
        for (; j + I8_NC <= out; j += I8_NC) {
            long m = 0;
            for (; m + 4 <= rows; m += 4)
                block_i8(4, I8_NC, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
            for (; m < rows; m++) block_i8(1, I8_NC, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
        }
    for (; j < out; j++) {
        long m = 0;
        for (; m + 4 <= rows; m += 4) block_i8(4, 1, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
        if (rows - m == 3) block_i8(3, 1, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
        if (rows - m == 2) block_i8(2, 1, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
        if (rows - m == 1) block_i8(1, 1, xq, xs, q, ws, y, m, j, in, out, alpha, accumulate);
    }
    free(xq);
    free(xs);
    return 0;
}

/* fp32, one matrix per batch entry: y[b] = x[b] @ w[b]^T for x (batch, rows, in), w (batch, out, in),
 * y (batch, rows, out), contiguous (the absorbed attention weights, one matrix per head). */
void bmatmul_f32(const float *x, const float *w, float *y, long batch, long rows, long in, long out) {
    for (long b = 0; b < batch; b++)
        matmul_f32(x + b * rows * in, w + b * out * in, y + b * rows * out, rows, in, out, 1.0f, 0);
}
