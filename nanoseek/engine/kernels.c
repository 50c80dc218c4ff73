/* nanoseek's hand-written CPU kernels: the matmuls of a decode step.
 *
 * Built and loaded by kernels.py (cc -O3 -march=native -shared -fPIC, on first use, cached per
 * machine). A decode step at batch 1 multiplies one row by every weight matrix once, so its time is
 * the time to stream the weights from memory. These loops stream them at close to the speed of a
 * plain sequential read, where MKL's fp32 gemv and torch's int8 kernel reach about half of it on
 * the AMD CPU this project is developed on (figures in kernels.py). Plain C, written so that -O3
 * vectorizes it (vfmadd for fp32, vpmaddwd / vpdpwssd for int8): no intrinsics, any CPU.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* fp32: y[m, j] = (accumulate ? y[m, j] : 0) + alpha * sum_i x[m, i] * w[j, i]
 *
 * x (rows, in), w (out, in), y (rows, out): float32, row-major, contiguous. One output j at a time:
 * its weight row is read once, front to back, and used for every row of x, four rows at a time
 * (each weight loaded once for the four). Sixteen partial sums per row, one vector register wide, so
 * -O3 vectorizes the inner loops without reassociating anything: a row's result is the same bits
 * whatever `rows` is, whichever group of four it falls in, and wherever j sits in w. */
enum { LANES = 16 };

static float finish(float partial[LANES], float sum_tail, float y, float alpha, int accumulate) {
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += partial[l];
    sum += sum_tail;
    return accumulate ? y + alpha * sum : alpha * sum;
}

static void dot_f32_1(const float *x, const float *wj, long in, float *y, float alpha, int accumulate) {
    float p[LANES] = {0}, tail = 0.0f;
    long i = 0;
    for (; i + LANES <= in; i += LANES)
        for (int l = 0; l < LANES; l++) p[l] += x[i + l] * wj[i + l];
    for (; i < in; i++) tail += x[i] * wj[i];
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
        t0 += x0[i] * wj[i];
        t1 += x1[i] * wj[i];
        t2 += x2[i] * wj[i];
        t3 += x3[i] * wj[i];
    }
    y[0] = finish(p0, t0, y[0], alpha, accumulate);
    y[out] = finish(p1, t1, y[out], alpha, accumulate);
    y[2 * out] = finish(p2, t2, y[2 * out], alpha, accumulate);
    y[3 * out] = finish(p3, t3, y[3 * out], alpha, accumulate);
}

void matmul_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                int accumulate) {
    for (long j = 0; j < out; j++) {
        const float *wj = w + j * in;
        long m = 0;
        for (; m + 4 <= rows; m += 4) dot_f32_4(x + m * in, in, wj, y + m * out + j, out, alpha, accumulate);
        for (; m < rows; m++) dot_f32_1(x + m * in, wj, in, y + m * out + j, alpha, accumulate);
    }
}

/* int8 weights: y[m, j] = (accumulate ? y[m, j] : 0) + alpha * xs[m] * ws[j] * sum_i xq[m, i] q[j, i]
 *
 * Each row of x is rounded to 16-bit integers, xq = round(x / xs) with xs = max|x| / 32767, and the
 * products with the int8 weights are summed exactly: int32 over blocks of 128 (|sum| < 128 * 32767 *
 * 127 < 2^31), int64 across blocks. So the sum is the same whatever the order, the blocking or the
 * other rows, and the only roundings are x's (relative 2^-16 of the row's largest entry, against
 * 2^-9 per entry for bfloat16) and the final scaling. A row with inf or nan gives nan. */
enum { BLOCK = 128 };

static void quantize_rows(const float *x, int16_t *xq, float *xs, long rows, long in) {
    for (long m = 0; m < rows; m++) {
        const float *xm = x + m * in;
        float top = 0.0f, probe = 0.0f;  /* probe: nan once any entry is inf or nan (fmaxf skips nan) */
        for (long i = 0; i < in; i++) {
            top = fmaxf(top, fabsf(xm[i]));
            probe += xm[i] * 0.0f;
        }
        int finite = probe == 0.0f;
        float s = top > 0.0f && finite ? top / 32767.0f : 1.0f, inv = 1.0f / s;
        xs[m] = finite ? s : NAN;
        for (long i = 0; i < in; i++) xq[m * in + i] = finite ? (int16_t)lrintf(xm[i] * inv) : 0;
    }
}

static int64_t dot1(const int16_t *a, const int8_t *b, long n) {
    int64_t total = 0;
    for (long i0 = 0; i0 < n; i0 += BLOCK) {
        long i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        int32_t s = 0;
        for (long i = i0; i < i1; i++) s += (int32_t)a[i] * b[i];
        total += s;
    }
    return total;
}

/* four rows of x against one weight row: each weight is loaded and widened once for all four */
static void dot4(const int16_t *a, long lda, const int8_t *b, long n, int64_t total[4]) {
    const int16_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    total[0] = total[1] = total[2] = total[3] = 0;
    for (long i0 = 0; i0 < n; i0 += BLOCK) {
        long i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (long i = i0; i < i1; i++) {
            int32_t v = b[i];
            s0 += a0[i] * v;
            s1 += a1[i] * v;
            s2 += a2[i] * v;
            s3 += a3[i] * v;
        }
        total[0] += s0;
        total[1] += s1;
        total[2] += s2;
        total[3] += s3;
    }
}

static void put(float *y, int64_t sum, double scale, float alpha, int accumulate) {
    float v = alpha * (float)((double)sum * scale);
    *y = accumulate ? *y + v : v;
}

/* x (rows, in) float32, q (out, in) int8, ws (out,) float32, y (rows, out) float32. Returns 0, or -1
 * when the row buffer cannot be allocated. */
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
    for (long j = 0; j < out; j++) {
        const int8_t *qj = q + j * in;
        long m = 0;
        for (; m + 4 <= rows; m += 4) {
            int64_t total[4];
            dot4(xq + m * in, in, qj, in, total);
            for (int r = 0; r < 4; r++)
                put(y + (m + r) * out + j, total[r], (double)xs[m + r] * ws[j], alpha, accumulate);
        }
        for (; m < rows; m++) put(y + m * out + j, dot1(xq + m * in, qj, in), (double)xs[m] * ws[j], alpha, accumulate);
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
