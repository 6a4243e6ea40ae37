/* Standard normal numbers from a torch CPU generator's state, the same bits as
   torch.randn draws from it (see mfsym/engine/fast_normal.py for how the caller checks
   that, once per process, before it relies on it).

   The generator.  torch's CPU generator is MT19937 (32-bit words, state w[0..623]) with a
   countdown `left` and a cursor `next`: a draw decrements left; when it reaches 0 the
   state is regenerated (twisted) and left = 624, next = 0; the draw returns the tempered
   word w[next++].  torch.Generator.get_state() holds left and next beside the words, so a
   caller hands them here and takes them back.

   Uniforms.  A float32 uniform on [0, 1) is (word & (2^24 − 1))·2^−24; a float64 one
   takes two words (hi, lo), ((hi·2^32 + lo) & (2^53 − 1))·2^−53.

   The fill.  For n ≥ 16 numbers into a contiguous buffer torch first draws all n
   uniforms u, then turns each block of 16 into normals by Box–Muller over the pairs
   (u_j, u_{j+8}), j < 8:
       r = sqrt(−2 log(1 − u_j)),  θ = 2π u_{j+8},  out_j = r cos θ,  out_{j+8} = r sin θ;
   when 16 does not divide n it draws 16 more uniforms into the last 16 places and
   transforms those again.  How log, cos and sin are evaluated decides the last bits, and
   torch has two ways (its CPU build picks one by the machine's vector capability):
   * variant 0 ("libm", float32 and float64): the C library's log, cos and sin per number,
     θ rounded from 2π·u computed in float64;
   * variant 1 ("vector", float32 only, x86 with AVX2): Cephes' single-precision
     polynomials in 8-wide vectors, θ = fl32(2π)·u in float32, with the fused
     multiply-adds that the compiler forms from them.  Written out below step by step
     (this file is built with -ffp-contract=off so that no other operation fuses):
     log(x), x in (0, 1]: x = m·2^e with m in [0.5, 1); if m < √½ then m ← 2m, e ← e − 1;
       t = m − 1, z = t², P(t) = Horner polynomial of degree 8 (fused steps),
       y = fma(P(t)·t, z, e·q1), y = y − z/2, log = fma(e, q2, t + y) with q1 + q2 = ln 2;
     sin θ, cos θ, θ ≥ 0: j = trunc(θ·4/π) rounded up to even, reduced t = θ − j·π/4 in
       three fused steps (π/4 = −(dp1 + dp2 + dp3)), z = t²,
       cos t ≈ fma((c0 z + c1) z + c2)·z, z, −z/2) + 1, sin t ≈ fma(((s0 z + s1) z + s2)·z, t, t),
       the two swapped when j & 2 and the signs taken from j. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MFSYM_NORMAL_ABI 1
#define MT_N 624
#define MT_M 397

typedef struct {
    uint32_t w[MT_N];
    int32_t left;
    int64_t next;
} mt_state;

static inline uint32_t mt_mix(uint32_t a, uint32_t b) {
    uint32_t y = (a & 0x80000000u) | (b & 0x7fffffffu);
    return (y >> 1) ^ ((b & 1u) ? 0x9908b0dfu : 0u);
}

/* Regenerate all 624 words (the twist); vectorisable: each loop reads words at least 227
   places away from the ones it writes. */
static void mt_twist(uint32_t* w) {
    for (int j = 0; j < MT_N - MT_M; j++) w[j] = w[j + MT_M] ^ mt_mix(w[j], w[j + 1]);
    for (int j = MT_N - MT_M; j < MT_N - 1; j++)
        w[j] = w[j - (MT_N - MT_M)] ^ mt_mix(w[j], w[j + 1]);
    w[MT_N - 1] = w[MT_M - 1] ^ mt_mix(w[MT_N - 1], w[0]);
}

static inline uint32_t mt_temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* The next n words of the stream into out, as n single draws would give them. */
static void mt_words(mt_state* s, uint32_t* out, int64_t n) {
    while (n > 0) {
        int64_t have = s->left - 1;  /* words left before the next twist */
        if (have == 0) {
            mt_twist(s->w);
            s->left = MT_N + 1;  /* the draw that twists counts itself: see below */
            s->next = 0;
            have = MT_N;
        }
        int64_t take = n < have ? n : have;
        const uint32_t* src = s->w + s->next;
        for (int64_t i = 0; i < take; i++) out[i] = mt_temper(src[i]);
        s->left -= (int32_t)take;
        s->next += take;
        out += take;
        n -= take;
    }
    /* After a twist torch sets left = 624 and then serves the first word without counting
       down, so a block of m words from a fresh twist leaves left = 625 − m: the
       MT_N + 1 above. */
}

static int mt_load(mt_state* s, const uint64_t* words, const int32_t* left, const int64_t* next) {
    if (*left < 1 || *left > MT_N || *next < 0 || *next > MT_N) return -1;
    if (*left > 1 && *next + (*left - 1) > MT_N) return -1;
    for (int i = 0; i < MT_N; i++) {
        if (words[i] >> 32) return -1;
        s->w[i] = (uint32_t)words[i];
    }
    s->left = *left;
    s->next = *next;
    return 0;
}

static void mt_store(const mt_state* s, uint64_t* words, int32_t* left, int64_t* next) {
    for (int i = 0; i < MT_N; i++) words[i] = s->w[i];
    *left = s->left;
    *next = s->next;
}

/* ---- uniforms ---- */

static void uniform_f32(mt_state* s, float* out, int64_t n) {
    uint32_t buf[1024];
    while (n > 0) {
        int64_t k = n < 1024 ? n : 1024;
        mt_words(s, buf, k);
        for (int64_t i = 0; i < k; i++) out[i] = (float)(buf[i] & 0xffffffu) * 0x1p-24f;
        out += k;
        n -= k;
    }
}

static void uniform_f64(mt_state* s, double* out, int64_t n) {
    uint32_t buf[1024];
    while (n > 0) {
        int64_t k = n < 512 ? n : 512;
        mt_words(s, buf, 2 * k);
        for (int64_t i = 0; i < k; i++) {
            uint64_t v = ((uint64_t)buf[2 * i] << 32) | buf[2 * i + 1];
            out[i] = (double)(v & ((1ull << 53) - 1)) * 0x1p-53;
        }
        out += k;
        n -= k;
    }
}

/* ---- variant 0: the C library per number ---- */

static void box_muller16_libm_f32(float* d) {
    for (int j = 0; j < 8; j++) {
        float r = sqrtf(-2.0f * logf(1.0f - d[j]));
        float t = (float)(2.0 * 3.14159265358979323846 * (double)d[j + 8]);
        d[j] = r * cosf(t) + 0.0f;  /* the mean, as torch adds it: −0 → +0 */
        d[j + 8] = r * sinf(t) + 0.0f;
    }
}

static void box_muller16_libm_f64(double* d) {
    for (int j = 0; j < 8; j++) {
        double r = sqrt(-2.0 * log(1.0 - d[j]));
        double t = 2.0 * 3.14159265358979323846 * d[j + 8];
        d[j] = r * cos(t) + 0.0;
        d[j + 8] = r * sin(t) + 0.0;
    }
}

/* ---- variant 1: Cephes polynomials, 8 lanes ---- */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
static inline v8f vfma(v8f a, v8f b, v8f c) { return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#define HAVE_VECTOR_FMA 1
#else
static inline v8f vfma(v8f a, v8f b, v8f c) {
    v8f r;
    for (int i = 0; i < 8; i++) r[i] = fmaf(a[i], b[i], c[i]);
    return r;
}
#define HAVE_VECTOR_FMA 0
#endif

static inline v8f vs(float a) { return (v8f){a, a, a, a, a, a, a, a}; }
static inline v8u bits(v8f a) { v8u b; memcpy(&b, &a, sizeof b); return b; }
static inline v8f from_bits(v8u b) { v8f a; memcpy(&a, &b, sizeof a); return a; }

/* log x for x in (0, 1] (no lane is 0 here: x = 1 − u ≥ 2^−24). */
static inline v8f cephes_log(v8f x) {
    v8u b = bits(x);
    v8i e_raw = (v8i)(b >> 23) - 127;
    v8f m = from_bits((b & ~0x7f800000u) | 0x3f000000u);  /* [0.5, 1) */
    v8f e = __builtin_convertvector(e_raw, v8f) + vs(1.0f);
    v8i small = m < vs(0.707106781186547524f);  /* lanes: −1 or 0 */
    v8f keep = from_bits(bits(m) & (v8u)small);
    v8f t = m - vs(1.0f);
    e = e - from_bits(bits(vs(1.0f)) & (v8u)small);
    t = t + keep;
    v8f z = t * t;
    v8f y = vfma(vs(7.0376836292e-2f), t, vs(-1.1514610310e-1f));
    y = vfma(y, t, vs(1.1676998740e-1f));
    y = vfma(y, t, vs(-1.2420140846e-1f));
    y = vfma(y, t, vs(1.4249322787e-1f));
    y = vfma(y, t, vs(-1.6668057665e-1f));
    y = vfma(y, t, vs(2.0000714765e-1f));
    y = vfma(y, t, vs(-2.4999993993e-1f));
    y = vfma(y, t, vs(3.3333331174e-1f));
    y = y * t;
    y = vfma(y, z, e * vs(-2.12194440e-4f));
    y = vfma(-z, vs(0.5f), y);
    return vfma(e, vs(0.693359375f), t + y);
}

/* sin θ and cos θ for θ ≥ 0. */
static inline void cephes_sincos(v8f x, v8f* s, v8f* c) {
    v8i j = __builtin_convertvector(x * vs(1.27323954473516f), v8i);
    j = (j + 1) & ~1;
    v8f y = __builtin_convertvector(j, v8f);
    v8u swap_sin = (v8u)(j & 4) << 29;
    v8i poly = (j & 2) == 0;  /* lanes: −1 where sin takes the sine polynomial */
    x = vfma(y, vs(-0.78515625f), x);
    x = vfma(y, vs(-2.4187564849853515625e-4f), x);
    x = vfma(y, vs(-3.77489497744594108e-8f), x);
    v8u sign_cos = (v8u)(~(j - 2) & 4) << 29;
    v8f z = x * x;
    v8f yc = vfma(vs(2.443315711809948e-5f), z, vs(-1.388731625493765e-3f));
    yc = vfma(yc, z, vs(4.166664568298827e-2f));
    yc = yc * z;
    yc = vfma(yc, z, -(z * vs(0.5f)));
    yc = yc + vs(1.0f);
    v8f ys = vfma(vs(-1.9515295891e-4f), z, vs(8.3321608736e-3f));
    ys = vfma(ys, z, vs(-1.6666654611e-1f));
    ys = ys * z;
    ys = vfma(ys, x, x);
    v8f s_part = from_bits(bits(ys) & (v8u)poly);
    v8f c_part = from_bits(bits(yc) & ~(v8u)poly);
    ys = ys - s_part;
    yc = yc - c_part;
    *s = from_bits(bits(c_part + s_part) ^ swap_sin);
    *c = from_bits(bits(yc + ys) ^ sign_cos);
}

static void box_muller16_vector_f32(float* d) {
    v8f u1, u2, sn, cs;
    memcpy(&u1, d, sizeof u1);
    memcpy(&u2, d + 8, sizeof u2);
    v8f r = vs(-2.0f) * cephes_log(vs(1.0f) - u1);
    for (int i = 0; i < 8; i++) r[i] = sqrtf(r[i]);
    cephes_sincos(vs((float)(2.0 * 3.14159265358979323846)) * u2, &sn, &cs);
    v8f a = r * cs + vs(0.0f), b = r * sn + vs(0.0f);  /* torch adds the mean, 0: −0 → +0 */
    memcpy(d, &a, sizeof a);
    memcpy(d + 8, &b, sizeof b);
}

/* ---- the fills ---- */

#define FILL(NAME, REAL, UNIFORM, BLOCK)                                      \
    static void NAME(mt_state* s, REAL* out, int64_t n) {                     \
        UNIFORM(s, out, n);                                                   \
        for (int64_t i = 0; i + 16 <= n; i += 16) BLOCK(out + i);             \
        if (n % 16) {                                                         \
            UNIFORM(s, out + n - 16, 16);                                     \
            BLOCK(out + n - 16);                                              \
        }                                                                     \
    }
FILL(fill_libm_f32, float, uniform_f32, box_muller16_libm_f32)
FILL(fill_vector_f32, float, uniform_f32, box_muller16_vector_f32)
FILL(fill_libm_f64, double, uniform_f64, box_muller16_libm_f64)

/* n ≥ 16 standard normal numbers into out (float32: variant 0 or 1; float64: variant 0)
   from the MT19937 state (words: 624 values below 2^32, as torch keeps them in 64-bit
   slots; left, next), which is advanced past them.  Returns 0, or −1 (nothing written)
   for a state or request that torch's generator could not have. */
int mfsym_normal_f32(uint64_t* words, int32_t* left, int64_t* next, float* out, int64_t n,
                     int variant) {
    mt_state s;
    if (n < 16 || (variant != 0 && variant != 1) || mt_load(&s, words, left, next)) return -1;
    if (variant == 0) fill_libm_f32(&s, out, n);
    else fill_vector_f32(&s, out, n);
    mt_store(&s, words, left, next);
    return 0;
}

int mfsym_normal_f64(uint64_t* words, int32_t* left, int64_t* next, double* out, int64_t n,
                     int variant) {
    mt_state s;
    if (n < 16 || variant != 0 || mt_load(&s, words, left, next)) return -1;
    fill_libm_f64(&s, out, n);
    mt_store(&s, words, left, next);
    return 0;
}

/* v[0..1] = {ABI version, 1 when the vector variant's fused multiply-adds are single
   instructions (else a per-lane fmaf: the same numbers, slower)}; *unused = 0 (the
   variant functions of the kernels share this signature). */
void mfsym_normal_variant(int64_t* v, double* unused) {
    v[0] = MFSYM_NORMAL_ABI;
    v[1] = HAVE_VECTOR_FMA;
    *unused = 0.0;
}
