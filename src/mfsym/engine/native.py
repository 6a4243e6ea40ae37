"""Fused CPU kernels in C for the per-step force and update (backend ``native``).

For one unit, activation and dtype this module writes a small C file with every size
fixed at compile time, builds it with the system C compiler (OpenMP, ``-O3
-march=native``) into a cached shared library and calls it through :mod:`ctypes`.

What the kernels compute (shapes as in :mod:`mfsym.core.units`; R runs, N particles, S samples):

* ``output``: ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, P θ_n)``, ``(R, S, dy)``, with P the run's
  model projector (P_E for EA, else the identity);
* ``force``: the pull-back ``F_n = Σ_s J_n(x_s)ᵀ c_s``, ``(R, N, D)``;
* ``step``: the whole noisy SGD update of PAPER.md §4 in one pass,
  ``θ ← θ − lr · Π_d[F(Pθ) + wd θ] + σ · Π_n ξ``, never storing F.

Speed comes from (i) one pass per phase over the particles, kept in cache-sized chunks
of ``CH`` particles stored feature-major so the loops vectorise over particles, (ii) the
activation and its derivative computed from one pre-activation, (iii) a branch-free,
vectorisable exponential (Cody–Waite reduction ``v = n ln2 + r``, |r| ≤ ln2/2, Taylor
polynomial of degree 7 / 13 in float32 / float64, scaling by 2ⁿ through the exponent
bits; relative error about one unit in the last place, NaN propagates).

Determinism.  Work is split into (run, chunk) items whose boundaries depend only on N;
partial sums over particles are kept per chunk (in float64) and added in chunk order, so
the result is the same bit for bit whatever the number of threads and whatever other
runs share the call.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from decimal import Decimal, getcontext
from pathlib import Path

import torch

from ..core.units import Unit

log = logging.getLogger(__name__)

ACT_CODE = {
    # (activation a = act(h), derivative act'(h) given h and a)
    "sigmoid": ("((real)1 / ((real)1 + m_exp(-(h))))", "((a) * ((real)1 - (a)))"),
    "tanh": ("((real)1 - (real)2 / ((real)1 + m_exp((real)2 * (h))))", "((real)1 - (a) * (a))"),
    "relu": ("((h) < (real)0 ? (real)0 : (h))", "((h) > (real)0 ? (real)1 : (real)0)"),
    "leaky_relu": (
        "((h) < (real)0 ? (real)SLOPE * (h) : (h))",
        "((h) > (real)0 ? (real)1 : (real)SLOPE)",
    ),
    "linear": ("(h)", "((real)1)"),
}

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#else
#define THREAD_ID 0
#endif

typedef {real} real;
typedef {ibits} ibits;
#define DX {dx}
#define DY {dy}
#define D {d}
#define CH {chunk}
#define SLOPE {slope}
#define ACT(h) {act}
#define DACT(h, a) {dact}

/* exp(v) for v clamped to [-LIM, LIM]; NaN stays NaN (comparisons with NaN are false). */
static inline real m_exp(real v) {{
    v = v < (real)-{lim} ? (real)-{lim} : v;
    v = v > (real){lim} ? (real){lim} : v;
    real n = {floor}(v * (real){log2e} + (real)0.5);
    real r = (v - n * (real){ln2_hi}) - n * (real){ln2_lo};
    real p = (real){c_top};
{horner}
    ibits e = ((ibits)(int32_t)n + {bias}) << {mant};  /* via int32: vectorises on AVX2 */
    real s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}}

/* Particles n0..n0+cn of run r, feature-major, optionally mapped by the model projector
   (row vector times Pᵀ, as theta @ P.T); lanes cn..CH-1 are zero. */
static void load_chunk(const real* th, int64_t cn, const real* P, int on, real tz[D][CH]) {{
    for (int64_t n = 0; n < cn; n++) {{
        const real* t = th + n * D;
        for (int d = 0; d < D; d++) {{
            if (on) {{
                real acc = 0;
                for (int e = 0; e < D; e++) acc += t[e] * P[d * D + e];
                tz[d][n] = acc;
            }} else {{
                tz[d][n] = t[d];
            }}
        }}
    }}
    for (int d = 0; d < D; d++)
        for (int64_t n = cn; n < CH; n++) tz[d][n] = 0;
}}

static inline double lane_sum(const real acc[8]) {{
    return (((double)acc[0] + acc[1]) + ((double)acc[2] + acc[3]))
         + (((double)acc[4] + acc[5]) + ((double)acc[6] + acc[7]));
}}

{unit_code}

/* Sums over the chunk's particles, part[s, k] = Σ_n σ*(x_s, z_n)_k (8 lanes, then float64);
   with st, also what the pull-back needs per sample and particle, st[s][q][n]. */
static void output_chunk(real tz[D][CH], int64_t cn, const real* xr, int64_t S, double* part,
                         real* st) {{
    int64_t c8 = (cn + 7) / 8 * 8;
    for (int64_t s = 0; s < S; s++) {{
        real xs[DX];
        for (int l = 0; l < DX; l++) xs[l] = xr[s * DX + l];
        real acc[DY][8];
        for (int k = 0; k < DY; k++)
            for (int j = 0; j < 8; j++) acc[k][j] = 0;
        if (st) {{
            real (*sts)[CH] = (real (*)[CH])(st + s * NQ * CH);
            for (int64_t n = 0; n < c8; n += 8) output_block(tz, n, cn, xs, acc, sts, 1);
        }} else {{
            for (int64_t n = 0; n < c8; n += 8) output_block(tz, n, cn, xs, acc, 0, 0);
        }}
        for (int k = 0; k < DY; k++) part[s * DY + k] = lane_sum(acc[k]);
    }}
}}

/* Pull-back over the chunk: g[d][n] = Σ_s (J_n(x_s)ᵀ c_s)_d, from st when given. */
static void force_chunk(real tz[D][CH], int64_t cn, const real* xr, const real* cr, int64_t S,
                        const real* st, real g[D][CH]) {{
    int64_t c8 = (cn + 7) / 8 * 8;
    for (int d = 0; d < D; d++)
        for (int64_t n = 0; n < c8; n++) g[d][n] = 0;
    for (int64_t s = 0; s < S; s++) {{
        real xs[DX], cs[DY];
        for (int l = 0; l < DX; l++) xs[l] = xr[s * DX + l];
        for (int k = 0; k < DY; k++) cs[k] = cr[s * DY + k];
        if (st) {{
            const real (*sts)[CH] = (const real (*)[CH])(st + s * NQ * CH);
            for (int64_t n = 0; n < c8; n++) force_lane_stored(tz, n, sts, xs, cs, g);
        }} else {{
            for (int64_t n = 0; n < c8; n++) force_lane(tz, n, xs, cs, g);
        }}
    }}
    force_finish(g, c8);
}}

/* θ_out = θ − lr·Π_d[g + wd·θ] + sigma·Π_n ξ for the chunk's cn particles (row vectors
   times P where pon, times Q where qon). */
static void update_chunk(const real* th, int64_t cn, real g[D][CH], const real* xv,
                         const real* P, int pon, const real* Q, int qon, real lr, real wd,
                         real sg, real* to) {{
    for (int64_t n = 0; n < cn; n++) {{
        real dr[D];
        for (int d = 0; d < D; d++) dr[d] = g[d][n] + wd * th[n * D + d];
        for (int d = 0; d < D; d++) {{
            real drift = dr[d], noise = xv[n * D + d];
            if (pon) {{
                drift = 0;
                for (int e = 0; e < D; e++) drift += dr[e] * P[e * D + d];
            }}
            if (qon) {{
                noise = 0;
                for (int e = 0; e < D; e++) noise += xv[n * D + e] * Q[e * D + d];
            }}
            to[n * D + d] = (th[n * D + d] - lr * drift) + sg * noise;
        }}
    }}
}}

static inline int64_t nchunks(int64_t N) {{ return (N + CH - 1) / CH; }}
static inline int use_threads(int64_t R, int64_t N, int64_t S) {{
    return R * N * S >= 32768;
}}

int mfsym_output(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                 const real* proj, const int8_t* proj_on, real* out, int nt) {{
    int64_t nch = nchunks(N), W = R * nch;
    double* part = (double*)malloc((size_t)W * S * DY * sizeof(double));
    if (!part) return 1;
    #pragma omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S))
    for (int64_t w = 0; w < W; w++) {{
        int64_t r = w / nch, n0 = (w % nch) * CH;
        int64_t cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        load_chunk(theta + (r * N + n0) * D, cn, proj + r * D * D, proj_on[r], tz);
        output_chunk(tz, cn, x + r * S * DX, S, part + w * S * DY, 0);
    }}
    for (int64_t r = 0; r < R; r++)
        for (int64_t q = 0; q < S * DY; q++) {{
            double t = 0;
            for (int64_t c = 0; c < nch; c++) t += part[(r * nch + c) * S * DY + q];
            out[r * S * DY + q] = (real)(t / (double)N);
        }}
    free(part);
    return 0;
}}

int mfsym_force(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                const real* cot, real* force, int nt) {{
    int64_t nch = nchunks(N), W = R * nch;
    #pragma omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S))
    for (int64_t w = 0; w < W; w++) {{
        int64_t r = w / nch, n0 = (w % nch) * CH;
        int64_t cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        real g[D][CH] __attribute__((aligned(64)));
        load_chunk(theta + (r * N + n0) * D, cn, 0, 0, tz);
        force_chunk(tz, cn, x + r * S * DX, cot + r * S * DY, S, 0, g);
        real* f = force + (r * N + n0) * D;
        for (int64_t n = 0; n < cn; n++)
            for (int d = 0; d < D; d++) f[n * D + d] = g[d][n];
    }}
    return 0;
}}

/* θ_out = θ − lr·Π_d[F(Pθ) + wd·θ] + sigma·Π_n ξ for a given cotangent; run r reads ξ at
   xi + xi_row[r]·xi_stride; Π_d = P where proj_on[r], Π_n = Q where noise_on[r]. */
int mfsym_step(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
               const real* cot, const real* xi, const int64_t* xi_row, int64_t xi_stride,
               const real* proj, const int8_t* proj_on, const real* noise_proj,
               const int8_t* noise_on, double lr, double wd, double sigma, real* theta_out,
               int nt) {{
    int64_t nch = nchunks(N), W = R * nch;
    #pragma omp parallel for num_threads(nt) schedule(static) if(use_threads(R, N, S))
    for (int64_t w = 0; w < W; w++) {{
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
    }}
    return 0;
}}

/* Workspace of one worker of mfsym_fused: reals (stored pull-back data and a cotangent)
   and doubles (per-chunk partial sums). */
void mfsym_sizes(int64_t N, int64_t S, int64_t* reals, int64_t* doubles) {{
    *reals = nchunks(N) * S * NQ * CH + S * DY;
    *doubles = nchunks(N) * S * DY;
}}

typedef struct {{
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
}} fused_args;

/* cot_s = c0 e_s, e_s = L o_b − T_s with o_b the m views of sample b (s = g·B + b), L = I
   when off; returns the loss Σ_s ‖e_s‖² / S (for FA, Σ_b ‖Φ̂(x_b) − y_b‖² / B as g is
   orthogonal). */
static double cotangent(const fused_args* a, int64_t r, const real* o, real* cot) {{
    int64_t S = a->S, m = a->m, B = S / m, md = m * DY;
    const real* T = a->targets + r * S * DY;
    const real* L = a->cot_l + r * md * md;
    double loss = 0;
    for (int64_t s = 0; s < S; s++) {{
        int64_t gi = s / B, b = s % B;
        for (int k = 0; k < DY; k++) {{
            real v = o[s * DY + k];
            if (a->cot_on[r]) {{
                v = 0;
                for (int64_t g2 = 0; g2 < m; g2++)
                    for (int k2 = 0; k2 < DY; k2++)
                        v += L[(gi * DY + k) * md + g2 * DY + k2] * o[(g2 * B + b) * DY + k2];
            }}
            real e = v - T[s * DY + k];
            loss += (double)e * (double)e;
            cot[s * DY + k] = a->c0 * e;
        }}
    }}
    return loss / (double)S;
}}

/* One run: outputs (keeping the pull-back data), cotangent, force and update; the chunks
   of each phase on `inner` threads. */
static void fused_run(const fused_args* a, int64_t r, real* work, double* part, int inner) {{
    int64_t N = a->N, S = a->S, nch = nchunks(N);
    real* st = work;
    real* cot = work + nch * S * NQ * CH;
    const real* P = a->proj + r * D * D;
    #pragma omp parallel for num_threads(inner) schedule(static) if(inner > 1)
    for (int64_t c = 0; c < nch; c++) {{
        int64_t n0 = c * CH, cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        load_chunk(a->theta + (r * N + n0) * D, cn, P, a->proj_on[r], tz);
        output_chunk(tz, cn, a->x + r * S * DX, S, part + c * S * DY, st + c * S * NQ * CH);
    }}
    real* o = a->out + r * S * DY;
    for (int64_t q = 0; q < S * DY; q++) {{
        double t = 0;
        for (int64_t c = 0; c < nch; c++) t += part[c * S * DY + q];
        o[q] = (real)(t / (double)N);
    }}
    double loss = cotangent(a, r, o, cot);
    a->loss_acc[r] += loss;
    if (!__builtin_isfinite(loss) && a->first_bad[r] < 0) a->first_bad[r] = a->step;
    #pragma omp parallel for num_threads(inner) schedule(static) if(inner > 1)
    for (int64_t c = 0; c < nch; c++) {{
        int64_t n0 = c * CH, cn = N - n0 < CH ? N - n0 : CH;
        real tz[D][CH] __attribute__((aligned(64)));
        real g[D][CH] __attribute__((aligned(64)));
        const real* th = a->theta + (r * N + n0) * D;
        load_chunk(th, cn, P, a->proj_on[r], tz);
        force_chunk(tz, cn, a->x + r * S * DX, cot, S, st + c * S * NQ * CH, g);
        update_chunk(th, cn, g, a->xi + a->xi_row[r] * a->xi_stride + n0 * D, P,
                     a->proj_on[r], a->noise_proj + r * D * D, a->noise_on[r], a->lr, a->wd,
                     a->sigma, a->theta_out + (r * N + n0) * D);
    }}
}}

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
                int nt) {{
    fused_args a = {{N, S, m, theta, x, targets, cot_l, xi, proj, noise_proj, cot_on, proj_on,
                    noise_on, xi_row, xi_stride, (real)c0, (real)lr, (real)wd, (real)sigma,
                    out, theta_out, loss_acc, first_bad, step}};
    int64_t wr, wdb;
    mfsym_sizes(N, S, &wr, &wdb);
    int by_run = nt > 1 && R >= nt && (R % nt == 0 || R >= 4 * nt);
    if (by_run) {{
        #pragma omp parallel num_threads(nt)
        {{
            int t = THREAD_ID;
            #pragma omp for schedule(dynamic, 1)
            for (int64_t r = 0; r < R; r++) fused_run(&a, r, work + t * wr, partw + t * wdb, 1);
        }}
    }} else {{
        int inner = use_threads(1, N, S) ? nt : 1;
        for (int64_t r = 0; r < R; r++) fused_run(&a, r, work, partw, inner);
    }}
    return 0;
}}
"""

_MATRIX = r"""
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
"""

_UV = r"""
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
"""

_UNIT_CODE = {"matrix": _MATRIX, "uv": _UV}

#: GNU C (not ISO) so that a·b + c contracts to one fused multiply-add.
_FLAGS = [
    "-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno",
    "-fno-trapping-math",
]
_OPTIONAL_FLAGS = (["-march=native", "-fopenmp"], ["-fopenmp"], [])

_LOCK = threading.Lock()
_LIBS: dict[tuple, ctypes.CDLL] = {}


class NativeUnavailable(RuntimeError):
    """The native backend cannot serve this unit, dtype or machine (reason in the message)."""


def _ln2_split(keep_bits: int) -> tuple[float, float]:
    """ln 2 = hi + lo with hi carrying ``keep_bits`` significant bits (n·hi exact)."""
    getcontext().prec = 50
    ln2 = Decimal(2).ln()
    scale = 2**keep_bits
    hi = float(int(ln2 * scale)) / scale
    lo = float(ln2 - Decimal(hi))
    return hi, lo


def _exp_constants(dtype: torch.dtype) -> dict:
    """Range, reduction and polynomial constants of ``m_exp`` for a float type."""
    if dtype == torch.float32:
        # e^{±80} and its reciprocal stay normal floats; degree 7 Taylor on |r| ≤ ln2/2.
        lim, degree, keep, bias, mant, suffix = 80, 7, 16, 127, 23, "f"
        real, ibits, floor = "float", "int32_t", "__builtin_floorf"
    elif dtype == torch.float64:
        lim, degree, keep, bias, mant, suffix = 700, 13, 40, 1023, 52, ""
        real, ibits, floor = "double", "int64_t", "__builtin_floor"
    else:
        raise NativeUnavailable(f"dtype {dtype} is not supported (float32, float64)")
    hi, lo = _ln2_split(keep)
    coeffs = [1.0 / _factorial(k) for k in range(degree, -1, -1)]

    def lit(v):
        return f"{v!r}{suffix}"

    horner = "\n".join(f"    p = p * r + (real){lit(c)};" for c in coeffs[1:])
    return {
        "real": real, "ibits": ibits, "floor": floor, "lim": lim, "bias": bias, "mant": mant,
        "log2e": lit(1.4426950408889634), "ln2_hi": lit(hi), "ln2_lo": lit(lo),
        "c_top": lit(coeffs[0]), "horner": horner,
    }


def _factorial(k: int) -> int:
    out = 1
    for i in range(2, k + 1):
        out *= i
    return out


def leaky_slope(unit: Unit) -> float:
    """The negative-side slope of a leaky ReLU unit, read off act(−1) = −slope."""
    value = unit.activation.fn(torch.tensor(-1.0, dtype=torch.float64))
    return -float(value)


def kernel_source(unit: Unit, dtype: torch.dtype) -> str:
    """The C source of the kernels for ``unit`` in ``dtype`` (raises if unsupported)."""
    if unit.name not in _UNIT_CODE:
        raise NativeUnavailable(f"unit {unit.name!r} has no native kernel")
    act = unit.activation.name
    if act not in ACT_CODE:
        raise NativeUnavailable(f"activation {act!r} has no native kernel")
    consts = _exp_constants(dtype)
    d = unit.dim_z
    per = 8 if dtype == torch.float32 else 4
    chunk = max(8, min(256, (per * 1024 // max(d, 1)) // 8 * 8))
    slope = repr(leaky_slope(unit)) if act == "leaky_relu" else "0.0"
    a, da = ACT_CODE[act]
    return _SOURCE.format(
        dx=unit.dx, dy=unit.dy, d=d, chunk=chunk, slope=slope, act=a, dact=da,
        unit_code=_UNIT_CODE[unit.name], **consts,
    )


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cache_dir() -> Path:
    env = os.environ.get("MFSYM_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mfsym" / "kernels"


def _machine_id() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return platform.machine() + "|" + "|".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + "|" + platform.processor()


def _compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.splitlines()[0] if res.stdout else cc
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"C compiler {cc!r} does not run ({exc})") from exc


def _build(source: str) -> Path:
    """Compile ``source`` into a cached shared library and return its path."""
    cc = _compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler found (set CC or install gcc)")
    key = hashlib.sha256(
        "\n".join([source, _compiler_id(cc), " ".join(_FLAGS), _machine_id()]).encode()
    ).hexdigest()[:24]
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"mfsym-kernels-{os.getuid()}"
        folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"mfsym_{key}.so"
    if target.exists():
        return target
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "kernel.c"
        src.write_text(source)
        for extra in _OPTIONAL_FLAGS:
            out = Path(tmp) / "kernel.so"
            cmd = [cc, *_FLAGS, *extra, str(src), "-o", str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(out, target)  # atomic: concurrent builders write the same bytes
                log.info("built native kernel %s (%s)", target.name, " ".join(extra) or "-")
                return target
            errors.append(f"{' '.join(extra) or 'plain'}: {res.stderr.strip()[-400:]}")
    raise NativeUnavailable("the C compiler failed:\n" + "\n".join(errors))


def load_library(unit: Unit, dtype: torch.dtype) -> ctypes.CDLL:
    """The compiled kernels for ``unit`` and ``dtype`` (built once, then cached)."""
    source = kernel_source(unit, dtype)
    key = (source,)
    with _LOCK:
        if key not in _LIBS:
            lib = ctypes.CDLL(str(_build(source)))
            _declare(lib)
            _LIBS[key] = lib
        return _LIBS[key]


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    lib.mfsym_output.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i32]
    lib.mfsym_force.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, i32]
    lib.mfsym_step.argtypes = [
        i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, f64, f64, f64, ptr, i32,
    ]
    lib.mfsym_fused.argtypes = [
        i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, f64, ptr, ptr, i64, ptr, ptr, ptr, ptr,
        f64, f64, f64, ptr, ptr, ptr, ptr, i64, ptr, ptr, i32,
    ]
    lib.mfsym_sizes.argtypes = [i64, i64, ptr, ptr]
    lib.mfsym_sizes.restype = None
    for fn in (lib.mfsym_output, lib.mfsym_force, lib.mfsym_step, lib.mfsym_fused):
        fn.restype = i32
