/* The mlp unit (MFSYM_UNIT 3) of the fused kernels: included by mfsym_kernel.c in place of
   the matrix and uv units' definitions, so that its force and update go through the same
   chunked one-pass 8-lane code (mfsym_force, mfsym_step, mfsym_fused, and the mlp
   ResNet's layers); the step kernel (mfsym_steps) and mfsym_output have its vector form,
   in mfsym_kernel.c beside the other units'.

   σ*(x, z) = W2 act(W1 x), z = (vec W1, vec W2) row-major, W1 (H×DX) at z[j·DX + l],
   W2 (DY×H) at z[H·DX + k·H + j]; D = H·(DX + DY) with H = MFSYM_HIDDEN.
   Stored per sample and particle: a_j = act(pre_j) in st[j] and act'(pre_j) in st[H + j],
   pre_j = Σ_l W1[j, l] x_l. */

#define H MFSYM_HIDDEN
#define W2_AT(k, j) (H * DX + (k) * H + (j))
#define NQ (2 * H)

/* Hidden pre-activation j of particle n: pre_j = Σ_l W1[j, l] x_l. */
static inline real mlp_pre(real tz[D][CH], int64_t n, int j, const real* xs) {
    real pre = 0;
    for (int l = 0; l < DX; l++) pre += tz[j * DX + l][n] * xs[l];
    return pre;
}

/* Lanes n..n+7 of one sample: acc[k][i] += Σ_j W2[k, j] act(pre_j) for particles below cn. */
static inline void output_block(real tz[D][CH], int64_t n, int64_t cn, const real* xs,
                                real acc[DY][8], real (*st)[CH], int store) {
    for (int i = 0; i < 8; i++) {
        real m = (n + i < cn) ? (real)1 : (real)0;
        for (int j = 0; j < H; j++) {
            real pre = mlp_pre(tz, n + i, j, xs);
            real a = ACT(pre);
            for (int k = 0; k < DY; k++) acc[k][i] += m * (tz[W2_AT(k, j)][n + i] * a);
            if (store) {
                st[j][n + i] = a;
                st[H + j][n + i] = DACT(pre, a);
            }
        }
    }
}

/* Particle n's force contribution of one sample from a_j = act(pre_j), d_j = act'(pre_j):
   g_W2[k, j] += a_j c_k, g_W1[j, l] += w_j x_l; returns w_j = d_j (Σ_k W2[k, j] c_k). */
static inline real mlp_terms(real tz[D][CH], int64_t n, int j, real a, real d,
                             const real* xs, const real* cs, real g[D][CH]) {
    real wc = 0;
    for (int k = 0; k < DY; k++) wc += tz[W2_AT(k, j)][n] * cs[k];
    real w = d * wc;
    for (int k = 0; k < DY; k++) g[W2_AT(k, j)][n] += a * cs[k];
    for (int l = 0; l < DX; l++) g[j * DX + l][n] += w * xs[l];
    return w;
}

static inline void force_lane(real tz[D][CH], int64_t n, const real* xs, const real* cs,
                              real g[D][CH]) {
    real a[H], d[H];
    for (int j = 0; j < H; j++) {
        real pre = mlp_pre(tz, n, j, xs);
        a[j] = ACT(pre);
        d[j] = DACT(pre, a[j]);
    }
    for (int j = 0; j < H; j++) mlp_terms(tz, n, j, a[j], d[j], xs, cs, g);
}

static inline void force_lane_stored(real tz[D][CH], int64_t n, const real (*st)[CH],
                                     const real* xs, const real* cs, real g[D][CH]) {
    for (int j = 0; j < H; j++) mlp_terms(tz, n, j, st[j][n], st[H + j][n], xs, cs, g);
}

static inline void force_finish(real g[D][CH], int64_t c8) {
    (void)g;
    (void)c8;
}
