/* Fused CPU kernels of the training engine (backend "native"), see mfsym/engine/native.py.

   One library is built per unit, activation, size and float type; the variant is chosen
   at build time with -D macros, so every size is a compile-time constant:

     MFSYM_DOUBLE  0: float32, 1: float64
     MFSYM_UNIT    1: matrix, σ*(x, z) = act(z x);  2: uv, σ*(x, (u, v)) = v·act(uᵀx / DX);
                   3: mlp, σ*(x, (W1, W2)) = W2 act(W1 x) (defined in mfsym_mlp.h)
     MFSYM_ACT     1: sigmoid, 2: tanh, 3: relu, 4: leaky_relu, 5: linear
     MFSYM_DX, MFSYM_DY   input and output dimensions
     MFSYM_SLOPE   negative-side slope of leaky_relu (ignored by the other activations)

     MFSYM_VBYTES  (optional) bytes per vector of the step kernel, default by the target

   mfsym_variant reports these values (and whether OpenMP is on, and the vector length) so
   that a loaded library can be checked against the variant it was asked for.

   Threads: mfsym_steps, mfsym_output, mfsym_force and mfsym_step run on POSIX threads that
   claim work items from a shared counter and never spin for long (see mfsym_steps);
   mfsym_fused, the first whole-step kernel, uses OpenMP. */

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
#define MFSYM_ABI 3

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
#define TAYLOR_C0 1.6059043836821613e-10
#define TAYLOR_REST(p, r)                     \
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
#define TAYLOR_C0 0.0001984126984126984f
#define TAYLOR_REST(p, r)                     \
    p = p * r + (real)0.001388888888888889f;  \
    p = p * r + (real)0.008333333333333333f;  \
    p = p * r + (real)0.041666666666666664f;  \
    p = p * r + (real)0.16666666666666666f;   \
    p = p * r + (real)0.5f;                   \
    p = p * r + (real)1.0f;                   \
    p = p * r + (real)1.0f
#endif
#define TAYLOR(p, r)         \
    p = (real)TAYLOR_C0;     \
    TAYLOR_REST(p, r)

/* Particles per chunk: about 8 KiB (float) / 4 KiB (double) of θ per feature row, a
   multiple of 16 (a whole number of vectors of any width up to 64 bytes) in [16, 256]. */
#define CH_PER (MFSYM_DOUBLE ? 4 : 8)
#define CH_RAW ((CH_PER * 1024 / D) / 16 * 16)
#define CH (CH_RAW < 16 ? 16 : (CH_RAW > 256 ? 256 : CH_RAW))

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

/* ---- a team of worker threads kept from call to call ----
   team_run(nt, fn, arg) runs fn(arg, id) on this thread (id 0) and on up to nt − 1 workers
   (ids 1, 2, …) that sleep on a condition variable between calls, so a call pays no thread
   creation.  fn must take its work from shared counters, so that it is right with any
   number of ids taking part: a worker that wakes after the work is gone does nothing, and
   the call waits only for the workers that joined it, never for one the scheduler has not
   yet run (on a busy machine that wait would be a time slice).  A call that finds the team
   in use by another thread of the process runs alone (id 0 only).  After fork() the child
   starts with an empty team. */
typedef void (*team_fn)(void* arg, int id);
#define TEAM_MAX 256
static struct {
    pthread_mutex_t use; /* held by the thread whose call owns the team */
    pthread_mutex_t mu;  /* guards the fields below */
    pthread_cond_t go, gone;
    int size;            /* workers started: ids 1..size */
    uint64_t gen;        /* calls so far; a worker joins each new one at most once */
    uint64_t born[TEAM_MAX];
    int open, want, active;
    team_fn fn;
    void* arg;
} team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, {0}, 0, 0, 0, 0, 0};
static pthread_once_t team_once = PTHREAD_ONCE_INIT;

static void team_after_fork(void) {
    pthread_mutex_init(&team.use, 0);
    pthread_mutex_init(&team.mu, 0);
    pthread_cond_init(&team.go, 0);
    pthread_cond_init(&team.gone, 0);
    team.size = 0, team.open = 0, team.active = 0;
}
static void team_init(void) { pthread_atfork(0, 0, team_after_fork); }

static void* team_worker(void* p) {
    int id = (int)(intptr_t)p;
    pthread_mutex_lock(&team.mu);
    uint64_t seen = team.born[id];
    for (;;) {
        while (team.gen == seen) pthread_cond_wait(&team.go, &team.mu);
        seen = team.gen;
        if (!team.open || id >= team.want) continue;
        team.active++;
        team_fn fn = team.fn;
        void* arg = team.arg;
        pthread_mutex_unlock(&team.mu);
        fn(arg, id);
        pthread_mutex_lock(&team.mu);
        if (--team.active == 0) pthread_cond_signal(&team.gone);
    }
    return 0;
}

static void team_run(int nt, team_fn fn, void* arg) {
    if (nt > TEAM_MAX) nt = TEAM_MAX;
    pthread_once(&team_once, team_init);
    if (nt <= 1 || pthread_mutex_trylock(&team.use) != 0) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&team.mu);
    while (team.size < nt - 1) {
        int id = team.size + 1;
        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        team.born[id] = team.gen;
        int failed = pthread_create(&tid, &attr, team_worker, (void*)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (failed) break;
        team.size = id;
    }
    team.fn = fn, team.arg = arg, team.want = nt, team.open = 1, team.gen++;
    pthread_cond_broadcast(&team.go);
    pthread_mutex_unlock(&team.mu);
    fn(arg, 0);
    pthread_mutex_lock(&team.mu);
    team.open = 0;
    while (team.active > 0) pthread_cond_wait(&team.gone, &team.mu);
    pthread_mutex_unlock(&team.mu);
    pthread_mutex_unlock(&team.use);
}

/* ---- gates: late joiners of a team call ----
   A gate (int32 gate[2]: open flag, count of the threads that joined at it) holds the team
   threads of a call with ids from its first on until the caller's other thread opens it
   (mfsym_gate_open), or until the call has handed out all its work (gate_release on the
   call's `finished` flag).  Used by mfsym_steps_gated and mfsym_deep_steps_gated; one
   mutex and condition serve every gate. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;

/* Open a gate: the threads waiting at it join the work they wait for. */
void mfsym_gate_open(int32_t* gate) {
    pthread_mutex_lock(&gate_mu);
    __atomic_store_n(gate, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

/* Wait (asleep) until the gate opens or the call has no work left to hand out
   (*finished); 1 when this thread should join the work (then counted in gate[1]). */
static inline int gate_wait(int32_t* gate, const int* finished) {
    pthread_mutex_lock(&gate_mu);
    while (!__atomic_load_n(gate, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(finished, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&gate_cv, &gate_mu);
    int join = !__atomic_load_n(finished, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&gate_mu);
    if (join) __atomic_fetch_add(&gate[1], 1, __ATOMIC_SEQ_CST);
    return join;
}

/* The call's work is all handed out: release the threads still waiting at its gate. */
static inline void gate_release(int* finished) {
    pthread_mutex_lock(&gate_mu);
    __atomic_store_n(finished, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

/* Items w = 0..W-1 of fn on up to nt threads (this one included), each claimed from a
   shared counter. */
typedef void (*item_fn)(void* ctx, int64_t w);
typedef struct {
    item_fn fn;
    void* ctx;
    int64_t W, next;
} item_job;

static void item_worker(void* arg, int id) {
    item_job* job = (item_job*)arg;
    (void)id;
    for (;;) {
        int64_t w = __atomic_fetch_add(&job->next, 1, __ATOMIC_SEQ_CST);
        if (w >= job->W) return;
        job->fn(job->ctx, w);
    }
}

static void parallel_items(int nt, int64_t W, item_fn fn, void* ctx) {
    item_job job = {fn, ctx, W, 0};
    team_run(nt < W ? nt : (int)W, item_worker, &job);
}

/* The arguments of mfsym_output, mfsym_force and mfsym_step, whose items are (run,
   chunk) pairs. */
typedef struct {
    int64_t N, S, nch;
    const real *theta, *x, *cot, *xi, *proj, *noise_proj;
    const int8_t *proj_on, *noise_on;
    const int64_t* xi_row;
    int64_t xi_stride;
    real lr, wd, sigma;
    real *out, *force;
    double* part;
} chunk_args;

static void item_span(const chunk_args* a, int64_t w, int64_t* r, int64_t* n0, int64_t* cn) {
    *r = w / a->nch;
    *n0 = (w % a->nch) * CH;
    *cn = a->N - *n0 < CH ? a->N - *n0 : CH;
}

/* The pull-back of item w into g (the model particles projected when project is set);
   its run, first particle and size into r, n0, cn. */
static void item_force(const chunk_args* a, int64_t w, int project, real g[D][CH], int64_t* r,
                       int64_t* n0, int64_t* cn) {
    item_span(a, w, r, n0, cn);
    real tz[D][CH] __attribute__((aligned(64)));
    const real* P = project ? a->proj + *r * D * D : 0;
    load_chunk(a->theta + (*r * a->N + *n0) * D, *cn, P, project && a->proj_on[*r], tz);
    force_chunk(tz, *cn, a->x + *r * a->S * DX, a->cot + *r * a->S * DY, a->S, 0, g);
}

static void force_item(void* ctx, int64_t w) {
    const chunk_args* a = (const chunk_args*)ctx;
    int64_t r, n0, cn;
    real g[D][CH] __attribute__((aligned(64)));
    item_force(a, w, 0, g, &r, &n0, &cn);
    real* f = a->force + (r * a->N + n0) * D;
    for (int64_t n = 0; n < cn; n++)
        for (int d = 0; d < D; d++) f[n * D + d] = g[d][n];
}

static void step_item(void* ctx, int64_t w) {
    const chunk_args* a = (const chunk_args*)ctx;
    int64_t r, n0, cn;
    real g[D][CH] __attribute__((aligned(64)));
    item_force(a, w, 1, g, &r, &n0, &cn);
    update_chunk(a->theta + (r * a->N + n0) * D, cn, g,
                 a->xi + a->xi_row[r] * a->xi_stride + n0 * D, a->proj + r * D * D,
                 a->proj_on[r], a->noise_proj + r * D * D, a->noise_on[r], a->lr, a->wd,
                 a->sigma, a->out + (r * a->N + n0) * D);
}

static int item_threads(int64_t R, int64_t N, int64_t S, int nt) {
    return use_threads(R, N, S) ? nt : 1;
}

static void output_item(void* ctx, int64_t w);

/* Φ_N of every run: out[r, s, :] = (1/N) Σ_n σ*(x_{r,s}, z_{r,n}), sums per chunk in
   float64, added in chunk order (the step kernel's vector code). */
int mfsym_output(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                 const real* proj, const int8_t* proj_on, real* out, int nt) {
    int64_t nch = nchunks(N), W = R * nch;
    double* part = (double*)malloc((size_t)W * S * DY * sizeof(double));
    if (!part) return 1;
    chunk_args a = {.N = N, .S = S, .nch = nch, .theta = theta, .x = x, .proj = proj,
                    .proj_on = proj_on, .part = part};
    parallel_items(item_threads(R, N, S, nt), W, output_item, &a);
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
    chunk_args a = {.N = N, .S = S, .nch = nchunks(N), .theta = theta, .x = x, .cot = cot,
                    .force = force};
    parallel_items(item_threads(R, N, S, nt), R * a.nch, force_item, &a);
    return 0;
}

/* θ_out = θ − lr·Π_d[F(Pθ) + wd·θ] + sigma·Π_n ξ for a given cotangent; run r reads ξ at
   xi + xi_row[r]·xi_stride; Π_d = P where proj_on[r], Π_n = Q where noise_on[r]. */
int mfsym_step(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
               const real* cot, const real* xi, const int64_t* xi_row, int64_t xi_stride,
               const real* proj, const int8_t* proj_on, const real* noise_proj,
               const int8_t* noise_on, double lr, double wd, double sigma, real* theta_out,
               int nt) {
    chunk_args a = {.N = N, .S = S, .nch = nchunks(N), .theta = theta, .x = x, .cot = cot,
                    .xi = xi, .proj = proj, .noise_proj = noise_proj, .proj_on = proj_on,
                    .noise_on = noise_on, .xi_row = xi_row, .xi_stride = xi_stride,
                    .lr = (real)lr, .wd = (real)wd, .sigma = (real)sigma, .out = theta_out};
    parallel_items(item_threads(R, N, S, nt), R * a.nch, step_item, &a);
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
   when off (T (S, DY), L (m·DY, m·DY)); returns the loss Σ_s ‖e_s‖² / S (for FA,
   Σ_b ‖Φ̂(x_b) − y_b‖² / B as g is orthogonal). */
static double cotangent_of(int64_t S, int64_t m, const real* T, const real* L, int on, real c0,
                           const real* o, real* cot) {
    int64_t B = S / m, md = m * DY;
    double loss = 0;
    for (int64_t s = 0; s < S; s++) {
        int64_t gi = s / B, b = s % B;
        for (int k = 0; k < DY; k++) {
            real v = o[s * DY + k];
            if (on) {
                v = 0;
                for (int64_t g2 = 0; g2 < m; g2++)
                    for (int k2 = 0; k2 < DY; k2++)
                        v += L[(gi * DY + k) * md + g2 * DY + k2] * o[(g2 * B + b) * DY + k2];
            }
            real e = v - T[s * DY + k];
            loss += (double)e * (double)e;
            cot[s * DY + k] = c0 * e;
        }
    }
    return loss / (double)S;
}

static double cotangent(const fused_args* a, int64_t r, const real* o, real* cot) {
    int64_t md = a->m * DY;
    return cotangent_of(a->S, a->m, a->targets + r * a->S * DY, a->cot_l + r * md * md,
                        a->cot_on[r], a->c0, o, cot);
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

/* ======================================================================================
   The step kernel (mfsym_steps): explicit vectors across particles, K steps per call,
   its own threads that wait passively.

   Vectors.  A vector holds VL consecutive particles of one feature row of a chunk (GNU C
   vector extensions, VBYTES bytes: 64 with AVX-512, 32 with AVX, else 16), so the
   activation, its derivative and the pull-back of VL particles are one instruction
   each; the pull-back keeps the D force rows of VL particles in registers across all S
   samples.  The exponential is m_exp's formula with 2ⁿ and n taken from one rounding by
   the shifter 1.5·2^23 (float) / 1.5·2^52 (double) instead of floor.

   Threads.  Work items are (run, chunk) pairs of one phase or whole runs.  A phase's item
   is step k − 1's part B (force and update) of the chunk, then step k's part A (its
   outputs), so one phase boundary separates two steps.  Threads claim items one at a time
   (whole runs from a shared counter; (run, chunk) items from a range of their own first,
   the same in every phase, then from the others' leftovers: see claim_next), so a thread
   the system deschedules holds up at most the item it has, and nothing waits for it to
   arrive anywhere.  The thread that completes a phase's last item does the serial part
   (per-run sums over chunks in chunk order, cotangent, loss) and opens the next phase.
   A thread with nothing to claim spins briefly, then sleeps on a condition
   variable.  Each run's numbers do not depend on which thread did what, nor on how many
   threads or runs there are. */
#ifndef MFSYM_VBYTES
#if defined(__AVX512F__)
#define MFSYM_VBYTES 64
#elif defined(__AVX__)
#define MFSYM_VBYTES 32
#else
#define MFSYM_VBYTES 16
#endif
#endif
#define VL (MFSYM_VBYTES / (int)sizeof(real))
#if CH % (MFSYM_VBYTES / 4) != 0
#error "CH must be a multiple of the vector length"
#endif
typedef real vreal __attribute__((vector_size(MFSYM_VBYTES)));
typedef ibits vbits __attribute__((vector_size(MFSYM_VBYTES)));

#if MFSYM_DOUBLE
#define SHIFTER 6755399441055744.0
#define SHIFTER_BITS 0x4338000000000000LL
#else
#define SHIFTER 12582912.0f
#define SHIFTER_BITS 0x4B400000
#endif

static inline vreal vset(real a) { return (vreal){0} + a; }
static inline vreal vload(const real* p) {
    vreal v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore(real* p, vreal v) { memcpy(p, &v, sizeof v); }
/* lanes of a where m is all ones, else of b */
static inline vreal vsel(vbits m, vreal a, vreal b) {
    return (vreal)((m & (vbits)a) | (~m & (vbits)b));
}

/* exp(v) lane-wise for v clamped to [-LIM, LIM] (NaN stays NaN): t = v log2e + SHIFTER
   rounds n = t − SHIFTER to the nearest integer, r = v − n ln2 (two parts), e^r by the
   Taylor polynomial, 2ⁿ from the low bits of t. */
static inline vreal v_exp(vreal v) {
    v = vsel(v < (real)-EXP_LIM, vset((real)-EXP_LIM), v);
    v = vsel(v > (real)EXP_LIM, vset((real)EXP_LIM), v);
    vreal t = v * (real)LOG2E + (real)SHIFTER;
    vreal n = t - (real)SHIFTER;
    vreal r = (v - n * (real)LN2_HI) - n * (real)LN2_LO;
    vreal p = vset((real)TAYLOR_C0);
    TAYLOR_REST(p, r);
    vbits e = ((vbits)t - (ibits)SHIFTER_BITS + EXP_BIAS) << EXP_MANT;
    return p * (vreal)e;
}

#if MFSYM_ACT == 1
#define VACT(h) ((real)1 / ((real)1 + v_exp(-(h))))
#define VDACT(h, a) ((a) * ((real)1 - (a)))
#elif MFSYM_ACT == 2
#define VACT(h) ((real)1 - (real)2 / ((real)1 + v_exp((real)2 * (h))))
#define VDACT(h, a) ((real)1 - (a) * (a))
#elif MFSYM_ACT == 3
#define VACT(h) vsel((h) < (real)0, vset(0), (h))
#define VDACT(h, a) ((void)(a), vsel((h) > (real)0, vset(1), vset(0)))
#elif MFSYM_ACT == 4
#define VACT(h) vsel((h) < (real)0, (real)SLOPE * (h), (h))
#define VDACT(h, a) ((void)(a), vsel((h) > (real)0, vset(1), vset((real)SLOPE)))
#else
#define VACT(h) (h)
#define VDACT(h, a) ((void)(h), (void)(a), vset(1))
#endif

/* The step kernel: every unit (the matrix, uv and mlp units). */
/* Σ of a vector's lanes in float64, pairwise. */
static inline double vsum(vreal v) {
    double t[VL];
    for (int j = 0; j < VL; j++) t[j] = (double)v[j];
    for (int w = VL / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) t[j] += t[j + w];
    return t[0];
}

/* Outputs of a chunk (tz feature-major, lanes cn..CH-1 zero): part[s, k] = Σ_n σ*(x_s,
   z_n)_k over the chunk, and, when store is set, the pull-back data st[s][q][n] (as
   output_chunk). */
static inline void v_output_store(real tz[D][CH], int64_t cn, const real* xr, int64_t S,
                                  double* part, real* st, const int store) {
    int64_t nb = (cn + VL - 1) / VL;
    real mask[CH] __attribute__((aligned(64)));
    for (int64_t n = 0; n < CH; n++) mask[n] = n < cn ? (real)1 : (real)0;
    for (int64_t s = 0; s < S; s++) {
        const real* xs = xr + s * DX;
        real* sts = store ? st + s * NQ * CH : 0;
        vreal acc[DY];
        for (int k = 0; k < DY; k++) acc[k] = vset(0);
        for (int64_t b = 0; b < nb; b++) {
            int64_t n = b * VL;
            vreal mk = vload(mask + n);
#if MFSYM_UNIT == 1
            for (int k = 0; k < DY; k++) {
                vreal h = vload(&tz[k * DX][n]) * xs[0];
                for (int l = 1; l < DX; l++) h += vload(&tz[k * DX + l][n]) * xs[l];
                vreal a = VACT(h);
                if (store) vstore(sts + k * CH + n, VDACT(h, a));
                acc[k] += a * mk;
            }
#elif MFSYM_UNIT == 3
            for (int j = 0; j < H; j++) {
                vreal pre = vload(&tz[j * DX][n]) * xs[0];
                for (int l = 1; l < DX; l++) pre += vload(&tz[j * DX + l][n]) * xs[l];
                vreal a = VACT(pre);
                if (store) {
                    vstore(sts + j * CH + n, a);
                    vstore(sts + (H + j) * CH + n, VDACT(pre, a));
                }
                vreal am = a * mk;
                for (int k = 0; k < DY; k++) acc[k] += vload(&tz[W2_AT(k, j)][n]) * am;
            }
#else
            vreal h = vload(&tz[0][n]) * xs[0];
            for (int l = 1; l < DX; l++) h += vload(&tz[l][n]) * xs[l];
            h = h / (real)DX;
            vreal a = VACT(h);
            if (store) {
                vstore(sts + n, a);
                vstore(sts + CH + n, VDACT(h, a));
            }
            vreal am = a * mk;
            for (int k = 0; k < DY; k++) acc[k] += vload(&tz[DX + k][n]) * am;
#endif
        }
        for (int k = 0; k < DY; k++) part[s * DY + k] = vsum(acc[k]);
    }
}

/* v_output_store with the pull-back data: the step kernel's phase A. */
static void v_output_chunk(real tz[D][CH], int64_t cn, const real* xr, int64_t S,
                           double* part, real* st) {
    v_output_store(tz, cn, xr, S, part, st, 1);
}

/* Pull-back of a chunk from st: g[d][n] = Σ_s (J_n(x_s)ᵀ c_s)_d, the D rows of VL
   particles in registers over the samples. */
static void v_force_chunk(real tz[D][CH], int64_t cn, const real* xr, const real* cr,
                          int64_t S, const real* st, real g[D][CH]) {
    int64_t nb = (cn + VL - 1) / VL;
    (void)tz;
    for (int64_t b = 0; b < nb; b++) {
        int64_t n = b * VL;
        vreal gv[D];
        for (int d = 0; d < D; d++) gv[d] = vset(0);
#if MFSYM_UNIT == 2
        vreal vv[DY];
        for (int k = 0; k < DY; k++) vv[k] = vload(&tz[DX + k][n]);
#elif MFSYM_UNIT == 3
        vreal w2[DY * H];
        for (int i = 0; i < DY * H; i++) w2[i] = vload(&tz[H * DX + i][n]);
#endif
        for (int64_t s = 0; s < S; s++) {
            const real* xs = xr + s * DX;
            const real* cs = cr + s * DY;
            const real* sts = st + s * NQ * CH;
#if MFSYM_UNIT == 1
            for (int k = 0; k < DY; k++) {
                vreal w = vload(sts + k * CH + n) * cs[k];
                for (int l = 0; l < DX; l++) gv[k * DX + l] += w * xs[l];
            }
#elif MFSYM_UNIT == 3
            /* mlp_terms: g_W2[k, j] += a_j c_k, g_W1[j, l] += w_j x_l,
               w_j = act'(pre_j) Σ_k W2[k, j] c_k */
            for (int j = 0; j < H; j++) {
                vreal a = vload(sts + j * CH + n), dd = vload(sts + (H + j) * CH + n);
                vreal wc = w2[j] * cs[0];
                for (int k = 1; k < DY; k++) wc += w2[k * H + j] * cs[k];
                vreal w = dd * wc;
                for (int k = 0; k < DY; k++) gv[W2_AT(k, j)] += a * cs[k];
                for (int l = 0; l < DX; l++) gv[j * DX + l] += w * xs[l];
            }
#else
            vreal a = vload(sts + n), dd = vload(sts + CH + n);
            vreal vc = vv[0] * cs[0];
            for (int k = 1; k < DY; k++) vc += vv[k] * cs[k];
            vreal w = dd * vc;
            for (int k = 0; k < DY; k++) gv[DX + k] += a * cs[k];
            for (int l = 0; l < DX; l++) gv[l] += w * xs[l];
#endif
        }
#if MFSYM_UNIT == 2
        for (int l = 0; l < DX; l++) gv[l] = gv[l] / (real)DX;
#endif
        for (int d = 0; d < D; d++) vstore(&g[d][n], gv[d]);
    }
}

/* Rows (particle-major, n·D + d) of cn particles to feature-major lanes, lanes cn..CH-1
   zero; and back. */
static void to_features(const real* rows, int64_t cn, real t[D][CH]) {
    for (int64_t n = 0; n < cn; n++)
        for (int d = 0; d < D; d++) t[d][n] = rows[n * D + d];
    for (int d = 0; d < D; d++)
        for (int64_t n = cn; n < CH; n++) t[d][n] = 0;
}

static void to_rows(real t[D][CH], int64_t cn, real* rows) {
    for (int64_t n = 0; n < cn; n++)
        for (int d = 0; d < D; d++) rows[n * D + d] = t[d][n];
}

/* v ← v·M for the D feature rows of VL particles (row vectors times M, M (D, D)
   row-major): (v M)_d = Σ_e v_e M[e, d]. */
static inline void v_times(vreal v[D], const real* M) {
    vreal w[D];
    for (int d = 0; d < D; d++) {
        w[d] = v[0] * M[d];
        for (int e = 1; e < D; e++) w[d] += v[e] * M[e * D + d];
    }
    for (int d = 0; d < D; d++) v[d] = w[d];
}

/* As load_chunk, vectorised: tz = the chunk's particles feature-major, times Pᵀ when on
   (tz_d = Σ_e θ_e P[d, e]). */
static void v_load_chunk(const real* th, int64_t cn, const real* P, int on, real tz[D][CH]) {
    to_features(th, cn, tz);
    if (!on) return;
    real Pt[D * D];
    for (int d = 0; d < D; d++)
        for (int e = 0; e < D; e++) Pt[e * D + d] = P[d * D + e];
    for (int64_t n = 0; n < CH; n += VL) {
        vreal v[D];
        for (int d = 0; d < D; d++) v[d] = vload(&tz[d][n]);
        v_times(v, Pt);
        for (int d = 0; d < D; d++) vstore(&tz[d][n], v[d]);
    }
}

/* As update_chunk, vectorised: θ_out = θ − lr·Π_d[g + wd·θ] + sigma·Π_n ξ with Π_d = P
   where pon, Π_n = Q where qon (row vectors times the matrix). */
static void v_update_chunk(const real* th, int64_t cn, real g[D][CH], const real* xv,
                           const real* P, int pon, const real* Q, int qon, real lr, real wd,
                           real sg, real* to) {
    real tt[D][CH] __attribute__((aligned(64)));
    real nt[D][CH] __attribute__((aligned(64)));
    to_features(th, cn, tt);
    to_features(xv, cn, nt);
    for (int64_t n = 0; n < cn; n += VL) {
        vreal dr[D], nz[D];
        for (int d = 0; d < D; d++) {
            dr[d] = vload(&g[d][n]) + wd * vload(&tt[d][n]);
            nz[d] = vload(&nt[d][n]);
        }
        if (pon) v_times(dr, P);
        if (qon) v_times(nz, Q);
        for (int d = 0; d < D; d++) vstore(&tt[d][n], (vload(&tt[d][n]) - lr * dr[d]) + sg * nz[d]);
    }
    to_rows(tt, cn, to);
}

typedef struct {
    int64_t R, N, S, m, K, nch, wr, wdb;
    const real *theta, *x, *targets, *cot_l, *xi, *proj, *noise_proj;
    const int8_t *cot_on, *proj_on, *noise_on;
    const int64_t* xi_row;
    int64_t x_step, t_step, xi_stride, xi_step, step0;
    real c0, lr, wd, sigma;
    real *out, *tmp, *work;
    double *loss_acc, *partw;
    int64_t* first_bad;
    int by_run;
    /* scheduling: runs claimed (ticket, by_run), items done, the open phase, sleeping
       threads; phased: claim[i], the last phase item i was claimed for, and the threads
       offered the work (nt), whose home ranges of items split the W items of a phase */
    int64_t ticket, done, phase;
    int64_t* claim;
    int sleepers, nt;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* late joiners: threads with id >= gate_from take work only once gate[0] != 0 (each
       that does adds 1 to gate[1]) */
    int32_t* gate;
    int gate_from, finished;
} steps_ctx;

/* The particles step k reads and writes: θ, then out and tmp alternately so that the
   last step writes out. */
static real* theta_dst(const steps_ctx* c, int64_t k) {
    return ((c->K - 1 - k) % 2 == 0) ? c->out : c->tmp;
}
static const real* theta_src(const steps_ctx* c, int64_t k) {
    return k == 0 ? c->theta : theta_dst(c, k - 1);
}

/* Phase A of step k for chunk ch of run r: outputs into part, pull-back data into st. */
static void phase_a(const steps_ctx* c, int64_t k, int64_t r, int64_t ch, real* st,
                    double* part) {
    int64_t N = c->N, S = c->S, n0 = ch * CH, cn = N - n0 < CH ? N - n0 : CH;
    real tz[D][CH] __attribute__((aligned(64)));
    v_load_chunk(theta_src(c, k) + (r * N + n0) * D, cn, c->proj + r * D * D, c->proj_on[r],
                 tz);
    v_output_chunk(tz, cn, c->x + k * c->x_step + r * S * DX, S, part, st);
}

/* Phase B of step k for chunk ch of run r: force from st and cot, then the update. */
static void phase_b(const steps_ctx* c, int64_t k, int64_t r, int64_t ch, const real* st,
                    const real* cot) {
    int64_t N = c->N, S = c->S, n0 = ch * CH, cn = N - n0 < CH ? N - n0 : CH;
    real tz[D][CH] __attribute__((aligned(64)));  /* read by the uv unit only */
    real g[D][CH] __attribute__((aligned(64)));
    const real* th = theta_src(c, k) + (r * N + n0) * D;
    const real* P = c->proj + r * D * D;
    if (MFSYM_UNIT != 1) v_load_chunk(th, cn, P, c->proj_on[r], tz);  /* v or W2 rows */
    v_force_chunk(tz, cn, c->x + k * c->x_step + r * S * DX, cot, S, st, g);
    v_update_chunk(th, cn, g, c->xi + c->xi_row[r] * c->xi_stride + k * c->xi_step + n0 * D, P,
                 c->proj_on[r], c->noise_proj + r * D * D, c->noise_on[r], c->lr, c->wd,
                 c->sigma, theta_dst(c, k) + (r * N + n0) * D);
}

/* The serial part of step k for run r: Φ_N = Σ_chunks part / N in chunk order, the
   cotangent and the loss. */
static void run_sums(const steps_ctx* c, int64_t k, int64_t r, const double* part, real* o,
                     real* cot) {
    int64_t S = c->S, nch = c->nch, md = c->m * DY;
    for (int64_t q = 0; q < S * DY; q++) {
        double t = 0;
        for (int64_t ch = 0; ch < nch; ch++) t += part[ch * S * DY + q];
        o[q] = (real)(t / (double)c->N);
    }
    double loss = cotangent_of(S, c->m, c->targets + k * c->t_step + r * S * DY,
                               c->cot_l + r * md * md, c->cot_on[r], c->c0, o, cot);
    c->loss_acc[r] += loss;
    if (!__builtin_isfinite(loss) && c->first_bad[r] < 0) c->first_bad[r] = c->step0 + k;
}

/* Workspace layout.  By run: per thread, st (nch·S·NQ·CH), o and cot (S·DY each) and part
   (nch·S·DY doubles).  By chunk: the same for every run, indexed by run. */
static void run_space(const steps_ctx* c, int64_t slot, real** st, real** o, real** cot,
                      double** part) {
    *st = c->work + slot * c->wr;
    *o = *st + c->nch * c->S * NQ * CH;
    *cot = *o + c->S * DY;
    *part = c->partw + slot * c->wdb;
}

/* Item (r, ch) of phase p ≤ K: step p − 1's part B (phase_b, p ≥ 1), then step p's part
   A (phase_a, p < K).  Part A of step p reads chunk ch's particles alone, which part B of
   step p − 1 wrote just before on this thread, so one wait per step separates the steps
   (the sums of run_sums) instead of two; the partial sums keep their chunks and order. */
static void phase_item(const steps_ctx* c, int64_t p, int64_t r, int64_t ch, real* st,
                      double* part, const real* cot) {
    if (p > 0) phase_b(c, p - 1, r, ch, st, cot);
    if (p < c->K) phase_a(c, p, r, ch, st, part);
}

static void whole_runs(steps_ctx* c, int id) {
    for (;;) {
        int64_t r = __atomic_fetch_add(&c->ticket, 1, __ATOMIC_SEQ_CST);
        if (r >= c->R) return;
        real *st, *o, *cot;
        double* part;
        run_space(c, id, &st, &o, &cot, &part);
        for (int64_t k = 0; k <= c->K; k++) {
            for (int64_t ch = 0; ch < c->nch; ch++)
                phase_item(c, k, r, ch, st + ch * c->S * NQ * CH, part + ch * c->S * DY, cot);
            if (k < c->K) run_sums(c, k, r, part, o, cot);
        }
    }
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Wait until the open phase is past p: spin, then yield, then sleep. */
static void wait_past(steps_ctx* c, int64_t p) {
    for (int i = 0; i < 4096; i++) {
        if (__atomic_load_n(&c->phase, __ATOMIC_SEQ_CST) > p) return;
        if (i % 512 == 511) sched_yield();
        else cpu_relax();
    }
    pthread_mutex_lock(&c->mu);
    __atomic_fetch_add(&c->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&c->phase, __ATOMIC_SEQ_CST) <= p) pthread_cond_wait(&c->cv, &c->mu);
    __atomic_fetch_sub(&c->sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&c->mu);
}

static void open_phase(steps_ctx* c, int64_t p) {
    __atomic_store_n(&c->phase, p, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
}

/* The next item of phase p that this thread claims, from position *at of its scan (-1:
   every item is claimed).  The scan starts at the thread's home range (the id-th of nt
   equal ranges of the W items) and wraps around, so on a quiet machine each thread takes
   the same chunks in every phase: the pull-back data part A stores for a chunk and the
   particles part B writes stay in that core's cache.  A thread that
   is descheduled or joins late leaves its home items to the others, who claim them
   after their own. */
static int64_t claim_next(steps_ctx* c, int id, int64_t p, int64_t W, int64_t* at) {
    int64_t home = (int64_t)id * W / c->nt;
    for (; *at < W; (*at)++) {
        int64_t i = (home + *at) % W;
        int64_t prev = __atomic_load_n(&c->claim[i], __ATOMIC_SEQ_CST);
        if (prev < p && __atomic_compare_exchange_n(&c->claim[i], &prev, p, 0,
                                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return i;
    }
    return -1;
}

/* Phases p = 0 … K (phase_item), each of W = R·nch items (run-major); the last item done
   of phase p < K takes the sums of step p for every run, then opens phase p + 1. */
static void phased(steps_ctx* c, int id) {
    int64_t W = c->R * c->nch, P = c->K + 1, seen = -1, at = 0;
    for (;;) {
        int64_t p = __atomic_load_n(&c->phase, __ATOMIC_SEQ_CST);
        if (p >= P) return;
        if (p != seen) seen = p, at = 0;
        int64_t i = claim_next(c, id, p, W, &at);
        if (i < 0) {
            wait_past(c, p);
            continue;
        }
        int64_t r = i / c->nch, ch = i % c->nch;
        real *st, *o, *cot;
        double* part;
        run_space(c, r, &st, &o, &cot, &part);
        phase_item(c, p, r, ch, st + ch * c->S * NQ * CH, part + ch * c->S * DY, cot);
        if (__atomic_add_fetch(&c->done, 1, __ATOMIC_SEQ_CST) == (p + 1) * W) {
            if (p < c->K)
                for (int64_t rr = 0; rr < c->R; rr++) {
                    run_space(c, rr, &st, &o, &cot, &part);
                    run_sums(c, p, rr, part, o, cot);
                }
            open_phase(c, p + 1);
        }
    }
}

static void steps_worker(void* arg, int id) {
    steps_ctx* c = (steps_ctx*)arg;
    if (c->gate && id >= c->gate_from && !gate_wait(c->gate, &c->finished)) return;
    if (c->by_run) whole_runs(c, id);
    else phased(c, id);
    if (c->gate && id == 0) gate_release(&c->finished);  /* nothing left to claim */
}

/* How mfsym_steps splits work among nt threads: whole runs when every thread gets as many
   (or R ≥ 4 nt), else (run, chunk) items; threads used (1 below 4096 updates per step). */
static int steps_by_run(int64_t R, int nt) { return nt > 1 && R >= nt && (R % nt == 0 || R >= 4 * nt); }
static int steps_threads(int64_t R, int64_t N, int64_t S, int nt) {
    int64_t items = steps_by_run(R, nt) ? R : R * nchunks(N);
    if (R * N * S < 4096 || nt < 1) return 1;
    return items < nt ? (int)items : nt;
}

/* Workspace of mfsym_steps with nt threads: reals and doubles. */
void mfsym_steps_sizes(int64_t R, int64_t N, int64_t S, int nt, int64_t* reals,
                       int64_t* doubles) {
    int64_t slots = steps_by_run(R, nt) ? steps_threads(R, N, S, nt) : R;
    *reals = slots * (nchunks(N) * S * NQ * CH + 2 * S * DY);
    *doubles = slots * nchunks(N) * S * DY;
}

/* mfsym_steps (below) with late joiners: with gate non-null (int32 gate[2]: open flag,
   count of the threads that joined), the team threads with ids from gate_from on (id 0 is
   the caller) sleep until mfsym_gate_open(gate) before they take work, and leave when the
   work is all handed out first.  A caller whose other thread
   is still busy (drawing the next chunk's numbers) thus gets every core as soon as it is
   free, without a third thread competing for two cores.  The numbers do not depend on
   it (see "Threads" above). */
int mfsym_steps_gated(int64_t R, int64_t N, int64_t S, int64_t m, int64_t K,
                      const real* theta, const real* x, int64_t x_step, const real* targets,
                      int64_t t_step, const real* cot_l, const int8_t* cot_on, double c0,
                      const real* xi, const int64_t* xi_row, int64_t xi_stride,
                      int64_t xi_step, const real* proj, const int8_t* proj_on,
                      const real* noise_proj, const int8_t* noise_on, double lr, double wd,
                      double sigma, real* theta_out, real* tmp, double* loss_acc,
                      int64_t* first_bad, int64_t step0, real* work, double* partw, int nt,
                      int32_t* gate, int gate_from) {
    if (K < 1 || R < 1) return 0;
    steps_ctx c;
    memset(&c, 0, sizeof c);
    c.R = R, c.N = N, c.S = S, c.m = m, c.K = K, c.nch = nchunks(N);
    c.wr = c.nch * S * NQ * CH + 2 * S * DY;
    c.wdb = c.nch * S * DY;
    c.theta = theta, c.x = x, c.targets = targets, c.cot_l = cot_l, c.xi = xi;
    c.proj = proj, c.noise_proj = noise_proj, c.cot_on = cot_on, c.proj_on = proj_on;
    c.noise_on = noise_on, c.xi_row = xi_row, c.x_step = x_step, c.t_step = t_step;
    c.xi_stride = xi_stride, c.xi_step = xi_step, c.step0 = step0;
    c.c0 = (real)c0, c.lr = (real)lr, c.wd = (real)wd, c.sigma = (real)sigma;
    c.out = theta_out, c.tmp = tmp, c.work = work, c.loss_acc = loss_acc, c.partw = partw;
    c.first_bad = first_bad;
    c.by_run = steps_by_run(R, nt);
    c.gate = gate, c.gate_from = gate_from < 1 ? 1 : gate_from;
    int want = steps_threads(R, N, S, nt);
    c.nt = want;
    if (!c.by_run) {
        c.claim = (int64_t*)malloc((size_t)(R * c.nch) * sizeof(int64_t));
        if (!c.claim) return -1;
        for (int64_t i = 0; i < R * c.nch; i++) c.claim[i] = -1;
    }
    pthread_mutex_init(&c.mu, 0);
    pthread_cond_init(&c.cv, 0);
    team_run(want, steps_worker, &c);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    free(c.claim);
    return want;
}

/* K whole steps of R runs: step k reads x (K, R, S, DX) at x + k·x_step, targets (K, R, S,
   DY) at targets + k·t_step and ξ of run r at xi + xi_row[r]·xi_stride + k·xi_step (N·D
   contiguous); the rest as mfsym_fused.  θ_out receives the particles after the K steps
   (tmp (R, N, D) is scratch); loss_acc gets each step's loss, first_bad the step index
   step0 + k of a run's first non-finite loss.  Returns the number of threads offered the
   work (this one and team workers; one that wakes after the work is gone takes none), or
   −1 when the claim flags of the (run, chunk) items cannot be allocated. */
int mfsym_steps(int64_t R, int64_t N, int64_t S, int64_t m, int64_t K, const real* theta,
                const real* x, int64_t x_step, const real* targets, int64_t t_step,
                const real* cot_l, const int8_t* cot_on, double c0, const real* xi,
                const int64_t* xi_row, int64_t xi_stride, int64_t xi_step, const real* proj,
                const int8_t* proj_on, const real* noise_proj, const int8_t* noise_on,
                double lr, double wd, double sigma, real* theta_out, real* tmp,
                double* loss_acc, int64_t* first_bad, int64_t step0, real* work,
                double* partw, int nt) {
    return mfsym_steps_gated(R, N, S, m, K, theta, x, x_step, targets, t_step, cot_l, cot_on,
                             c0, xi, xi_row, xi_stride, xi_step, proj, proj_on, noise_proj,
                             noise_on, lr, wd, sigma, theta_out, tmp, loss_acc, first_bad,
                             step0, work, partw, nt, 0, 0);
}

/* The outputs alone of a chunk, nothing stored (mfsym_output, and the ResNet's
   output-only forward): the step kernel's vector code. */
#define ONLY_LOAD v_load_chunk
#define ONLY_OUTPUT(tz, cn, x, S, part) v_output_store(tz, cn, x, S, part, 0, 0)

/* An item (run, chunk) of mfsym_output. */
static void output_item(void* ctx, int64_t w) {
    const chunk_args* a = (const chunk_args*)ctx;
    int64_t r, n0, cn, N = a->N, S = a->S;
    item_span(a, w, &r, &n0, &cn);
    real tz[D][CH] __attribute__((aligned(64)));
    ONLY_LOAD(a->theta + (r * N + n0) * D, cn, a->proj + r * D * D, a->proj_on[r], tz);
    ONLY_OUTPUT(tz, cn, a->x + r * S * DX, S, a->part + w * S * DY);
}

/* ---- the machine's floor for these kernels ----
   ns per lane, in the thread's CPU time, of: a vector FMA at full throughput (8
   independent chains), the exponential v_exp, and the reciprocal 1/(1 + v) (the sigmoid's
   division), each over `reps` passes of register- or L1-resident data.  ns[0..2]. */
static double thread_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

/* An empty asm that reads v from a register, so the chains cannot be folded away. */
#if defined(__x86_64__) || defined(__i386__)
#define KEEP_IN_REGISTER(v) __asm__ __volatile__("" : : "v"(v))
#elif defined(__aarch64__)
#define KEEP_IN_REGISTER(v) __asm__ __volatile__("" : : "w"(v))
#else
#define KEEP_IN_REGISTER(v) __asm__ __volatile__("" : : "g"(&(v)) : "memory")
#endif

static void floor_one(int64_t reps, double* ns) {
    enum { CHAINS = 12, LEN = 1024 };
    real buf[LEN] __attribute__((aligned(64)));
    for (int i = 0; i < LEN; i++) buf[i] = (real)(-8.0 + 16.0 * i / LEN);
    volatile real sink = 0;
    vreal acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = vset((real)i);
    vreal a = vset((real)0.999), b = vset((real)1e-3);
    int64_t iters = reps * 128;
    double t0 = thread_ns();
    for (int64_t it = 0; it < iters; it++) {
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * a + b;
        KEEP_IN_REGISTER(acc[0]);
    }
    double t1 = thread_ns();
    for (int i = 0; i < CHAINS; i++) sink += acc[i][0];
    ns[0] = (t1 - t0) / ((double)iters * CHAINS * VL);
    vreal e = vset(0);
    t0 = thread_ns();
    for (int64_t it = 0; it < reps; it++)
        for (int i = 0; i < LEN; i += VL) e += v_exp(vload(buf + i));
    t1 = thread_ns();
    sink += e[0];
    ns[1] = (t1 - t0) / ((double)reps * LEN);
    e = vset(0);
    t0 = thread_ns();
    for (int64_t it = 0; it < reps; it++)
        for (int i = 0; i < LEN; i += VL) e += (real)1 / ((real)1 + vload(buf + i) * vload(buf + i));
    t1 = thread_ns();
    sink += e[0];
    ns[2] = (t1 - t0) / ((double)reps * LEN);
    (void)sink;
}

typedef struct {
    int64_t reps;
    double ns[3];
} floor_arg;

static void* floor_worker(void* arg) {
    floor_arg* f = (floor_arg*)arg;
    floor_one(f->reps, f->ns);
    return 0;
}

/* The floor measured on nt threads at once (each thread's own CPU time, averaged over
   the threads), so that cores sharing execution units or caches show it: ns[0..2]. */
void mfsym_floor(int64_t reps, int nt, double* ns) {
    floor_arg args[64];
    pthread_t tid[64];
    int started = 0;
    if (nt < 1) nt = 1;
    if (nt > 64) nt = 64;
    for (int i = 0; i < nt; i++) args[i].reps = reps;
    for (int i = 1; i < nt; i++) {
        if (pthread_create(&tid[i], 0, floor_worker, &args[i]) != 0) break;
        started = i;
    }
    floor_worker(&args[0]);
    for (int i = 1; i <= started; i++) pthread_join(tid[i], 0);
    for (int k = 0; k < 3; k++) {
        ns[k] = 0;
        for (int i = 0; i <= started; i++) ns[k] += args[i].ns[k] / (started + 1);
    }
}

/* The compiled variant, for checking a loaded library: v[0..9] = {ABI version, bytes per
   real, unit, activation, DX, DY, D, CH, OpenMP on, lanes per vector}, *slope = SLOPE. */
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
    v[9] = VL;
    *slope = (double)SLOPE;
}
