/* Fused CPU kernels of the mean-ODE ResNet (PAPER.md §10), see mfsym/engine/native.py.

   Built with the macros of the one-layer kernels (mfsym_kernel.c, included below: its unit
   of MFSYM_UNIT is the ResNet's layer unit, matrix or mlp, with MFSYM_DX = MFSYM_DY = d)
   and the depth

     MFSYM_DEPTH   L, the number of residual layers

   Particles θ (R, N, D) with N = L·M are layer-major (particle (l, i) at row l·M + i),
   inputs x (R, S, d), and the model is (layers counted from 0: layer l maps h_l to h_{l+1})

     h_0 = x,   h_{l+1} = h_l + (1/(L·M)) Σ_i σ*(h_l, z_{l,i}),   Φ(x) = h_L.

   A step (mfsym_deep_fused) runs forward through the layers keeping each layer's input
   h_l (S×d) and the unit's activation data per sample and particle, forms the cotangent
   c = c0 (L o − T) of the scheme as mfsym_fused does, then goes back through the layers:
   with δ_L = c, layer l's particles get the force F_{l,i} = Σ_s J_z σ*(h_{l,s}, z_{l,i})ᵀ δ_{l+1,s}
   and are updated at once (θ ← θ − lr·Π_d[F + wd·θ] + σ·Π_n ξ), and the cotangent moves
   down, δ_l = δ_{l+1} + (1/(L·M)) Σ_i J_x σ*(h_l, z_{l,i})ᵀ δ_{l+1}.  All sums over
   particles are per chunk (float64 per chunk, added in chunk order), so the numbers do
   not depend on the number of threads or on the other runs of the call. */

#include "mfsym_kernel.c"

#ifndef MFSYM_DEPTH
#error "define MFSYM_DEPTH (the ResNet's number of layers)"
#endif
#if MFSYM_DEPTH < 1 || MFSYM_DX != MFSYM_DY
#error "the ResNet needs MFSYM_DEPTH ≥ 1 and MFSYM_DX == MFSYM_DY"
#endif
#if MFSYM_UNIT == 2
#error "the ResNet kernels have the matrix (1) and mlp (3) units"
#endif

#define LAYERS MFSYM_DEPTH
#define MFSYM_DEEP_ABI 2

/* The chunk phases of a layer: the matrix unit has the step kernel's vector code
   (v_load_chunk, v_output_chunk, v_update_chunk and v_back_chunk below: VL particles per
   instruction, the force rows in registers over the samples), the mlp unit the 8-lane
   code of mfsym_fused, its output-only forward included. */
#if MFSYM_UNIT == 1
#define LOAD_CHUNK v_load_chunk
#define OUTPUT_CHUNK v_output_chunk
#define UPDATE_CHUNK v_update_chunk
#define BACK_CHUNK v_back_chunk
#define FORWARD_ONLY ONLY_OUTPUT
#else
#define LOAD_CHUNK load_chunk
#define OUTPUT_CHUNK output_chunk
#define UPDATE_CHUNK update_chunk
#define BACK_CHUNK back_chunk
#define FORWARD_ONLY(tz, cn, x, S, part) output_chunk(tz, cn, x, S, part, 0)
#endif

#if MFSYM_UNIT == 3
/* Lanes n..n+7 of one sample, mlp unit: the force (mlp_terms) and, with vjp, the input
   cotangent acc[l][i] += Σ_j w_j W1[j, l], w_j = act'(pre_j) (Σ_k W2[k, j] δ_k). */
static inline void back_block(real tz[D][CH], int64_t n, const real (*st)[CH],
                              const real* hs, const real* ds, real g[D][CH], real acc[DX][8],
                              int vjp) {
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < H; j++) {
            real w = mlp_terms(tz, n + i, j, st[j][n + i], st[H + j][n + i], hs, ds, g);
            if (vjp)
                for (int l = 0; l < DX; l++) acc[l][i] += w * tz[j * DX + l][n + i];
        }
}

/* One pass over the chunk's samples and particles (lanes beyond cn hold z = 0): the force
   g[d][n] = Σ_s (J_z σ*(h_s, z_n)ᵀ δ_s)_d and, when part is given, the input cotangent's
   partial sums part[s, l] = Σ_n (J_x σ*(h_s, z_n)ᵀ δ_s)_l. */
static void back_chunk(real tz[D][CH], int64_t cn, const real* hr, const real* dr, int64_t S,
                       const real* st, real g[D][CH], double* part) {
    int64_t c8 = (cn + 7) / 8 * 8;
    for (int d = 0; d < D; d++)
        for (int64_t n = 0; n < c8; n++) g[d][n] = 0;
    for (int64_t s = 0; s < S; s++) {
        real hs[DX], ds[DY], acc[DX][8];
        for (int l = 0; l < DX; l++) hs[l] = hr[s * DX + l];
        for (int k = 0; k < DY; k++) ds[k] = dr[s * DY + k];
        for (int l = 0; l < DX; l++)
            for (int i = 0; i < 8; i++) acc[l][i] = 0;
        const real (*sts)[CH] = (const real (*)[CH])(st + s * NQ * CH);
        if (part) {
            for (int64_t n = 0; n < c8; n += 8) back_block(tz, n, sts, hs, ds, g, acc, 1);
            for (int l = 0; l < DX; l++) part[s * DX + l] = lane_sum(acc[l]);
        } else {
            for (int64_t n = 0; n < c8; n += 8) back_block(tz, n, sts, hs, ds, g, acc, 0);
        }
    }
}

#else
/* Samples per tile of v_back_chunk's input-cotangent sums (TS·DX vectors on the stack). */
#define TS 32

/* back_chunk with vectors (matrix unit): for each block of VL particles, its D force rows
   stay in registers over the samples, g[k·DX + l] += w_k h_l with w_k = act'(pre_k) δ_k
   (st[s][k][n]), in sample order as back_chunk; with part, the input cotangent's partial
   sums part[s, l] = Σ_n Σ_k w_k z_n[k, l] are summed lane-wise over the blocks in block
   order, then over the VL lanes pairwise in float64 (vsum).  Lanes cn..CH-1 hold z = 0
   and add nothing.  Samples go in tiles of TS so the lane sums fit on the stack; the tiling
   changes no sum's order. */
static inline void back_tile(real tz[D][CH], int64_t nb, const real* hr, const real* dr,
                             int64_t s0, int64_t s1, const real* st, real g[D][CH],
                             real acc[TS][DX][VL], const int vjp) {
    for (int64_t b = 0; b < nb; b++) {
        int64_t n = b * VL;
        vreal gv[D], zv[D];
        for (int d = 0; d < D; d++) {
            gv[d] = vload(&g[d][n]);
            zv[d] = vload(&tz[d][n]);
        }
        for (int64_t s = s0; s < s1; s++) {
            const real* hs = hr + s * DX;
            const real* ds = dr + s * DY;
            const real* sts = st + s * NQ * CH;
            vreal w[DY];
            for (int k = 0; k < DY; k++) w[k] = vload(sts + k * CH + n) * ds[k];
            for (int k = 0; k < DY; k++)
                for (int l = 0; l < DX; l++) gv[k * DX + l] += w[k] * hs[l];
            if (vjp)
                for (int l = 0; l < DX; l++) {
                    vreal a = vload(acc[s - s0][l]);
                    for (int k = 0; k < DY; k++) a += w[k] * zv[k * DX + l];
                    vstore(acc[s - s0][l], a);
                }
        }
        for (int d = 0; d < D; d++) vstore(&g[d][n], gv[d]);
    }
}

static void v_back_chunk(real tz[D][CH], int64_t cn, const real* hr, const real* dr,
                         int64_t S, const real* st, real g[D][CH], double* part) {
    int64_t nb = (cn + VL - 1) / VL;
    real acc[TS][DX][VL] __attribute__((aligned(64)));
    for (int d = 0; d < D; d++)
        for (int64_t n = 0; n < nb * VL; n++) g[d][n] = 0;
    for (int64_t s0 = 0; s0 < S; s0 += TS) {
        int64_t s1 = s0 + TS < S ? s0 + TS : S;
        if (!part) {
            back_tile(tz, nb, hr, dr, s0, s1, st, g, acc, 0);
            continue;
        }
        memset(acc, 0, sizeof acc);
        back_tile(tz, nb, hr, dr, s0, s1, st, g, acc, 1);
        for (int64_t s = s0; s < s1; s++)
            for (int l = 0; l < DX; l++) part[s * DX + l] = vsum(vload(acc[s - s0][l]));
    }
}
#endif

/* v[q] += (Σ_c part[c·len + q]) / div for q < len: the chunks' partial sums in chunk order. */
static void add_chunk_sums(real* v, const double* part, int64_t nch, int64_t len, double div) {
    for (int64_t q = 0; q < len; q++) {
        double t = 0;
        for (int64_t c = 0; c < nch; c++) t += part[c * len + q];
        v[q] += (real)(t / div);
    }
}

/* Workspace of one worker: reals (each layer's input h_l, the stored activation data of
   every layer, the cotangent δ) and doubles (per-chunk partial sums of one layer). */
void mfsym_deep_sizes(int64_t N, int64_t S, int64_t* reals, int64_t* doubles) {
    int64_t nch = nchunks(N / LAYERS);
    *reals = (LAYERS + 1) * S * DX + LAYERS * nch * S * NQ * CH + S * DY;
    *doubles = nch * S * DX;
}

/* Forward through the layers of run r: hs[l] (S×DX) for l = 0..L, with st (when given)
   the activation data of layer l's chunk c at st + (l·nch + c)·S·NQ·CH.  A training step
   (st given) runs the unit's chunk code (OUTPUT_CHUNK); the output-only forward, which
   keeps nothing, the same code without its stores (ONLY_OUTPUT). */
static void deep_forward(const real* theta, const real* x, const real* P, int pon, int64_t N,
                         int64_t S, real* hs, real* st, double* part, int inner) {
    UNUSED_WITHOUT_OMP(inner);
    int64_t M = N / LAYERS, nch = nchunks(M);
    memcpy(hs, x, (size_t)(S * DX) * sizeof(real));
    for (int layer = 0; layer < LAYERS; layer++) {
        const real* h = hs + layer * S * DX;
        OMP(omp parallel for num_threads(inner) schedule(static) if(inner > 1))
        for (int64_t c = 0; c < nch; c++) {
            int64_t n0 = c * CH, cn = M - n0 < CH ? M - n0 : CH;
            real tz[D][CH] __attribute__((aligned(64)));
            LOAD_CHUNK(theta + (layer * M + n0) * D, cn, P, pon, tz);
            if (st)
                OUTPUT_CHUNK(tz, cn, h, S, part + c * S * DY, st + (layer * nch + c) * S * NQ * CH);
            else
                FORWARD_ONLY(tz, cn, h, S, part + c * S * DY);
        }
        real* next = hs + (layer + 1) * S * DX;
        memcpy(next, h, (size_t)(S * DX) * sizeof(real));
        add_chunk_sums(next, part, nch, S * DY, (double)N);
    }
}

/* One run: forward, cotangent, then layer by layer from the top: force and update of the
   layer's particles, and the cotangent of its input. */
static void deep_run(const fused_args* a, int64_t r, real* work, double* part, int inner) {
    UNUSED_WITHOUT_OMP(inner);
    int64_t N = a->N, S = a->S, M = N / LAYERS, nch = nchunks(M);
    real* hs = work;
    real* st = hs + (LAYERS + 1) * S * DX;
    real* delta = st + LAYERS * nch * S * NQ * CH;
    const real* P = a->proj + r * D * D;
    const real* th_r = a->theta + r * N * D;
    deep_forward(th_r, a->x + r * S * DX, P, a->proj_on[r], N, S, hs, st, part, inner);
    real* o = a->out + r * S * DY;
    memcpy(o, hs + LAYERS * S * DX, (size_t)(S * DY) * sizeof(real));
    double loss = cotangent(a, r, o, delta);
    a->loss_acc[r] += loss;
    if (!__builtin_isfinite(loss) && a->first_bad[r] < 0) a->first_bad[r] = a->step;
    for (int layer = LAYERS - 1; layer >= 0; layer--) {
        const real* h = hs + layer * S * DX;
        OMP(omp parallel for num_threads(inner) schedule(static) if(inner > 1))
        for (int64_t c = 0; c < nch; c++) {
            int64_t n0 = layer * M + c * CH, cn = M - c * CH < CH ? M - c * CH : CH;
            real tz[D][CH] __attribute__((aligned(64)));
            real g[D][CH] __attribute__((aligned(64)));
            const real* stc = st + (layer * nch + c) * S * NQ * CH;
            LOAD_CHUNK(th_r + n0 * D, cn, P, a->proj_on[r], tz);
            BACK_CHUNK(tz, cn, h, delta, S, stc, g, layer > 0 ? part + c * S * DX : 0);
            UPDATE_CHUNK(th_r + n0 * D, cn, g, a->xi + a->xi_row[r] * a->xi_stride + n0 * D,
                         P, a->proj_on[r], a->noise_proj + r * D * D, a->noise_on[r], a->lr,
                         a->wd, a->sigma, a->theta_out + (r * N + n0) * D);
        }
        if (layer > 0) add_chunk_sums(delta, part, nch, S * DX, (double)N);
    }
}

/* Whole runs claimed one at a time from a shared counter by the threads of the team
   (thread id's workspace slot). */
typedef struct {
    const fused_args* a;
    real* work;
    double* partw;
    int64_t wr, wdb, R, next;
} deep_job;

static void deep_runs(void* arg, int id) {
    deep_job* j = (deep_job*)arg;
    for (;;) {
        int64_t r = __atomic_fetch_add(&j->next, 1, __ATOMIC_SEQ_CST);
        if (r >= j->R) return;
        deep_run(j->a, r, j->work + id * j->wr, j->partw + id * j->wdb, 1);
    }
}

/* A whole step of R runs of the ResNet, with the arguments (and the contract) of
   mfsym_fused, N = L·M.  Runs are claimed by the threads of the team (see team_run: a
   run's numbers do not depend on the thread that runs it, and no thread waits for one
   the system has not scheduled); a single run spreads the chunks of each layer over
   OpenMP threads, when a layer holds enough work to pay for the two joins it costs per
   layer. */
int mfsym_deep_fused(int64_t R, int64_t N, int64_t S, int64_t m, const real* theta,
                     const real* x, const real* targets, const real* cot_l,
                     const int8_t* cot_on, double c0, const real* xi, const int64_t* xi_row,
                     int64_t xi_stride, const real* proj, const int8_t* proj_on,
                     const real* noise_proj, const int8_t* noise_on, double lr, double wd,
                     double sigma, real* out, real* theta_out, double* loss_acc,
                     int64_t* first_bad, int64_t step, real* work, double* partw, int nt) {
    fused_args a = {N, S, m, theta, x, targets, cot_l, xi, proj, noise_proj, cot_on, proj_on,
                    noise_on, xi_row, xi_stride, (real)c0, (real)lr, (real)wd, (real)sigma,
                    out, theta_out, loss_acc, first_bad, step};
    deep_job job = {&a, work, partw, 0, 0, R, 0};
    mfsym_deep_sizes(N, S, &job.wr, &job.wdb);
    if (R > 1 && nt > 1) {
        team_run(nt < R ? nt : (int)R, deep_runs, &job);
    } else {
        int inner = R == 1 && use_threads(1, N / LAYERS, S) ? nt : 1;
        for (int64_t r = 0; r < R; r++) deep_run(&a, r, work, partw, inner);
    }
    return 0;
}

/* K whole steps (mfsym_deep_steps): step k of run r is deep_run with the inputs,
   targets and noise of step k, the particles ping-ponging between tmp and out so that the
   last step writes out (as mfsym_steps).  With a gate (mfsym_deep_steps_gated), the team
   threads with ids from gate_from on take runs only once it opens. */
typedef struct {
    fused_args a;  /* step 0's arguments */
    int64_t R, K, x_step, t_step, xi_step;
    real* tmp;
    real* work;
    double* partw;
    int64_t wr, wdb, next;
    int inner;
    int32_t* gate;
    int gate_from, finished;
} deep_steps_job;

/* The arguments of step k: those of step 0 moved to step k's inputs, targets, noise and
   particle buffers. */
static void deep_step_args(const deep_steps_job* j, int64_t k, fused_args* a) {
    *a = j->a;
    real* out = j->a.theta_out;
    a->theta_out = (j->K - 1 - k) % 2 == 0 ? out : j->tmp;
    if (k > 0) a->theta = (j->K - k) % 2 == 0 ? out : j->tmp;
    a->x = j->a.x + k * j->x_step;
    a->targets = j->a.targets + k * j->t_step;
    a->xi = j->a.xi + k * j->xi_step;
    a->step = j->a.step + k;
}

/* Run r's K steps on workspace slot `slot`, each layer's chunks on `inner` OpenMP threads
   (a lone run), on one while the call's gate is closed. */
static void deep_steps_run(const deep_steps_job* j, int64_t r, int64_t slot, int inner) {
    fused_args a;
    for (int64_t k = 0; k < j->K; k++) {
        deep_step_args(j, k, &a);
        int now = j->gate && !__atomic_load_n(j->gate, __ATOMIC_SEQ_CST) ? 1 : inner;
        deep_run(&a, r, j->work + slot * j->wr, j->partw + slot * j->wdb, now);
    }
}

static void deep_steps_runs(void* arg, int id) {
    deep_steps_job* j = (deep_steps_job*)arg;
    if (j->gate && id >= j->gate_from && !gate_wait(j->gate, &j->finished)) return;
    for (;;) {
        int64_t r = __atomic_fetch_add(&j->next, 1, __ATOMIC_SEQ_CST);
        if (r >= j->R) break;
        deep_steps_run(j, r, id, 1);
    }
    if (j->gate && id == 0) gate_release(&j->finished);  /* every run is handed out */
}

/* Threads of mfsym_deep_steps: the team over whole runs when R > 1, else one thread (a
   lone run spreads each layer's chunks over OpenMP threads when worth it). */
static int deep_steps_threads(int64_t R, int nt) { return R > 1 && nt > 1 ? (nt < R ? nt : (int)R) : 1; }

/* Workspace of mfsym_deep_steps with nt threads: reals (a slot of mfsym_deep_sizes per
   thread, then the outputs Φ (R, S, DY) of the step in progress) and doubles. */
void mfsym_deep_steps_sizes(int64_t R, int64_t N, int64_t S, int nt, int64_t* reals,
                            int64_t* doubles) {
    int64_t wr, wdb, slots = deep_steps_threads(R, nt);
    mfsym_deep_sizes(N, S, &wr, &wdb);
    *reals = slots * wr + R * S * DY;
    *doubles = slots * wdb;
}

/* mfsym_deep_steps (below) with late joiners: with gate non-null (int32 gate[2], see
   mfsym_steps_gated), the team threads with ids from gate_from on wait until
   mfsym_gate_open(gate) before they claim runs, and leave when every run is handed out
   first.  A lone run (its layers' chunks on OpenMP threads) takes its steps on one thread
   while the gate is closed and on nt from the step after it opens, so that no OpenMP
   thread competes with the caller's thread that is still busy.  The numbers do not depend
   on it (sums over particles are per chunk, added in chunk order). */
int mfsym_deep_steps_gated(int64_t R, int64_t N, int64_t S, int64_t m, int64_t K,
                           const real* theta, const real* x, int64_t x_step,
                           const real* targets, int64_t t_step, const real* cot_l,
                           const int8_t* cot_on, double c0, const real* xi,
                           const int64_t* xi_row, int64_t xi_stride, int64_t xi_step,
                           const real* proj, const int8_t* proj_on, const real* noise_proj,
                           const int8_t* noise_on, double lr, double wd, double sigma,
                           real* theta_out, real* tmp, double* loss_acc, int64_t* first_bad,
                           int64_t step0, real* work, double* partw, int nt, int32_t* gate,
                           int gate_from) {
    if (K < 1 || R < 1) return 0;
    deep_steps_job j = {{N, S, m, theta, x, targets, cot_l, xi, proj, noise_proj, cot_on,
                         proj_on, noise_on, xi_row, xi_stride, (real)c0, (real)lr, (real)wd,
                         (real)sigma, 0, theta_out, loss_acc, first_bad, step0},
                        R, K, x_step, t_step, xi_step, tmp, work, partw, 0, 0, 0, 1,
                        gate, gate_from < 1 ? 1 : gate_from, 0};
    mfsym_deep_sizes(N, S, &j.wr, &j.wdb);
    int want = deep_steps_threads(R, nt);
    j.a.out = work + want * j.wr;
    if (want > 1) {
        team_run(want, deep_steps_runs, &j);
    } else {
        int inner = use_threads(1, N / LAYERS, S) ? nt : 1;
        for (int64_t r = 0; r < R; r++) deep_steps_run(&j, r, 0, inner);
    }
    return want;
}

/* K whole steps of R runs of the ResNet, with the arguments (and the contract) of
   mfsym_steps, N = L·M: the same numbers as K calls of mfsym_deep_fused. */
int mfsym_deep_steps(int64_t R, int64_t N, int64_t S, int64_t m, int64_t K, const real* theta,
                     const real* x, int64_t x_step, const real* targets, int64_t t_step,
                     const real* cot_l, const int8_t* cot_on, double c0, const real* xi,
                     const int64_t* xi_row, int64_t xi_stride, int64_t xi_step,
                     const real* proj, const int8_t* proj_on, const real* noise_proj,
                     const int8_t* noise_on, double lr, double wd, double sigma,
                     real* theta_out, real* tmp, double* loss_acc, int64_t* first_bad,
                     int64_t step0, real* work, double* partw, int nt) {
    return mfsym_deep_steps_gated(R, N, S, m, K, theta, x, x_step, targets, t_step, cot_l,
                                  cot_on, c0, xi, xi_row, xi_stride, xi_step, proj, proj_on,
                                  noise_proj, noise_on, lr, wd, sigma, theta_out, tmp,
                                  loss_acc, first_bad, step0, work, partw, nt, 0, 0);
}

/* Φ(x) (R, S, DY) of each run's (projected) particles; 1 if a buffer cannot be had. */
int mfsym_deep_output(int64_t R, int64_t N, int64_t S, const real* theta, const real* x,
                      const real* proj, const int8_t* proj_on, real* out, int nt) {
    UNUSED_WITHOUT_OMP(nt);
    int64_t nch = nchunks(N / LAYERS), hsz = (LAYERS + 1) * S * DX;
    real* hs = (real*)malloc((size_t)(R * hsz) * sizeof(real));
    double* part = (double*)malloc((size_t)(R * nch * S * DY) * sizeof(double));
    if (!hs || !part) {
        free(hs);
        free(part);
        return 1;
    }
    OMP(omp parallel for num_threads(nt) schedule(dynamic, 1) if(nt > 1 && R > 1))
    for (int64_t r = 0; r < R; r++) {
        real* h = hs + r * hsz;
        deep_forward(theta + r * N * D, x + r * S * DX, proj + r * D * D, proj_on[r], N, S, h,
                     0, part + r * nch * S * DY, 1);
        memcpy(out + r * S * DY, h + LAYERS * S * DX, (size_t)(S * DY) * sizeof(real));
    }
    free(hs);
    free(part);
    return 0;
}

/* The compiled variant: v[0..10] = {ABI version, bytes per real, unit, activation, DX, DY,
   D, CH, OpenMP on, depth L, hidden width (0 but for the mlp unit)}, *slope = SLOPE. */
void mfsym_deep_variant(int64_t* v, double* slope) {
    mfsym_variant(v, slope);
    v[0] = MFSYM_DEEP_ABI;
    v[9] = LAYERS;
#if MFSYM_UNIT == 3
    v[10] = H;
#else
    v[10] = 0;
#endif
}
