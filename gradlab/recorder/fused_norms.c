/* Fused one-pass norms for gradlab's recorder on a CPU.
 *
 * Compiled on first use and loaded with ctypes by gradlab/recorder/native.py; without a C
 * compiler the recorder reduces with PyTorch ops instead (the same values, to float32
 * rounding). One call covers every parameter of a model: ||grad||, ||w|| and ||w - w_prev||,
 * with w copied into w_prev in the same pass (param_norms); another, every small tensor a
 * step kept: its sum, norm and count of positive elements, in one pass each (tensor_stats).
 * Sums are taken in float32 lanes over blocks of BLOCK elements, the blocks in double, so
 * the error stays near PyTorch's own.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

/* The loops get an AVX2 version beside the baseline one, chosen when the library loads (GCC
 * on x86-64): a tensor reduced in its hook is still in cache, where the sums are bound by
 * arithmetic. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define AVX2_CLONE
#endif

#define LANES 16
#define BLOCK 4096
#define MAX_THREADS 64
#define PARALLEL_NUMEL (1 << 15) /* elements from which one tensor is read by several threads */

/* sum of x[i]^2 */
AVX2_CLONE static double sum_squares(const float *x, int64_t n) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += BLOCK) {
        int64_t end = n - start > BLOCK ? start + BLOCK : n, i = start;
        float acc[LANES] = {0};
        for (; i + LANES <= end; i += LANES)
            for (int k = 0; k < LANES; ++k) acc[k] += x[i + k] * x[i + k];
        for (; i < end; ++i) acc[0] += x[i] * x[i];
        for (int k = 0; k < LANES; ++k) total += acc[k];
    }
    return total;
}

/* sum of w[i]^2 into *ww and of (w[i] - prev[i])^2 into *dd; then prev = w */
AVX2_CLONE static void weight_and_change(const float *w, float *prev, int64_t n, double *ww, double *dd) {
    double tw = 0.0, td = 0.0;
    for (int64_t start = 0; start < n; start += BLOCK) {
        int64_t end = n - start > BLOCK ? start + BLOCK : n, i = start;
        float aw[LANES] = {0}, ad[LANES] = {0};
        for (; i + LANES <= end; i += LANES)
            for (int k = 0; k < LANES; ++k) {
                float v = w[i + k], d = v - prev[i + k];
                aw[k] += v * v;
                ad[k] += d * d;
                prev[i + k] = v;
            }
        for (; i < end; ++i) {
            float v = w[i], d = v - prev[i];
            aw[0] += v * v;
            ad[0] += d * d;
            prev[i] = v;
        }
        for (int k = 0; k < LANES; ++k) {
            tw += aw[k];
            td += ad[k];
        }
    }
    *ww = tw;
    *dd = td;
}

typedef struct {
    const int64_t *grads, *weights, *prevs, *numel, *grad_cols, *weight_cols, *update_cols;
    float *row;
    int64_t lo, hi;
    int first;
} ParamJob;

/* Parameters lo..hi-1: a NULL (0) grad or prev pointer skips that part; a column < 0 is not
 * written; ``first``: no previous weights yet, the update norm is NaN. */
static void *param_norms_range(void *arg) {
    ParamJob *j = (ParamJob *)arg;
    for (int64_t p = j->lo; p < j->hi; ++p) {
        int64_t n = j->numel[p];
        if (j->grads[p] && j->grad_cols[p] >= 0)
            j->row[j->grad_cols[p]] = (float)sqrt(sum_squares((const float *)(intptr_t)j->grads[p], n));
        if (j->prevs[p]) {
            double ww, dd;
            weight_and_change((const float *)(intptr_t)j->weights[p], (float *)(intptr_t)j->prevs[p], n, &ww, &dd);
            if (j->weight_cols[p] >= 0) j->row[j->weight_cols[p]] = (float)sqrt(ww);
            if (j->update_cols[p] >= 0) j->row[j->update_cols[p]] = j->first ? (float)NAN : (float)sqrt(dd);
        } else if (j->weight_cols[p] >= 0) {
            j->row[j->weight_cols[p]] = (float)sqrt(sum_squares((const float *)(intptr_t)j->weights[p], n));
        }
    }
    return 0;
}

/* Every parameter's norms into ``row`` (float32, indexed by column), on up to ``threads``
 * threads, each taking a run of parameters of about equal size. Returns 0, or -1 if a
 * thread could not be started (the work is then done on this one). */
int param_norms(int64_t count, const int64_t *grads, const int64_t *weights, const int64_t *prevs,
                const int64_t *numel, const int64_t *grad_cols, const int64_t *weight_cols,
                const int64_t *update_cols, float *row, int first, int threads) {
    ParamJob jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int64_t total = 0;
    for (int64_t p = 0; p < count; ++p) total += numel[p];
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > count) threads = (int)count;
    if (threads < 1) threads = 1;
    int64_t lo = 0, seen = 0;
    for (int t = 0; t < threads; ++t) {
        int64_t hi = lo;
        int64_t goal = total / threads * (t + 1);
        while (hi < count && (t == threads - 1 || seen < goal)) seen += numel[hi++];
        ParamJob job = {grads, weights, prevs, numel, grad_cols, weight_cols, update_cols, row, lo, hi, first};
        jobs[t] = job;
        lo = hi;
    }
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int t = 0; t < threads; ++t) param_norms_range(&jobs[t]);
        return 0;
    }
#endif
    int started = 0, failed = 0;
    for (int t = 1; t < threads; ++t) {
        if (pthread_create(&ids[t], 0, param_norms_range, &jobs[t]) != 0) {
            failed = 1;
            break;
        }
        started = t;
    }
    param_norms_range(&jobs[0]);
    for (int t = 1; t <= started; ++t) pthread_join(ids[t], 0);
    for (int t = started + 1; failed && t < threads; ++t) param_norms_range(&jobs[t]);
    return failed ? -1 : 0;
}

/* Over x[lo..hi) (lo a multiple of BLOCK): the sum, the sum of squares, the count of
 * elements > 0 and of NaNs, added to the four totals. */
AVX2_CLONE static void stats_range(const float *x, int64_t lo, int64_t hi, double *sum, double *squares,
                                   int64_t *positive, int64_t *nans) {
    double s = 0.0, q = 0.0;
    int64_t c = 0, nan = 0;
    for (int64_t start = lo; start < hi; start += BLOCK) {
        int64_t end = hi - start > BLOCK ? start + BLOCK : hi, i = start;
        float as[LANES] = {0}, aq[LANES] = {0};
        int32_t ac[LANES] = {0}, an[LANES] = {0};
        for (; i + LANES <= end; i += LANES)
            for (int k = 0; k < LANES; ++k) {
                float v = x[i + k];
                as[k] += v;
                aq[k] += v * v;
                ac[k] += v > 0.0f;
                an[k] += v != v;
            }
        for (; i < end; ++i) {
            float v = x[i];
            as[0] += v;
            aq[0] += v * v;
            ac[0] += v > 0.0f;
            an[0] += v != v;
        }
        for (int k = 0; k < LANES; ++k) {
            s += as[k];
            q += aq[k];
            c += ac[k];
            nan += an[k];
        }
    }
    *sum += s;
    *squares += q;
    *positive += c;
    *nans += nan;
}

/* One tensor's totals (squares only when ``norm_only``), split among up to ``threads``
 * OpenMP threads when it is large: each takes a run of whole blocks, and the runs' totals
 * are added in order (the same value whichever thread ends first). */
static void tensor_totals(const float *x, int64_t n, int norm_only, int threads, double *sum, double *squares,
                          int64_t *positive, int64_t *nans) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    if (threads > blocks) threads = (int)blocks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (n < PARALLEL_NUMEL || threads < 2) threads = 1;
    double ps[MAX_THREADS] = {0}, pq[MAX_THREADS] = {0};
    int64_t pc[MAX_THREADS] = {0}, pn[MAX_THREADS] = {0};
    int64_t run = (blocks + threads - 1) / threads * BLOCK;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (threads > 1)
#endif
    for (int k = 0; k < threads; ++k) {
        int64_t lo = k * run, hi = lo + run < n ? lo + run : n;
        if (lo >= hi) continue;
        if (norm_only)
            pq[k] = sum_squares(x + lo, hi - lo);
        else
            stats_range(x, lo, hi, &ps[k], &pq[k], &pc[k], &pn[k]);
    }
    for (int k = 0; k < threads; ++k) {
        *sum += ps[k];
        *squares += pq[k];
        *positive += pc[k];
        *nans += pn[k];
    }
}

/* One tensor's sum into *sum, norm into *norm and, times ``unit``, count of elements > 0
 * into *positive (NaN when it holds a NaN, as gradlab.recorder.reductions.count gives it);
 * a NULL output is not computed (only the norm: the squares alone are summed). */
static void values(const float *x, int64_t n, float *sum, float *norm, float *positive, float unit, int threads) {
    double s = 0.0, q = 0.0;
    int64_t c = 0, nan = 0;
    tensor_totals(x, n, !sum && !positive, threads, &s, &q, &c, &nan);
    if (sum) *sum = (float)s;
    if (norm) *norm = (float)sqrt(q);
    if (positive) *positive = nan ? (float)NAN : (float)((double)c * unit);
}

/* For each of ``count`` float32 tensors (addresses and sizes): its sum into sums[t], its
 * norm into norms[t] and, times ``unit``, its count of elements > 0 into positives[t] (NaN
 * when it holds a NaN, as gradlab.recorder.reductions.count gives it); a NULL output array
 * is not computed. A large tensor is read by up to ``threads`` threads. */
void tensor_stats(int64_t count, const int64_t *addresses, const int64_t *numel, float *sums, float *norms,
                  float *positives, float unit, int threads) {
    for (int64_t t = 0; t < count; ++t)
        values((const float *)(intptr_t)addresses[t], numel[t], sums ? sums + t : 0, norms ? norms + t : 0,
               positives ? positives + t : 0, unit, threads);
}

/* The lean hooks' points of a step (gradlab.recorder.fast_step), in one call: for each of
 * ``count`` points, the sum, norm and count of elements > 0 (times ``unit``) of the first
 * sample_numel[t] elements of samples[t] into row[cols[t]], row[cols[count + t]] and
 * row[cols[2 count + t]], and the norm of grads[t] (grad_numel[t] elements) into
 * row[cols[3 count + t]]. A column < 0 is not computed, and a tensor none of whose columns
 * is wanted is not read. The same loops as tensor_stats: the same values. */
void planned_stats(int64_t count, const int64_t *samples, const int64_t *sample_numel, const int64_t *grads,
                   const int64_t *grad_numel, const int64_t *cols, float *row, float unit, int threads) {
    const int64_t *sum_cols = cols, *norm_cols = cols + count, *count_cols = cols + 2 * count;
    const int64_t *grad_cols = cols + 3 * count;
    for (int64_t t = 0; t < count; ++t) {
        if (sum_cols[t] >= 0 || norm_cols[t] >= 0 || count_cols[t] >= 0)
            values((const float *)(intptr_t)samples[t], sample_numel[t], sum_cols[t] >= 0 ? row + sum_cols[t] : 0,
                   norm_cols[t] >= 0 ? row + norm_cols[t] : 0, count_cols[t] >= 0 ? row + count_cols[t] : 0, unit,
                   threads);
        if (grad_cols[t] >= 0)
            values((const float *)(intptr_t)grads[t], grad_numel[t], 0, row + grad_cols[t], 0, unit, threads);
    }
}

/* One tensor's (sum, norm, count of elements > 0 times ``unit``) into out[0..2]:
 * tensor_stats for a single tensor, without the arrays. */
void one_stats(const float *x, int64_t n, float *out, float unit, int threads) {
    int64_t address = (int64_t)(intptr_t)x;
    tensor_stats(1, &address, &n, out, out + 1, out + 2, unit, threads);
}

/* 1 when built with OpenMP (its threads are PyTorch's own, idle between PyTorch's calls),
 * else 0 (threads of its own, which then compete with PyTorch's). */
int openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---- BatchNorm derivations (gradlab.recorder.bn_stats, bn_grads), one call per kind ----
 * Each of ``count`` BatchNorms has channels[i] channels, its saved invstd (float32) and
 * its eps[i]. r_c = var_c * invstd_c^2 with var_c = max(invstd_c^-2 - eps, 0): the mean
 * square of the normalised values. Each writes two totals per BatchNorm into out[2i] and
 * out[2i + 1], in double. */

static double normalised_square(double invstd, double eps) {
    double r = invstd * invstd, var = 1.0 / r - eps;
    return var > 0.0 ? r * var : 0.0;
}

/* A BatchNorm's input: scale * sum_c mean_c and scale * sum_c (var_c + mean_c^2). */
void bn_input_totals(int64_t count, const int64_t *means, const int64_t *invstds, const int64_t *channels,
                     const double *eps, const double *scale, double *out) {
    for (int64_t i = 0; i < count; ++i) {
        const float *mean = (const float *)(intptr_t)means[i], *invstd = (const float *)(intptr_t)invstds[i];
        double s = 0.0, q = 0.0;
        for (int64_t c = 0; c < channels[i]; ++c) {
            double m = mean[c], is = invstd[c], var = 1.0 / (is * is) - eps[i];
            s += m;
            q += (var > 0.0 ? var : 0.0) + m * m;
        }
        out[2 * i] = scale[i] * s;
        out[2 * i + 1] = scale[i] * q;
    }
}

/* A BatchNorm's output: scale * sum_c beta_c and scale * sum_c (gamma_c^2 r_c + beta_c^2). */
void bn_output_totals(int64_t count, const int64_t *gammas, const int64_t *betas, const int64_t *invstds,
                      const int64_t *channels, const double *eps, const double *scale, double *out) {
    for (int64_t i = 0; i < count; ++i) {
        const float *gamma = (const float *)(intptr_t)gammas[i], *beta = (const float *)(intptr_t)betas[i];
        const float *invstd = (const float *)(intptr_t)invstds[i];
        double s = 0.0, q = 0.0;
        for (int64_t c = 0; c < channels[i]; ++c) {
            double g = gamma[c], b = beta[c];
            s += b;
            q += g * g * normalised_square(invstd[c], eps[i]) + b * b;
        }
        out[2 * i] = scale[i] * s;
        out[2 * i + 1] = scale[i] * q;
    }
}

/* A BatchNorm's gradients: ||dL/dy||^2 = sum_c S2_c and ||dL/dx||^2 = sum_c (gamma_c
 * invstd_c)^2 max(S2_c - (S1_c^2 + S3_c^2 (2 - r_c)) / m, 0), with S2_c the sum of squares
 * of channel c of rows[i], a float32 [examples, C, inners] tensor: the per-example,
 * per-channel norms of dL/dy (inners 1), or dL/dy itself, kept for this call; S1 = dbeta,
 * S3 = dgamma, and m[i] values per channel. The BatchNorms are split among up to
 * ``threads`` OpenMP threads when there is much to read, each taken whole by one. */
void bn_grad_totals(int64_t count, const int64_t *rows, const int64_t *examples, const int64_t *inners,
                    const int64_t *dgammas, const int64_t *dbetas, const int64_t *gammas, const int64_t *invstds,
                    const int64_t *channels, const double *eps, const double *m, double *out, int threads) {
    int64_t work = 0;
    for (int64_t i = 0; i < count; ++i) work += examples[i] * channels[i] * inners[i];
    if (work < PARALLEL_NUMEL || threads < 2) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
#endif
    for (int64_t i = 0; i < count; ++i) {
        const float *row = (const float *)(intptr_t)rows[i], *dgamma = (const float *)(intptr_t)dgammas[i];
        const float *dbeta = (const float *)(intptr_t)dbetas[i], *gamma = (const float *)(intptr_t)gammas[i];
        const float *invstd = (const float *)(intptr_t)invstds[i];
        int64_t C = channels[i], inner = inners[i];
        double dy2 = 0.0, dx2 = 0.0;
        for (int64_t c = 0; c < C; ++c) {
            double s2 = 0.0;
            for (int64_t n = 0; n < examples[i]; ++n) {
                const float *run = row + (n * C + c) * inner;
                s2 += inner == 1 ? (double)run[0] * run[0] : sum_squares(run, inner);
            }
            double s1 = dbeta[c], s3 = dgamma[c], is = invstd[c], g = gamma[c];
            double inner_sum = s2 - (s1 * s1 + s3 * s3 * (2.0 - normalised_square(is, eps[i]))) / m[i];
            dy2 += s2;
            dx2 += is * is * g * g * (inner_sum > 0.0 ? inner_sum : 0.0);
        }
        out[2 * i] = dy2;
        out[2 * i + 1] = dx2;
    }
}
