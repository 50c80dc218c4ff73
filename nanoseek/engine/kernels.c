/* nanoseek's one hand-written CPU kernel: the few-row fp32 matmul of a decode step.
 *
 * Built and loaded by kernels.py (cc -O3 -march=native -shared -fPIC, on first use, cached per
 * machine). A decode step at batch 1 multiplies one row by every weight matrix once, so its time is
 * the time to stream the weights from memory. This loop streams them at the speed of a plain
 * sequential read; MKL's fp32 gemv, on the AMD CPU this project is developed on, reaches about half
 * of it (see kernels.py for the figures).
 */

/* y[m, j] = (accumulate ? y[m, j] : 0) + alpha * sum_i x[m, i] * w[j, i]
 *
 * x (rows, in), w (out, in), y (rows, out): float32, row-major, contiguous. One output j at a time:
 * its weight row is read once, front to back, and used for every row of x (a second row reads it
 * from L1). Sixteen partial sums per row, one vector register wide, so -O3 vectorizes the inner loop
 * without reassociating anything: the result does not depend on `rows` or on where j sits in w. */
void matmul_f32(const float *x, const float *w, float *y, long rows, long in, long out, float alpha,
                int accumulate) {
    enum { LANES = 16 };
    for (long j = 0; j < out; j++) {
        const float *wj = w + j * in;
        for (long m = 0; m < rows; m++) {
            const float *xm = x + m * in;
            float partial[LANES] = {0};
            long i = 0;
            for (; i + LANES <= in; i += LANES)
                for (int l = 0; l < LANES; l++) partial[l] += xm[i + l] * wj[i + l];
            float sum = 0.0f;
            for (int l = 0; l < LANES; l++) sum += partial[l];
            for (; i < in; i++) sum += xm[i] * wj[i];
            float *yj = y + m * out + j;
            *yj = accumulate ? *yj + alpha * sum : alpha * sum;
        }
    }
}
