/* Fused CPU kernels of the training engine (backend "native"), see mfsym/engine/native.py.

   One library is built per unit, activation, size and float type; the variant is chosen
   at build time with -D macros, so every size is a compile-time constant:

     MFSYM_DOUBLE  0: float32, 1: float64
     MFSYM_UNIT    1: matrix, σ*(x, z) = act(z x);  2: uv, σ*(x, (u, v)) = v·act(uᵀx / DX);
                   3: mlp, σ*(x, (W1, W2)) = W2 act(W1 x) (defined in mfsym_mlp.h)
     MFSYM_ACT     1: sigmoid, 2: tanh, 3: relu, 4: leaky_relu, 5: linear
     MFSYM_DX, MFSYM_DY   input and output dimensions
     MFSYM_SLOPE   negative-side slope of leaky_relu (ignored by the other activations)

   mfsym_variant reports these values (and whether OpenMP is on) so that a loaded library
   can be checked against the variant it was asked for. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#define MFSYM_OPENMP 1
#define OMP(directive) _Pragma(#directive)
#define UNUSED_WITHOUT_OMP(v)
#else
#define THREAD_ID 0
#define MFSYM_OPENMP 0
#define OMP(directive)
#define UNUSED_WITHOUT_OMP(v) (void)(v)
#endif

#if !defined(MFSYM_DOUBLE) || !defined(MFSYM_UNIT) || !defined(MFSYM_ACT)
#error "define MFSYM_DOUBLE, MFSYM_UNIT and MFSYM_ACT (see the top of this file)"
#endif
#if !defined(MFSYM_DX) || !defined(MFSYM_DY) || !defined(MFSYM_SLOPE)
#error "define MFSYM_DX, MFSYM_DY and MFSYM_SLOPE (see the top of this file)"
#endif
#if MFSYM_DX < 1 || MFSYM_DY < 1
#error "MFSYM_DX and MFSYM_DY must be positive"
#endif

/* Layout version of the exported functions: raise it when a signature changes. */
#define MFSYM_ABI 1

#define DX MFSYM_DX
#define DY MFSYM_DY
#define SLOPE MFSYM_SLOPE

#if MFSYM_UNIT == 1
#define D (DX * DY)
#elif MFSYM_UNIT == 2
#define D (DX + DY)
#elif MFSYM_UNIT == 3 && defined(MFSYM_HIDDEN)
#define D (MFSYM_HIDDEN * (DX + DY))
#else
#error "MFSYM_UNIT must be 1 (matrix), 2 (uv) or 3 (mlp, with MFSYM_HIDDEN)"
#endif

/* Exponential constants: range limit (e^±LIM and its reciprocal stay normal), ln 2 split
   as LN2_HI + LN2_LO with LN2_HI holding 16 (float) / 40 (double) significant bits so that
   n·LN2_HI is exact, and the Taylor coefficients 1/k! of degree 7 / 13, highest first. */
#if MFSYM_DOUBLE
typedef double real;
typedef int64_t ibits;
#define FLOOR __builtin_floor
#define EXP_LIM 700
#define EXP_BIAS 1023
#define EXP_MANT 52
#define LOG2E 1.4426950408889634
#define LN2_HI 0.6931471805592082
#define LN2_LO 7.371002565167799e-13
#define TAYLOR(p, r)                          \
    p = (real)1.6059043836821613e-10;         \
    p = p * r + (real)2.08767569878681e-09;   \
    p = p * r + (real)2.505210838544172e-08;  \
    p = p * r + (real)2.755731922398589e-07;  \
    p = p * r + (real)2.7557319223985893e-06; \
    p = p * r + (real)2.48015873015873e-05;   \
    p = p * r + (real)0.0001984126984126984;  \
    p = p * r + (real)0.001388888888888889;   \
    p = p * r + (real)0.008333333333333333;   \
    p = p * r + (real)0.041666666666666664;   \
    p = p * r + (real)0.16666666666666666;    \
    p = p * r + (real)0.5;                    \
    p = p * r + (real)1.0;                    \
    p = p * r + (real)1.0
#else
typedef float real;
typedef int32_t ibits;
#define FLOOR __builtin_floorf
#define EXP_LIM 80
#define EXP_BIAS 127
#define EXP_MANT 23
#define LOG2E 1.4426950408889634f
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.4286068203094173e-06f
#define TAYLOR(p, r)                          \
    p = (real)0.0001984126984126984f;         \
    p = p * r + (real)0.001388888888888889f;  \
    p = p * r + (real)0.008333333333333333f;  \
    p = p * r + (real)0.041666666666666664f;  \
    p = p * r + (real)0.16666666666666666f;   \
    p = p * r + (real)0.5f;                   \
    p = p * r + (real)1.0f;                   \
    p = p * r + (real)1.0f
#endif

/* Particles per chunk: about 8 KiB (float) / 4 KiB (double) of θ per feature row, a
   multiple of 8 in [8, 256]. */
#define CH_PER (MFSYM_DOUBLE ? 4 : 8)
#define CH_RAW ((CH_PER * 1024 / D) / 8 * 8)
#define CH (CH_RAW < 8 ? 8 : (CH_RAW > 256 ? 256 : CH_RAW))

/* The activation a = act(h) and its derivative act'(h) given h and a (an argument a
   derivative does not need is cast to void, for -Wunused). */
#if MFSYM_ACT == 1
#define ACT(h) ((real)1 / ((real)1 + m_exp(-(h))))
#define DACT(h, a) ((a) * ((real)1 - (a)))
#elif MFSYM_ACT == 2
#define ACT(h) ((real)1 - (real)2 / ((real)1 + m_exp((real)2 * (h))))
#define DACT(h, a) ((real)1 - (a) * (a))
#elif MFSYM_ACT == 3
#define ACT(h) ((h) < (real)0 ? (real)0 : (h))
#define DACT(h, a) ((void)(a), (h) > (real)0 ? (real)1 : (real)0)
#elif MFSYM_ACT == 4
#define ACT(h) ((h) < (real)0 ? (real)SLOPE * (h) : (h))
#define DACT(h, a) ((void)(a), (h) > (real)0 ? (real)1 : (real)SLOPE)
#elif MFSYM_ACT == 5
#define ACT(h) (h)
#define DACT(h, a) ((void)(h), (void)(a), (real)1)
#else
#error "MFSYM_ACT must be 1 (sigmoid), 2 (tanh), 3 (relu), 4 (leaky_relu) or 5 (linear)"
#endif

/* exp(v) for v clamped to [-LIM, LIM]; NaN stays NaN (comparisons with NaN are false):
   v = n ln2 + r, |r| ≤ ln2/2, e^r by its Taylor polynomial, 2ⁿ through the exponent bits. */
static inline real m_exp(real v) {
    v = v < (real)-EXP_LIM ? (real)-EXP_LIM : v;
    v = v > (real)EXP_LIM ? (real)EXP_LIM : v;
    real n = FLOOR(v * (real)LOG2E + (real)0.5);
    real r = (v - n * (real)LN2_HI) - n * (real)LN2_LO;
    real p;
    TAYLOR(p, r);
    ibits e = ((ibits)(int32_t)n + EXP_BIAS) << EXP_MANT;  /* via int32: vectorises on AVX2 */
    real s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* Particles n0..n0+cn of run r, feature-major, optionally mapped by the model projector
   (row vector times Pᵀ, as theta @ P.T); lanes cn..CH-1 are zero. */
static void load_chunk(const real* th, int64_t cn, const real* P, int on, real tz[D][CH]) {
    for (int64_t n = 0; n < cn; n++) {
        const real* t = th + n * D;
        for (int d = 0; d < D; d++) {
            if (on) {
                real acc = 0;
                for (int e = 0; e < D; e++) acc += t[e] * P[d * D + e];
                tz[d][n] = acc;
            } else {
                tz[d][n] = t[d];
            }
        }
    }
    for (int d = 0; d < D; d++)
        for (int64_t n = cn; n < CH; n++) tz[d][n] = 0;
}

static inline double lane_sum(const real acc[8]) {
    return (((double)acc[0] + acc[1]) + ((double)acc[2] + acc[3]))
         + (((double)acc[4] + acc[5]) + ((double)acc[6] + acc[7]));
}

#if MFSYM_UNIT == 1
/* σ*(x, z) = act(z x), z (DY×DX) row-major: pre_k = Σ_l z[k, l] x_l.
   Stored per sample and particle: act'(pre_k), k < DY. */
#define NQ DY

/* Lanes n..n+7 of one sample: acc[k][j] += act(h_k(n + j)) for particles below cn. */
static inline void output_block(real tz[D][CH], int64_t n, int64_t cn, const real* xs,
                                real acc[DY][8], real (*st)[CH], int store) {
    for (int k = 0; k < DY; k++)
        for (int j = 0; j < 8; j++) {
            real h = 0;
            for (int l = 0; l < DX; l++) h += tz[k * DX + l][n + j] * xs[l];
            real a = ACT(h);
            acc[k][j] += (n + j < cn) ? a : (real)0;
            if (store) st[k][n + j] = DACT(h, a);
        }
}

/* Particle n's force contribution of one sample: g[k, l] += act'(h_k) c_k x_l. */
static inline void force_lane(real tz[D][CH], int64_t n, const real* xs, const real* cs,
                              real g[D][CH]) {
    for (int k = 0; k < DY; k++) {
        real h = 0;
        for (int l = 0; l < DX; l++) h += tz[k * DX + l][n] * xs[l];
        real a = ACT(h);
        real w = DACT(h, a) * cs[k];
        for (int l = 0; l < DX; l++) g[k * DX + l][n] += w * xs[l];
    }
}

static inline void force_lane_stored(real tz[D][CH], int64_t n, const real (*st)[CH],
                                     const real* xs, const real* cs, real g[D][CH]) {
    (void)tz;
    for (int k = 0; k < DY; k++) {
        real w = st[k][n] * cs[k];
        for (int l = 0; l < DX; l++) g[k * DX + l][n] += w * xs[l];
    }
}

static inline void force_finish(real g[D][CH], int64_t c8) {
    (void)g;
    (void)c8;
}

#elif MFSYM_UNIT == 3
#include "mfsym_mlp.h"
#else
/* σ*(x, (u, v)) = v · act(uᵀx / DX), z = (u, v).
   Stored per sample and particle: act(h) and act'(h). */
#define NQ 2

/* Lanes n..n+7 of one sample: acc[k][j] += v_k act(uᵀx / DX) for particles below cn. */
static inline void output_block(real tz[D][CH], int64_t n, int64_t cn, const real* xs,
                                real acc[DY][8], real (*st)[CH], int store) {
    for (int j = 0; j < 8; j++) {
        real h = 0;
        for (int l = 0; l < DX; l++) h += tz[l][n + j] * xs[l];
        h = h / (real)DX;
        real a = ACT(h);
        real m = (n + j < cn) ? (real)1 : (real)0;
        for (int k = 0; k < DY; k++) acc[k][j] += m * (tz[DX + k][n + j] * a);
        if (store) {
            st[0][n + j] = a;
            st[1][n + j] = DACT(h, a);
        }
    }
}

/* Particle n's force contribution of one sample from a = act(h), d = act'(h):
   g_v[k] += a c_k, g_u[l] += d (v·c) x_l (divided by DX in force_finish). */
static inline void force_terms(real tz[D][CH], int64_t n, real a, real d, const real* xs,
                               const real* cs, real g[D][CH]) {
    real vc = 0;
    for (int k = 0; k < DY; k++) vc += tz[DX + k][n] * cs[k];
    real w = d * vc;
    for (int k = 0; k < DY; k++) g[DX + k][n] += a * cs[k];
    for (int l = 0; l < DX; l++) g[l][n] += w * xs[l];
}

static inline void force_lane(real tz[D][CH], int64_t n, const real* xs, const real* cs,
                              real g[D][CH]) {
    real h = 0;
    for (int l = 0; l < DX; l++) h += tz[l][n] * xs[l];
    h = h / (real)DX;
    real a = ACT(h);
    force_terms(tz, n, a, DACT(h, a), xs, cs, g);
}

static inline void force_lane_stored(real tz[D][CH], int64_t n, const real (*st)[CH],
                                     const real* xs, const real* cs, real g[D][CH]) {
    force_terms(tz, n, st[0][n], st[1][n], xs, cs, g);
}

static inline void force_finish(real g[D][CH], int64_t c8) {
    for (int l = 0; l < DX; l++)
        for (int64_t n = 0; n < c8; n++) g[l][n] = g[l][n] / (real)DX;
}
#endif

/* Sums over the chunk's particles, part[s, k] = Σ_n σ*(x_s, z_n)_k (8 lanes, then float64);
   with st, also what the pull-back needs per sample and particle, st[s][q][n]. */
static void output_chunk(real tz[D][CH], int64_t cn, const real* xr, int64_t S, double* part,
                         real* st) {
    int64_t c8 = (cn + 7) / 8 * 8;
    for (int64_t s = 0; s < S; s++) {
        real xs[DX];
        for (int l = 0; l < DX; l++) xs[l] = xr[s * DX + l];
        real acc[DY][8];
        for (int k = 0; k < DY; k++)
            for (int j = 0; j < 8; j++) acc[k][j] = 0;
        if (st) {
            real (*sts)[CH] = (real (*)[CH])(st + s * NQ * CH);
            for (int64_t n = 0; n < c8; n += 8) output_block(tz, n, cn, xs, acc, sts, 1);
        } else {
            for (int64_t n = 0; n < c8; n += 8) output_block(tz, n, cn, xs, acc, 0, 0);
        }
        for (int k = 0; k < DY; k++) part[s * DY + k] = lane_sum(acc[k]);
    }
}

/* Pull-back over the chunk: g[d][n] = Σ_s (J_n(x_s)ᵀ c_s)_d, from st when given. */
static void force_chunk(real tz[D][CH], int64_t cn, const real* xr, const real* cr, int64_t S,
                        const real* st, real g[D][CH]) {
    int64_t c8 = (cn + 7) / 8 * 8;
    for (int d = 0; d < D; d++)
        for (int64_t n = 0; n < c8; n++) g[d][n] = 0;
    for (int64_t s = 0; s < S; s++) {
        real xs[DX], cs[DY];
        for (int l = 0; l < DX; l++) xs[l] = xr[s * DX + l];
        for (int k = 0; k < DY; k++) cs[k] = cr[s * DY + k];
        if (st) {
            const real (*sts)[CH] = (const real (*)[CH])(st + s * NQ * CH);
            for (int64_t n = 0; n < c8; n++) force_lane_stored(tz, n, sts, xs, cs, g);
        } else {
            for (int64_t n = 0; n < c8; n++) force_lane(tz, n, xs, cs, g);
        }
    }
    force_finish(g, c8);
}

/* θ_out = θ − lr·Π_d[g + wd·θ] + sigma·Π_n ξ for the chunk's cn particles (row vectors
   times P where pon, times Q where qon). */
static void update_chunk(const real* th, int64_t cn, real g[D][CH], const real* xv,
                         const real* P, int pon, const real* Q, int qon, real lr, real wd,
                         real sg, real* to) {
    for (int64_t n = 0; n < cn; n++) {
        real dr[D];
        for (int d = 0; d < D; d++) dr[d] = g[d][n] + wd * th[n * D + d];
        for (int d = 0; d < D; d++) {
            real drift = dr[d], noise = xv[n * D + d];
            if (pon) {
                drift = 0;
                for (int e = 0; e < D; e++) drift += dr[e] * P[e * D + d];
            }
            if (qon) {
                noise = 0;
                for (int e = 0; e < D; e++) noise += xv[n * D + e] * Q[e * D + d];
            }
            to[n * D + d] = (th[n * D + d] - lr * drift) + sg * noise;
        }
    }
}

static inline int64_t nchunks(int64_t N) { return (N + CH - 1) / CH; }
static inline int use_threads(int64_t R, int64_t N, int64_t S) {
    return R * N * S >= 32768;
}

int mfsym_output(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                 const real* proj, const int8_t* proj_on, real* out, int nt) {
    UNUSED_WITHOUT_OMP(nt);
    int64_t nch = nchunks(N), W = R * nch;
    double* part = (double*)malloc((size_t)W * S * DY * sizeof(double));
    if (!part) return 1;
    OMP(omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S)))
    for (int64_t w = 0; w < W; w++) {
        int64_t r = w / nch, n0 = (w % nch) * CH;
        int64_t cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        load_chunk(theta + (r * N + n0) * D, cn, proj + r * D * D, proj_on[r], tz);
        output_chunk(tz, cn, x + r * S * DX, S, part + w * S * DY, 0);
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t q = 0; q < S * DY; q++) {
            double t = 0;
            for (int64_t c = 0; c < nch; c++) t += part[(r * nch + c) * S * DY + q];
            out[r * S * DY + q] = (real)(t / (double)N);
        }
    free(part);
    return 0;
}

int mfsym_force(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                const real* cot, real* force, int nt) {
    UNUSED_WITHOUT_OMP(nt);
    int64_t nch = nchunks(N), W = R * nch;
    OMP(omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S)))
    for (int64_t w = 0; w < W; w++) {
        int64_t r = w / nch, n0 = (w % nch) * CH;
        int64_t cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        real g[D][CH] __attribute__((aligned(64)));
        load_chunk(theta + (r * N + n0) * D, cn, 0, 0, tz);
        force_chunk(tz, cn, x + r * S * DX, cot + r * S * DY, S, 0, g);
        real* f = force + (r * N + n0) * D;
        for (int64_t n = 0; n < cn; n++)
            for (int d = 0; d < D; d++) f[n * D + d] = g[d][n];
    }
    return 0;
}

/* θ_out = θ − lr·Π_d[F(Pθ) + wd·θ] + sigma·Π_n ξ for a given cotangent; run r reads ξ at
   xi + xi_row[r]·xi_stride; Π_d = P where proj_on[r], Π_n = Q where noise_on[r]. */
int mfsym_step(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
               const real* cot, const real* xi, const int64_t* xi_row, int64_t xi_stride,
               const real* proj, const int8_t* proj_on, const real* noise_proj,
               const int8_t* noise_on, double lr, double wd, double sigma, real* theta_out,
               int nt) {
    UNUSED_WITHOUT_OMP(nt);
    int64_t nch = nchunks(N), W = R * nch;
    OMP(omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S)))
    for (int64_t w = 0; w < W; w++) {
        int64_t r = w / nch, n0 = (w % nch) * CH;
        int64_t cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        real g[D][CH] __attribute__((aligned(64)));
        const real* th = theta + (r * N + n0) * D;
        load_chunk(th, cn, proj + r * D * D, proj_on[r], tz);
        force_chunk(tz, cn, x + r * S * DX, cot + r * S * DY, S, 0, g);
        update_chunk(th, cn, g, xi + xi_row[r] * xi_stride + n0 * D, proj + r * D * D,
                     proj_on[r], noise_proj + r * D * D, noise_on[r], (real)lr, (real)wd,
                     (real)sigma, theta_out + (r * N + n0) * D);
    }
    return 0;
}

/* Workspace of one worker of mfsym_fused: reals (stored pull-back data and a cotangent)
   and doubles (per-chunk partial sums). */
void mfsym_sizes(int64_t N, int64_t S, int64_t* reals, int64_t* doubles) {
    *reals = nchunks(N) * S * NQ * CH + S * DY;
    *doubles = nchunks(N) * S * DY;
}

typedef struct {
    int64_t N, S, m;
    const real *theta, *x, *targets, *cot_l, *xi, *proj, *noise_proj;
    const int8_t *cot_on, *proj_on, *noise_on;
    const int64_t* xi_row;
    int64_t xi_stride;
    real c0, lr, wd, sigma;
    real *out, *theta_out;
    double* loss_acc;
    int64_t* first_bad;
    int64_t step;
} fused_args;

/* cot_s = c0 e_s, e_s = L o_b − T_s with o_b the m views of sample b (s = g·B + b), L = I
   when off; returns the loss Σ_s ‖e_s‖² / S (for FA, Σ_b ‖Φ̂(x_b) − y_b‖² / B as g is
   orthogonal). */
static double cotangent(const fused_args* a, int64_t r, const real* o, real* cot) {
    int64_t S = a->S, m = a->m, B = S / m, md = m * DY;
    const real* T = a->targets + r * S * DY;
    const real* L = a->cot_l + r * md * md;
    double loss = 0;
    for (int64_t s = 0; s < S; s++) {
        int64_t gi = s / B, b = s % B;
        for (int k = 0; k < DY; k++) {
            real v = o[s * DY + k];
            if (a->cot_on[r]) {
                v = 0;
                for (int64_t g2 = 0; g2 < m; g2++)
                    for (int k2 = 0; k2 < DY; k2++)
                        v += L[(gi * DY + k) * md + g2 * DY + k2] * o[(g2 * B + b) * DY + k2];
            }
            real e = v - T[s * DY + k];
            loss += (double)e * (double)e;
            cot[s * DY + k] = a->c0 * e;
        }
    }
    return loss / (double)S;
}

/* One run: outputs (keeping the pull-back data), cotangent, force and update; the chunks
   of each phase on `inner` threads. */
static void fused_run(const fused_args* a, int64_t r, real* work, double* part, int inner) {
    UNUSED_WITHOUT_OMP(inner);
    int64_t N = a->N, S = a->S, nch = nchunks(N);
    real* st = work;
    real* cot = work + nch * S * NQ * CH;
    const real* P = a->proj + r * D * D;
    OMP(omp parallel for num_threads(inner) schedule(static) if(inner > 1))
    for (int64_t c = 0; c < nch; c++) {
        int64_t n0 = c * CH, cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        load_chunk(a->theta + (r * N + n0) * D, cn, P, a->proj_on[r], tz);
        output_chunk(tz, cn, a->x + r * S * DX, S, part + c * S * DY, st + c * S * NQ * CH);
    }
    real* o = a->out + r * S * DY;
    for (int64_t q = 0; q < S * DY; q++) {
        double t = 0;
        for (int64_t c = 0; c < nch; c++) t += part[c * S * DY + q];
        o[q] = (real)(t / (double)N);
    }
    double loss = cotangent(a, r, o, cot);
    a->loss_acc[r] += loss;
    if (!__builtin_isfinite(loss) && a->first_bad[r] < 0) a->first_bad[r] = a->step;
    OMP(omp parallel for num_threads(inner) schedule(static) if(inner > 1))
    for (int64_t c = 0; c < nch; c++) {
        int64_t n0 = c * CH, cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        real g[D][CH] __attribute__((aligned(64)));
        const real* th = a->theta + (r * N + n0) * D;
        load_chunk(th, cn, P, a->proj_on[r], tz);
        force_chunk(tz, cn, a->x + r * S * DX, cot, S, st + c * S * NQ * CH, g);
        update_chunk(th, cn, g, a->xi + a->xi_row[r] * a->xi_stride + n0 * D, P,
                     a->proj_on[r], a->noise_proj + r * D * D, a->noise_on[r], a->lr, a->wd,
                     a->sigma, a->theta_out + (r * N + n0) * D);
    }
}

/* A whole step of R runs: out = Φ_N(x) (R, S, DY) and θ_out; the minibatch loss is added
   to loss_acc (R,) and the step recorded in first_bad (R,) the first time a run's loss is
   not finite.  Runs are spread over the threads when there are enough of them, else each
   run's chunks are; the numbers of a run are the same either way. */
int mfsym_fused(int64_t R, int64_t N, int64_t S, int64_t m, const real* theta, const real* x,
                const real* targets, const real* cot_l, const int8_t* cot_on, double c0,
                const real* xi, const int64_t* xi_row, int64_t xi_stride, const real* proj,
                const int8_t* proj_on, const real* noise_proj, const int8_t* noise_on,
                double lr, double wd, double sigma, real* out, real* theta_out,
                double* loss_acc, int64_t* first_bad, int64_t step, real* work, double* partw,
                int nt) {
    fused_args a = {N, S, m, theta, x, targets, cot_l, xi, proj, noise_proj, cot_on, proj_on,
                    noise_on, xi_row, xi_stride, (real)c0, (real)lr, (real)wd, (real)sigma,
                    out, theta_out, loss_acc, first_bad, step};
    int64_t wr, wdb;
    mfsym_sizes(N, S, &wr, &wdb);
    int by_run = nt > 1 && R >= nt && (R % nt == 0 || R >= 4 * nt);
    if (by_run) {
        OMP(omp parallel num_threads(nt))
        {
            int t = THREAD_ID;
            OMP(omp for schedule(dynamic, 1))
            for (int64_t r = 0; r < R; r++) fused_run(&a, r, work + t * wr, partw + t * wdb, 1);
        }
    } else {
        int inner = use_threads(1, N, S) ? nt : 1;
        for (int64_t r = 0; r < R; r++) fused_run(&a, r, work, partw, inner);
    }
    return 0;
}

/* The compiled variant, for checking a loaded library: v[0..8] = {ABI version, bytes per
   real, unit, activation, DX, DY, D, CH, OpenMP on}, *slope = SLOPE. */
void mfsym_variant(int64_t* v, double* slope) {
    v[0] = MFSYM_ABI;
    v[1] = (int64_t)sizeof(real);
    v[2] = MFSYM_UNIT;
    v[3] = MFSYM_ACT;
    v[4] = DX;
    v[5] = DY;
    v[6] = D;
    v[7] = CH;
    v[8] = MFSYM_OPENMP;
    *slope = (double)SLOPE;
}
