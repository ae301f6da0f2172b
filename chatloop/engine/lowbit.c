/* Low-bit matrix products for a few rows at a time, with AVX2 + FMA + F16C (and AVX-512 BW where the
 * library is built with it):
 * y = rmsnorm?(x) @ W.T (+ bias) (+ residual).
 *
 * Why this exists: decoding multiplies 1 to 8 rows of activations by every weight matrix of the
 * model, once per token. PyTorch's CPU kernels for 4- and 8-bit weights unpack the weights again
 * for every row and, without AVX-512, convert through bfloat16; on an AVX2-only CPU a 4-bit
 * decoding step ran at about half of llama.cpp's speed. Here, much as in llama.cpp, the activations
 * are quantised in blocks of 32 (to int16 here, so the products are as good as float32's) and the
 * products run on integer multiply-adds, 16 output columns at a time; a block of weights is
 * unpacked once and multiplied with up to eight rows (the weights stay in L1 between passes). The RMS norm in front of a projection is
 * applied while quantising the activations, and the residual add is folded into the store: one
 * call per projection.
 *
 * Formats (packed by chatloop/engine/lowbit.py from float weights; the layout is below, at
 * block_product):
 *   q4: asymmetric, groups of 32 weights along K: w = q * scale + min, q in 0..15; q [N, K/2] bytes,
 *       sm [N, K/32, 2] float16 (scale, min) per group.
 *   q8: symmetric per output row: w = q * scale, q in -127..127; q [N, K] int8, s [N] float32.
 *   N is a multiple of 16.
 * x [M, K], y and residual [M, N] are float32, row-major and contiguous; bias is [N] or NULL.
 * Threads: OpenMP over blocks of output columns, in the runtime PyTorch itself loaded (the same
 * libgomp.so.1 soname), so the two never hold separate spinning thread pools.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Rows of x per tile: a long prefill's quantised rows would not stay in cache while every column
 * block streams over them (6,300 rows: 7 MB read again for every 16 columns); a tile of 128 rows
 * (~150 KB) does, and the weights are read once per tile instead. */
#define TILE 128

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m256 half8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* exp(x) for 8 floats (Cephes' polynomial, as in avx_mathfun): relative error ~1e-7. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* Without AVX-512, x quantised to int8 is stored with each pair of bytes doubled (x0 x1 x0 x1, x2 x3
 * x2 x3, ...; as many bytes as int16): the AVX2 products (block_q4_x8) broadcast one k-pair at a time,
 * and a 32-bit broadcast from memory is a plain load, where a 16-bit one also takes a shuffle. */
#ifdef __AVX512BW__
#define X8_PAIRS 0
#else
#define X8_PAIRS 1
#endif
/* There the products also sum a whole group (32 k) of nibble x byte products in int16 lanes: with
 * q <= 15 a lane's sum is at most 15 * sum|xq| <= 15 * (sum|x| / d + 16), below 2^15 when the block's
 * scale d is at least sum|x| / 2168. So d is also kept >= sum|x| / X8_SUM (a margin below that):
 * the usual max|x| / 127 is larger unless the block's mean |x| is over half its max, which typical
 * activations' is not; then they round as 7-bit. */
#define X8_SUM 2150.0f
/* Rows a pass of the products takes, in every build: with AVX2 a row's int32 (or int16) sums take one
 * register per 8 columns, and 8 rows' float sums, touched once a group, may live in L1 (the
 * compiler keeps them in registers where they fit); a block's weights are then unpacked once for 8
 * rows (AVX2, 8 rows against 4: 10% less time with int8 activations, 8-16% with int16 ones). */
#define ROWS 8

/* Activations are quantised to int16 in blocks of 32 (scale = max|x| / 32767): the products then run
 * on integer multiply-adds (madd: 16 int16 products summed in pairs per instruction), with float32
 * scales applied once per block. (llama.cpp quantises activations to int8, which is faster but
 * moved the default model's greedy answers: a 0.2-logit near tie went the other way.) xsum keeps
 * each quantised block's sum for the q4 min term. */
static void quantize_rows(const float *x, int64_t M, int64_t K, const float *norm, float eps, int glu,
                          int x8, int split, void *xq, float *xd, float *xsum) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    /* the team's threads share the work: whole rows, or where there are fewer rows than threads, parts
     * of each row (each part computes its row's norm itself) */
    const int64_t G = K / 32, parts = M >= omp_get_num_threads() ? 1 : omp_get_num_threads();
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < M * parts; unit++) {
        const int64_t m = unit / parts, part = unit % parts;
        __m256 rs = _mm256_set1_ps(1.0f);
        if (norm) { /* RMS norm first: x * norm / rms(x) */
            __m256 ss = _mm256_setzero_ps();
            for (int64_t k = 0; k < K; k += 8) {
                __m256 v = _mm256_loadu_ps(x + m * K + k);
                ss = _mm256_fmadd_ps(v, v, ss);
            }
            rs = _mm256_set1_ps(1.0f / sqrtf(hsum(ss) / (float)K + eps));
        }
        for (int64_t b = m * G + part * G / parts; b < m * G + (part + 1) * G / parts; b++) {
            const float *xb = glu ? x + m * 2 * K + (b - m * G) * 32 : x + b * 32;
            __m256 v[4], mx = _mm256_setzero_ps(), sa = _mm256_setzero_ps();
            for (int j = 0; j < 4; j++) {
                if (glu) { /* x is [gate | up]: the input is silu(gate) * up = gate / (1 + exp(-gate)) * up */
                    __m256 g = _mm256_loadu_ps(xb + 8 * j), u = _mm256_loadu_ps(xb + K + 8 * j);
                    __m256 sig = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)));
                    v[j] = _mm256_mul_ps(_mm256_div_ps(g, sig), u);
                } else {
                    v[j] = _mm256_mul_ps(_mm256_loadu_ps(xb + 8 * j), rs);
                }
                if (norm) v[j] = _mm256_mul_ps(v[j], _mm256_loadu_ps(norm + (b - m * G) * 32 + 8 * j));
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[j]));
                sa = _mm256_add_ps(sa, _mm256_andnot_ps(sign, v[j]));
            }
            float amax = hmax(mx), d = amax / (x8 ? 127.0f : 32767.0f);
            if (x8 && X8_PAIRS) d = fmaxf(d, hsum(sa) / X8_SUM);
            xd[b] = d;
            __m256 inv = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
            __m256i i[4];
            for (int j = 0; j < 4; j++)
                i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv)); /* rounds to nearest */
            /* the sum of the quantised block, not of x: the min term then sees the same x as the
             * products, and the error is that of the centred weights (w * e), not of q * scale * e */
            __m256i si = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            xsum[b] = d * hsum(_mm256_cvtepi32_ps(si));
            /* pack 32 int32 to 32 int16 (or int8) in order (packs work within 128-bit lanes; a permute
             * restores the order) */
            __m256i p0 = _mm256_packs_epi32(i[0], i[1]), p1 = _mm256_packs_epi32(i[2], i[3]);
            if (x8) {
                __m256i p = _mm256_packs_epi16(p0, p1); /* dwords: i0 0-3, i1 0-3, i2 0-3, i3 0-3, i0 4-7, ... */
                p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
#if X8_PAIRS
                __m256i lo = _mm256_unpacklo_epi16(p, p), hi = _mm256_unpackhi_epi16(p, p); /* pairs doubled */
                _mm256_storeu_si256((__m256i *)((int8_t *)xq + b * 64), _mm256_permute2x128_si256(lo, hi, 0x20));
                _mm256_storeu_si256((__m256i *)((int8_t *)xq + b * 64 + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
#else
                _mm256_storeu_si256((__m256i *)((int8_t *)xq + b * 32), p);
#endif
            } else if (split) { /* for AMX (amx_block): x = 256 * high + low, low bytes then high ones */
                __m256i v0 = _mm256_permute4x64_epi64(p0, 0xD8), v1 = _mm256_permute4x64_epi64(p1, 0xD8);
                const __m256i ff = _mm256_set1_epi16(0xFF);
                __m256i lo = _mm256_packus_epi16(_mm256_and_si256(v0, ff), _mm256_and_si256(v1, ff));
                __m256i hi = _mm256_packs_epi16(_mm256_srai_epi16(v0, 8), _mm256_srai_epi16(v1, 8));
                _mm256_storeu_si256((__m256i *)((uint8_t *)xq + b * 32), _mm256_permute4x64_epi64(lo, 0xD8));
                _mm256_storeu_si256((__m256i *)((uint8_t *)xq + M * K + b * 32), _mm256_permute4x64_epi64(hi, 0xD8));
            } else {
                _mm256_storeu_si256((__m256i *)((int16_t *)xq + b * 32), _mm256_permute4x64_epi64(p0, 0xD8));
                _mm256_storeu_si256((__m256i *)((int16_t *)xq + b * 32 + 16), _mm256_permute4x64_epi64(p1, 0xD8));
            }
        }
    }
}

/* The scratch layout every product uses: M * K int16 of quantised x (or int8, x8; or with split, the
 * int16's M * K low bytes then M * K high ones), then M * K / 32 block scales and as many block sums
 * (floats); fills it from x and points xq, xd and xsum into it. With AMX each thread's weight tiles
 * follow, from the next 64-byte boundary (K / 32 * 512 bytes a thread). */
static inline void quantize_into(void *scratch, const float *x, int64_t M, int64_t K, const float *norm,
                                 float eps, int glu, int x8, int split, void **xq, float **xd, float **xsum) {
    *xq = scratch;
    *xd = (float *)((char *)scratch + M * K * (x8 && !X8_PAIRS ? 1 : 2));
    *xsum = *xd + M * (K / 32);
    quantize_rows(x, M, K, norm, eps, glu, x8, split, *xq, *xd, *xsum);
}

/* Both formats are laid out in blocks of 16 output columns, interleaved so that one vector holds a
 * pair of k for each of the block's columns (as llama.cpp's repacked AVX2 kernels lay out Q4_0): a
 * pair of x is broadcast and multiplied with 16 columns at once, so there are no horizontal sums,
 * scales apply to 16 columns as one vector, and a 32-byte load carries 64 (q4) or 32 (q8) weights.
 * Per group of 32 k a block holds:
 *   q4: 256 bytes: chunk c (32 bytes) holds k-pair c in its low nibbles and k-pair c + 8 in its high
 *       ones, byte 2j + t being column j's k = 32g + 2p + t; sm then holds, per block and group, 16
 *       scales and 16 mins (float16).
 *   q8: 512 bytes: chunk p (32 bytes) holds k-pair p, byte 2j + t as above; s: one float32 scale
 *       per column.
 * With AVX-512 a vector is the whole block (16 columns of int32), with AVX2 half of it. An int32
 * sum over a group cannot overflow: 32 * 127 * 32767 < 2^31. */
#ifdef __AVX512BW__
#define VW 16
typedef __m512i iv;
typedef __m512 fv;
static inline iv i_zero(void) { return _mm512_setzero_si512(); }
static inline fv f_zero(void) { return _mm512_setzero_ps(); }
static inline iv nibbles(const uint8_t *chunk, int high, int part) {
    (void)part;
    __m256i c = _mm256_loadu_si256((const __m256i *)chunk);
    return _mm512_cvtepu8_epi16(_mm256_and_si256(high ? _mm256_srli_epi16(c, 4) : c, _mm256_set1_epi8(0x0F)));
}
static inline iv bytes(const int8_t *chunk, int part) {
    (void)part;
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)chunk));
}
static inline iv pair_dot(iv acc, iv w, const int16_t *x) { /* acc + 16 columns' products with the pair x */
    int32_t pair;
    memcpy(&pair, x, 4);
#ifdef __AVX512VNNI__
    return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(pair)); /* the multiply-add and the sum in one */
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, _mm512_set1_epi32(pair)));
#endif
}
static inline fv to_f(iv a) { return _mm512_cvtepi32_ps(a); }
static inline fv f_fmadd(fv a, fv b, fv c) { return _mm512_fmadd_ps(a, b, c); }
static inline fv f_mul(fv a, fv b) { return _mm512_mul_ps(a, b); }
static inline fv f_add(fv a, fv b) { return _mm512_add_ps(a, b); }
static inline fv f_set1(float x) { return _mm512_set1_ps(x); }
static inline fv f_half(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline fv f_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void f_store(float *p, fv v) { _mm512_storeu_ps(p, v); }
#else
#define VW 8
typedef __m256i iv;
/* An accumulator as it is: GCC otherwise reassociates a row's chain of integer adds, computes every
 * product of the group first and spills them to the stack (16 registers do not hold them); keeping
 * the chain took 3-5% off the AVX2 products at 1-64 rows. */
static inline __m256i keep(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}
typedef __m256 fv;
static inline iv i_zero(void) { return _mm256_setzero_si256(); }
static inline fv f_zero(void) { return _mm256_setzero_ps(); }
static inline iv nibbles(const uint8_t *chunk, int high, int part) { /* part: columns 0-7 or 8-15 */
    __m128i c = _mm_loadu_si128((const __m128i *)(chunk + 16 * part));
    return _mm256_cvtepu8_epi16(_mm_and_si128(high ? _mm_srli_epi16(c, 4) : c, _mm_set1_epi8(0x0F)));
}
static inline iv bytes(const int8_t *chunk, int part) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(chunk + 16 * part)));
}
static inline iv pair_dot(iv acc, iv w, const int16_t *x) { /* acc + 8 columns' products with the pair x */
    int32_t pair;
    memcpy(&pair, x, 4);
#ifdef __AVXVNNI__
    return _mm256_dpwssd_avx_epi32(acc, w, _mm256_set1_epi32(pair));
#else
    return keep(_mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_set1_epi32(pair))));
#endif
}
static inline fv to_f(iv a) { return _mm256_cvtepi32_ps(a); }
static inline fv f_fmadd(fv a, fv b, fv c) { return _mm256_fmadd_ps(a, b, c); }
static inline fv f_mul(fv a, fv b) { return _mm256_mul_ps(a, b); }
static inline fv f_add(fv a, fv b) { return _mm256_add_ps(a, b); }
static inline fv f_set1(float x) { return _mm256_set1_ps(x); }
static inline fv f_half(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline fv f_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void f_store(float *p, fv v) { _mm256_storeu_ps(p, v); }
#endif
/* A product's VW output columns from n0, stored at y + at with the bias and the residual added. */
static inline void store_out(float *y, int64_t at, int64_t n0, fv v, const float *bias, const float *res) {
    if (bias) v = f_add(v, f_load(bias + n0));
    if (res) v = f_add(v, f_load(res + at));
    f_store(y + at, v);
}

/* Weights are read once per step, from memory (a model's do not fit in the caches), as one stream per
 * thread; at a few rows a block's arithmetic is short and the hardware's prefetcher does not run far
 * enough ahead of it. The group loops ask for the bytes AHEAD further on (within a thread's range of
 * blocks, the next block's follow its own): 8 rows of 4-bit products took 10-17% less, one row a few
 * percent. Except one row of 8-bit weights with int16 activations (block_product), a plain stream
 * at 1 byte a weight, which the hardware keeps up with: asking as well made it 20% slower. */
#define AHEAD 8192
static inline __attribute__((always_inline)) void prefetch(const void *p, const int bytes) {
    /* (inlined: as a call, GCC finds it has no effect and drops it) */
    for (int at = 0; at < bytes; at += 64) _mm_prefetch((const char *)p + at, _MM_HINT_T0);
}

/* One group's products for one part (VW columns) of block qb's 16, rows m0..m0+r, added to acc[i]. */
static inline __attribute__((always_inline)) void group_part(
        const int bits, const int16_t *xq, const float *xd, const float *xsum, const uint8_t *qb,
        const uint16_t *sb, int64_t m0, const int r, int64_t g, int64_t G, int part, fv *acc) {
    iv dot[ROWS];
    for (int i = 0; i < ROWS; i++) dot[i] = i_zero();
    if (bits == 4) {
        const uint8_t *qg = qb + g * 256;
        for (int c = 0; c < 8; c++) {
            iv lo = nibbles(qg + 32 * c, 0, part), hi = nibbles(qg + 32 * c, 1, part);
            for (int i = 0; i < r; i++) {
                const int16_t *xb = xq + ((m0 + i) * G + g) * 32;
                dot[i] = pair_dot(pair_dot(dot[i], lo, xb + 2 * c), hi, xb + 2 * (c + 8));
            }
        }
        fv scale = f_half(sb + g * 32 + part * VW), mn = f_half(sb + g * 32 + 16 + part * VW);
        for (int i = 0; i < r; i++) {
            int64_t b = (m0 + i) * G + g;
            acc[i] = f_fmadd(to_f(dot[i]), f_mul(scale, f_set1(xd[b])), acc[i]);
            acc[i] = f_fmadd(mn, f_set1(xsum[b]), acc[i]);
        }
    } else {
        const int8_t *qg = (const int8_t *)qb + g * 512;
        for (int c = 0; c < 16; c++) {
            iv v = bytes(qg + 32 * c, part);
            for (int i = 0; i < r; i++) dot[i] = pair_dot(dot[i], v, xq + ((m0 + i) * G + g) * 32 + 2 * c);
        }
        for (int i = 0; i < r; i++)
            acc[i] = f_fmadd(to_f(dot[i]), f_set1(xd[(m0 + i) * G + g]), acc[i]);
    }
}

/* The 16 output columns of block `blk` for rows m0..m0+r (r <= ROWS; bits and r are constants after
 * inlining). q4: w is the nibbles, ws (scale, min) float16; q8: w is int8, ws the float scales.
 * With AVX2 a block is two parts of 8 columns. 4-bit weights at up to 4 rows run part by part over
 * the groups, the float sums in registers; else group by group, both parts' float sums kept (in L1
 * where the registers do not hold them): on an AVX2-only Zen 3 that took 2-16% off the 8-bit
 * output projection at 1-8 rows and ~8% off 4-bit layers at 8 rows, and made 4-bit ones at 1-2
 * rows a few percent slower. */
static inline __attribute__((always_inline)) void block_product(
        const int bits, const int16_t *xq, const float *xd, const float *xsum, const void *w, const void *ws,
        float *y, int64_t m0, const int r, int64_t blk, int64_t N, int64_t K, const float *bias, const float *res) {
    enum { PARTS = 16 / VW };
    const int64_t G = K / 32;
    const uint8_t *qb = (const uint8_t *)w + blk * G * (bits == 4 ? 256 : 512);
    const uint16_t *sb = (const uint16_t *)ws + blk * G * 32;
    if (bits == 4 && r <= 4) {
        for (int part = 0; part < PARTS; part++) {
            fv acc[4];
            for (int i = 0; i < 4; i++) acc[i] = f_zero();
            for (int64_t g = 0; g < G; g++) {
                if (part == 0) {
                    prefetch(qb + g * 256 + AHEAD, 256);
                    prefetch(sb + g * 32 + AHEAD / 8, 64);  /* 64 bytes of scales a 256 of weights */
                }
                group_part(bits, xq, xd, xsum, qb, sb, m0, r, g, G, part, acc);
            }
            int64_t n0 = blk * 16 + part * VW;
            for (int i = 0; i < r; i++) store_out(y, (m0 + i) * N + n0, n0, acc[i], bias, res);
        }
        return;
    }
    fv acc[PARTS][ROWS];
    for (int part = 0; part < PARTS; part++)
        for (int i = 0; i < ROWS; i++) acc[part][i] = f_zero();
    for (int64_t g = 0; g < G; g++) {
        if (bits == 4) {
            prefetch(qb + g * 256 + AHEAD, 256);
            prefetch(sb + g * 32 + AHEAD / 8, 64);
        }
        for (int part = 0; part < PARTS; part++)
            group_part(bits, xq, xd, xsum, qb, sb, m0, r, g, G, part, acc[part]);
    }
    for (int part = 0; part < PARTS; part++) {
        int64_t n0 = blk * 16 + part * VW;
        for (int i = 0; i < r; i++) {
            int64_t at = (m0 + i) * N + n0;
            store_out(y, at, n0, bits == 4 ? acc[part][i] : f_mul(acc[part][i], f_load((const float *)ws + n0)),
                      bias, res);
        }
    }
}

/* --- 4-bit weights with 8-bit activations ---------------------------------------------------------
 * Batches and prefills are bound by arithmetic, not by the bytes of weights: there x quantised to
 * int8 (blocks of 32, scale max|x| / 127, as llama.cpp's Q8 activations) halves the multiply-adds, since
 * an unsigned nibble times a signed byte needs no widening: maddubs sums two such products into int16
 * (AVX2), VNNI's dpbusd four into int32 (AVX-512). Same weight layout as block_product; the runner
 * offers it as a separate format (int4-avx2-a8) so the measured choice weighs it, accuracy included.
 * No sum overflows: a pair is at most 2 * 15 * 127 = 3810, eight of them 30480 < 2^15. */
#ifdef __AVX512BW__
/* 512 bits: the low nibbles of chunks c and c + 1 interleaved by 16-bit words give each column its
 * four consecutive k (2c .. 2c + 3) in one 32-bit lane, which is what dpbusd multiplies with four
 * bytes of x broadcast. The unpacks work within 128-bit lanes, so the lanes hold columns 0-3, 8-11,
 * 4-7, 12-15: the scales are permuted the same way once per group, the sums back once per block. */
static inline __m512i quad(__m256i a, __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi16(a, b)), _mm256_unpackhi_epi16(a, b), 1);
}
static inline __m512 quad_order(__m512 v) { /* columns to or from the lanes' order (its own inverse) */
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15), v);
}
#ifdef __AVX512VNNI__
/* acc + dpbusd(w, the four bytes at x in every lane), the broadcast being the instruction's memory
 * operand ({1to16}): GCC broadcasts into a register first, an instruction more per product, and the
 * 4- and 8-bit products with 8-bit activations took 3-11% longer that way on a Zen 4 (same sums) */
typedef int32_t __attribute__((may_alias)) four_bytes;
static inline __m512i dpbusd_x(__m512i acc, __m512i w, const int8_t *x) {
    __asm__("vpdpbusd %1%{1to16%}, %2, %0" : "+v"(acc) : "m"(*(const four_bytes *)x), "v"(w));
    return acc;
}
#endif
static inline __m512i quad_dot(__m512i acc, __m512i w, const int8_t *x) { /* + 16 columns' 4 products */
#ifdef __AVX512VNNI__
    return dpbusd_x(acc, w, x);
#else
    int32_t four;
    memcpy(&four, x, 4);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(four)),
                                                   _mm512_set1_epi16(1)));
#endif
}
static inline __attribute__((always_inline)) void block_q4_x8(
        const int8_t *xq, const float *xd, const float *xsum, const uint8_t *w, const uint16_t *ws, float *y,
        int64_t m0, const int r, int64_t blk, int64_t N, int64_t K, const float *bias, const float *res) {
    const int64_t G = K / 32;
    const uint8_t *qb = w + blk * G * 256;
    const uint16_t *sb = ws + blk * G * 32;
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m512 acc[ROWS];
    for (int i = 0; i < ROWS; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *qg = qb + g * 256;
        prefetch(qg + AHEAD, 256);
        prefetch(sb + g * 32 + AHEAD / 8, 64);
        __m512i dot[ROWS];
        for (int i = 0; i < ROWS; i++) dot[i] = _mm512_setzero_si512();
        for (int c = 0; c < 8; c += 2) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(qg + 32 * c));
            __m256i b = _mm256_loadu_si256((const __m256i *)(qg + 32 * c + 32));
            __m512i lo = quad(_mm256_and_si256(a, low), _mm256_and_si256(b, low));
            __m512i hi = quad(_mm256_and_si256(_mm256_srli_epi16(a, 4), low), _mm256_and_si256(_mm256_srli_epi16(b, 4), low));
            for (int i = 0; i < r; i++) {
                const int8_t *xb = xq + ((m0 + i) * G + g) * 32;
                dot[i] = quad_dot(quad_dot(dot[i], lo, xb + 2 * c), hi, xb + 16 + 2 * c);
            }
        }
        __m512 scale = quad_order(f_half(sb + g * 32)), mn = quad_order(f_half(sb + g * 32 + 16));
        for (int i = 0; i < r; i++) {
            int64_t b = (m0 + i) * G + g;
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), _mm512_mul_ps(scale, _mm512_set1_ps(xd[b])), acc[i]);
            acc[i] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xsum[b]), acc[i]);
        }
    }
    int64_t n0 = blk * 16;
    for (int i = 0; i < r; i++) {
        int64_t at = (m0 + i) * N + n0;
        store_out(y, at, n0, quad_order(acc[i]), bias, res);
    }
}
#ifdef __AVX512VNNI__
#define HAVE_Q8X8 1
/* 8-bit weights with 8-bit activations, where the CPU has VNNI (without it this gains nothing: AVX2's
 * unsigned-times-signed maddubs needs the sign moved onto x, and the sums widened every chunk). The
 * weights are signed, dpbusd's first operand unsigned: w + 128 (a sign-bit flip) times x sums to
 * w.x + 128 * sum(x), and 128 times the block's sum (kept for the q4 mins anyway) is taken off. */
static inline __attribute__((always_inline)) void block_q8_x8(
        const int8_t *xq, const float *xd, const float *xsum, const int8_t *w, const float *ws, float *y,
        int64_t m0, const int r, int64_t blk, int64_t N, int64_t K, const float *bias, const float *res) {
    const int64_t G = K / 32;
    const int8_t *qb = w + blk * G * 512;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m512 acc[ROWS];
    for (int i = 0; i < ROWS; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        const int8_t *qg = qb + g * 512;
        prefetch(qg + AHEAD, 512);
        __m512i dot[ROWS];
        for (int i = 0; i < ROWS; i++) dot[i] = _mm512_setzero_si512();
        for (int p = 0; p < 16; p += 2) {
            __m512i v = quad(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qg + 32 * p)), flip),
                             _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qg + 32 * p + 32)), flip));
            for (int i = 0; i < r; i++) dot[i] = dpbusd_x(dot[i], v, xq + ((m0 + i) * G + g) * 32 + 2 * p);
        }
        for (int i = 0; i < r; i++) {
            int64_t b = (m0 + i) * G + g;
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), _mm512_set1_ps(xd[b]), acc[i]);
            acc[i] = _mm512_sub_ps(acc[i], _mm512_set1_ps(128.0f * xsum[b]));
        }
    }
    int64_t n0 = blk * 16;
    for (int i = 0; i < r; i++) {
        int64_t at = (m0 + i) * N + n0;
        store_out(y, at, n0, _mm512_mul_ps(quad_order(acc[i]), _mm512_loadu_ps(ws + n0)), bias, res);
    }
}
#endif
#else
/* 256 bits: a chunk as it is holds the 16 columns' k-pair as unsigned bytes; maddubs with the x pair
 * broadcast gives the 16 columns' int16 sums, kept in int16 over the whole group (X8_SUM bounds
 * them), then widened once: the widening and scaling were a quarter of the kernel's time when they
 * ran every half group. */
static inline __attribute__((always_inline)) void block_q4_x8(
        const int8_t *xq, const float *xd, const float *xsum, const uint8_t *w, const uint16_t *ws, float *y,
        int64_t m0, const int r, int64_t blk, int64_t N, int64_t K, const float *bias, const float *res) {
    const int64_t G = K / 32;
    const uint8_t *qb = w + blk * G * 256;
    const uint16_t *sb = ws + blk * G * 32;
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256 acc[ROWS][2];
    for (int i = 0; i < ROWS; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *qg = qb + g * 256;
        const uint16_t *sg = sb + g * 32;
        prefetch(qg + AHEAD, 256);
        prefetch(sg + AHEAD / 8, 64);
        __m256i s[ROWS];
        for (int i = 0; i < ROWS; i++) s[i] = _mm256_setzero_si256();
        for (int c = 0; c < 8; c++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(qg + 32 * c));
            __m256i lo = _mm256_and_si256(a, low), hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), low);
            for (int i = 0; i < r; i++) {
                const int8_t *xb = xq + ((m0 + i) * G + g) * 64; /* doubled pairs (X8_PAIRS) */
                int32_t p0, p1;
                memcpy(&p0, xb + 4 * c, 4);
                memcpy(&p1, xb + 32 + 4 * c, 4);
                s[i] = keep(_mm256_add_epi16(s[i], _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, _mm256_set1_epi32(p0)), _mm256_maddubs_epi16(hi, _mm256_set1_epi32(p1)))));
            }
        }
        __m256 sc0 = f_half(sg), sc1 = f_half(sg + 8), mn0 = f_half(sg + 16), mn1 = f_half(sg + 24);
        for (int i = 0; i < r; i++) {
            __m256 xs = _mm256_set1_ps(xd[(m0 + i) * G + g]), xm = _mm256_set1_ps(xsum[(m0 + i) * G + g]);
            __m256 v0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(s[i])));
            __m256 v1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(s[i], 1)));
            acc[i][0] = _mm256_fmadd_ps(mn0, xm, _mm256_fmadd_ps(v0, _mm256_mul_ps(sc0, xs), acc[i][0]));
            acc[i][1] = _mm256_fmadd_ps(mn1, xm, _mm256_fmadd_ps(v1, _mm256_mul_ps(sc1, xs), acc[i][1]));
        }
    }
    for (int i = 0; i < r; i++)
        for (int part = 0; part < 2; part++) {
            int64_t n0 = blk * 16 + 8 * part;
            store_out(y, (m0 + i) * N + n0, n0, acc[i][part], bias, res);
        }
}
#endif

#if defined(__AMX_INT8__) && defined(__AMX_TILE__) && defined(__AVX512BW__)
#define HAVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
/* --- AMX (Intel's tile multiply, Sapphire Rapids and later) ----------------------------------------
 * One instruction multiplies up to 16 rows of 32 bytes of x with 32 k x 16 columns of byte weights
 * and adds the int32 sums into a tile: a group's products for a 16-column block and 16 rows, which
 * the vector paths take 16 x 8 (int8 x) or 16 x 16 (int16 x) instructions for. A block's weights
 * are laid out as the tiles want them (per group 8 rows of 16 columns x 4 consecutive k: the chunks'
 * 16-bit words interleaved pairwise) once for all its passes of rows; each group's int32 sums are
 * then scaled exactly as the vector paths scale theirs, so a row's result is bit for bit the same
 * with AMX or without (and alone or in any batch). int16 x runs as two byte products, x = 256 * high
 * (signed) + low (unsigned): the same int32 sums. Used for calls of at least amx_min_rows rows
 * (chatloop_amx; lowbit.py sets it where the OS grants the tiles). */
#define AMX_ROWS 16
static int amx_min_rows = 0;

/* Sets the fewest rows a call takes AMX for (0: never; below 0: unchanged), first asking Linux for
 * the tiles' state (granted per process; without it, never). Returns the setting in force. */
int chatloop_amx(int min_rows) {
    if (min_rows > 0 && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */))
        min_rows = 0;
    if (min_rows >= 0) amx_min_rows = min_rows;
    return amx_min_rows;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) tile_config;

/* Tiles 0, 1 (and 5, 6: int16 x's low bytes): int32 sums, r rows of 16 columns, for even and odd
 * groups; 2, 3: x, r rows of 32 bytes (int16 x: high bytes, low bytes); 4, 7: the weights, even and
 * odd groups. */
static inline void amx_config(int r) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = t == 4 || t == 7 ? 8 : (uint8_t)r;
        c.colsb[t] = t == 2 || t == 3 ? 32 : 64;
    }
    /* (not _tile_loadconfig: GCC 12's reads the first 8 bytes as far as the compiler knows, which then
     * drops the stores to the rest) */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* Two 32-byte chunks (one 64-byte load: k-pairs p and p + 1, word j being column j's pair) as one
 * tile row: column j's four k (word j of each) in its 32-bit lane. */
static inline __m512i pairs_to_quads(__m512i z) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, z);
}

/* Block qb's weights as tiles, group after group (512 bytes each) in wt: once per block for all its
 * passes. A tile loaded from bytes the vector unit has just stored waits ~30 cycles for them, one
 * group after another (that made the first version slower than the vector paths at up to 8 rows);
 * stored a whole block earlier they are long in L1. */
static inline __attribute__((always_inline)) void amx_weights(
        const int bits, const int x8, const uint8_t *qb, const uint16_t *sb, int64_t G, uint8_t *wt) {
    const __m512i low = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80);
    for (int64_t g = 0; g < G; g++, wt += 512) {
        if (bits == 4) {
            const uint8_t *qg = qb + g * 256;
            prefetch(qg + AHEAD, 256);
            prefetch(sb + g * 32 + AHEAD / 8, 64);
            for (int c = 0; c < 8; c += 2) { /* chunks c, c + 1: k-pairs c, c + 1 low, c + 8, c + 9 high */
                __m512i z = _mm512_loadu_si512(qg + 32 * c);
                _mm512_store_si512(wt + 32 * c, pairs_to_quads(_mm512_and_si512(z, low)));
                _mm512_store_si512(wt + 256 + 32 * c, pairs_to_quads(_mm512_and_si512(_mm512_srli_epi16(z, 4), low)));
            }
        } else {
            const uint8_t *qg = qb + g * 512;
            prefetch(qg + AHEAD, 512);
            for (int p = 0; p < 16; p += 2) {
                __m512i v = pairs_to_quads(_mm512_loadu_si512(qg + 32 * p));
                _mm512_store_si512(wt + 32 * p, x8 ? _mm512_xor_si512(v, flip) : v); /* x8: block_q8_x8's w + 128 */
            }
        }
    }
}

/* The 16 output columns of block `blk` for rows m0..m0+r (r <= AMX_ROWS), its weights' tiles in wt
 * (amx_weights). A group's sums are stored from their tiles and scaled one group later (even and odd
 * groups take their own tiles and buffers): read back at once, they waited for the product. */
static inline __attribute__((always_inline)) void amx_block(
        const int bits, const int x8, const uint8_t *xq, const float *xd, const float *xsum, const uint8_t *wt,
        const void *ws, float *y, int64_t m0, int r, int64_t blk, int64_t N, int64_t M, int64_t K,
        const float *bias, const float *res) {
    const int64_t G = K / 32;
    const uint16_t *sb = (const uint16_t *)ws + blk * G * 32;
    const uint8_t *xa = xq + (x8 ? 0 : M * K) + m0 * K, *xl = xq + m0 * K; /* x8: int8 x; else high, low */
    __attribute__((aligned(64))) int32_t sums[2][2][AMX_ROWS * 16]; /* [parity][high (or x8), low] */
    __m512 acc[AMX_ROWS];
    for (int i = 0; i < AMX_ROWS; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g <= G; g++) {
        /* signed x (or int16 x's high bytes) and unsigned weights, but signed 8-bit ones with int16 x;
         * int16 x's low bytes unsigned (tile numbers are immediates: one branch per parity) */
#define AMX_PRODUCTS(C, CL, B, P)                                                     \
        _tile_loadd(B, wt + g * 512, 64);                                             \
        _tile_zero(C);                                                                \
        _tile_loadd(2, xa + g * 32, K);                                               \
        if (x8 || bits == 4) _tile_dpbsud(C, 2, B); else _tile_dpbssd(C, 2, B);      \
        _tile_stored(C, sums[P][0], 64);                                              \
        if (!x8) {                                                                    \
            _tile_zero(CL);                                                           \
            _tile_loadd(3, xl + g * 32, K);                                           \
            if (bits == 4) _tile_dpbuud(CL, 3, B); else _tile_dpbusd(CL, 3, B);      \
            _tile_stored(CL, sums[P][1], 64);                                         \
        }
        if (g < G) {
            if (g & 1) { AMX_PRODUCTS(1, 6, 7, 1) } else { AMX_PRODUCTS(0, 5, 4, 0) }
        }
#undef AMX_PRODUCTS
        if (g > 0) { /* the previous group's sums, scaled as block_product and block_q4/q8_x8 scale theirs */
            const int64_t h = g - 1;
            const int32_t *hi = sums[h & 1][0], *lo = sums[h & 1][1];
            const __m512 scale = bits == 4 ? f_half(sb + h * 32) : _mm512_setzero_ps();
            const __m512 mn = bits == 4 ? f_half(sb + h * 32 + 16) : _mm512_setzero_ps();
            for (int i = 0; i < r; i++) {
                int64_t b = (m0 + i) * G + h;
                __m512i dot = _mm512_load_si512(hi + 16 * i);
                if (!x8) dot = _mm512_add_epi32(_mm512_slli_epi32(dot, 8), _mm512_load_si512(lo + 16 * i));
                if (bits == 4) {
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, _mm512_set1_ps(xd[b])), acc[i]);
                    acc[i] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xsum[b]), acc[i]);
                } else {
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xd[b]), acc[i]);
                    if (x8) acc[i] = _mm512_sub_ps(acc[i], _mm512_set1_ps(128.0f * xsum[b])); /* block_q8_x8's */
                }
            }
        }
    }
    int64_t n0 = blk * 16;
    for (int i = 0; i < r; i++)
        store_out(y, (m0 + i) * N + n0, n0, bits == 4 ? acc[i] : _mm512_mul_ps(acc[i], _mm512_loadu_ps((const float *)ws + n0)),
                  bias, res);
}

/* product()'s loops with AMX passes of up to 16 rows (each thread configures its tiles for the pass's
 * rows, and releases them at the end: PyTorch's oneDNN configures its own). wt: this thread's room
 * for a block's weight tiles (K / 32 * 512 bytes; see quantize_into). */
static inline __attribute__((always_inline)) void amx_product(
        const int bits, const int x8, const void *xq, const float *xd, const float *xsum, const void *w,
        const void *ws, const float *bias, const float *res, float *y, int64_t M, int64_t N, int64_t K,
        uint8_t *wt) {
    const int64_t G = K / 32;
    int configured = 0;
    for (int64_t tile = 0; tile < M; tile += TILE) {
        int64_t tile_end = tile + TILE < M ? tile + TILE : M;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < N / 16; blk++) {
            amx_weights(bits, x8, (const uint8_t *)w + blk * G * (bits == 4 ? 256 : 512),
                        (const uint16_t *)ws + blk * G * 32, G, wt);
            for (int64_t m0 = tile; m0 < tile_end; m0 += AMX_ROWS) {
                int r = tile_end - m0 < AMX_ROWS ? (int)(tile_end - m0) : AMX_ROWS;
                if (r != configured) {
                    amx_config(r);
                    configured = r;
                }
                if (r == AMX_ROWS) /* (a constant: the rows' loops unroll, their sums stay in registers) */
                    amx_block(bits, x8, (const uint8_t *)xq, xd, xsum, wt, ws, y, m0, AMX_ROWS, blk, N, M, K, bias, res);
                else
                    amx_block(bits, x8, (const uint8_t *)xq, xd, xsum, wt, ws, y, m0, r, blk, N, M, K, bias, res);
            }
        }
    }
    if (configured) _tile_release();
}
#endif

/* y = rmsnorm?(x) @ W.T + bias + res, for either format. norm: NULL, or the RMS norm's weight [K]
 * (with eps) applied to x's rows first. glu: x is [M, 2K], gate then up, and the input is
 * silu(gate) * up (norm NULL). bias, res: NULL or [N] and [M, N]. N is a multiple of 16. scratch:
 * see quantize_into. Rows run in tiles of TILE, the team's threads over blocks of 16 output columns, rows in
 * passes of up to ROWS with the pass size a constant in each branch (the row loop unrolls and the
 * accumulators stay in registers).
 * Called by every thread of an OpenMP team (the worksharing loops inside bind to it; each ends in a
 * barrier, so y is complete on return), or by one thread outside any. */
static inline __attribute__((always_inline)) void product(
        const int bits, const float *x, const void *w, const void *ws, const float *bias, const float *res, float *y,
        void *scratch, int64_t M, int64_t N, int64_t K, const float *norm, float eps, int glu, const int x8) {
    void *xq;
    float *xd, *xsum;
#ifdef HAVE_AMX
    const int amx = amx_min_rows && M >= amx_min_rows;
#else
    const int amx = 0;
#endif
    quantize_into(scratch, x, M, K, norm, eps, glu, x8, amx && !x8, &xq, &xd, &xsum);
#ifdef HAVE_AMX
    if (amx) {
        uint8_t *tiles = (uint8_t *)(((uintptr_t)(xsum + M * (K / 32)) + 63) & ~(uintptr_t)63);
        amx_product(bits, x8, xq, xd, xsum, w, ws, bias, res, y, M, N, K,
                    tiles + omp_get_thread_num() * (K / 32) * 512);
        return;
    }
#endif
    const int64_t blocks = N / 16;
    for (int64_t tile = 0; tile < M; tile += TILE) {
        int64_t tile_end = tile + TILE < M ? tile + TILE : M;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            for (int64_t m0 = tile; m0 < tile_end; m0 += ROWS) {
                int r = tile_end - m0 < ROWS ? (int)(tile_end - m0) : ROWS;
#ifdef HAVE_Q8X8
#define PASS_X8(R) if (bits == 4) block_q4_x8((const int8_t *)xq, xd, xsum, w, ws, y, m0, R, blk, N, K, bias, res); \
                   else block_q8_x8((const int8_t *)xq, xd, xsum, w, ws, y, m0, R, blk, N, K, bias, res)
#else
#define PASS_X8(R) block_q4_x8((const int8_t *)xq, xd, xsum, w, ws, y, m0, R, blk, N, K, bias, res)
#endif
#define PASS(R) do { if (x8) { PASS_X8(R); } \
                     else block_product(bits, (const int16_t *)xq, xd, xsum, w, ws, y, m0, R, blk, N, K, bias, res); \
                } while (0)
                switch (r) {
                    case 1: PASS(1); break; case 2: PASS(2); break; case 3: PASS(3); break;
                    case 4: PASS(4); break; case 5: PASS(5); break; case 6: PASS(6); break;
                    case 7: PASS(7); break; default: PASS(8);
                }
#undef PASS
#undef PASS_X8
            }
        }
    }
}

void chatloop_q4_mm(const float *x, const uint8_t *q, const uint16_t *sm, const float *bias, const float *res,
                    float *y, void *scratch, int64_t M, int64_t N, int64_t K, const float *norm, float eps,
                    int glu, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    product(4, x, q, sm, bias, res, y, scratch, M, N, K, norm, eps, glu, 0);
}

/* The same with x quantised to int8 (block_q4_x8). */
void chatloop_q4x8_mm(const float *x, const uint8_t *q, const uint16_t *sm, const float *bias, const float *res,
                      float *y, void *scratch, int64_t M, int64_t N, int64_t K, const float *norm, float eps,
                      int glu, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    product(4, x, q, sm, bias, res, y, scratch, M, N, K, norm, eps, glu, 1);
}

void chatloop_q8_mm(const float *x, const int8_t *q, const float *s, const float *bias, const float *res,
                    float *y, void *scratch, int64_t M, int64_t N, int64_t K, const float *norm, float eps,
                    int glu, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    product(8, x, q, s, bias, res, y, scratch, M, N, K, norm, eps, glu, 0);
}

#ifdef HAVE_Q8X8
/* The same with x quantised to int8 (block_q8_x8; only in a build with AVX-512 VNNI). */
void chatloop_q8x8_mm(const float *x, const int8_t *q, const float *s, const float *bias, const float *res,
                      float *y, void *scratch, int64_t M, int64_t N, int64_t K, const float *norm, float eps,
                      int glu, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    product(8, x, q, s, bias, res, y, scratch, M, N, K, norm, eps, glu, 1);
}
#endif

/* The key/value caches: float16 (as llama.cpp's default cache), or int8 (kv8) in rows of d bytes
 * followed by d / 32 float32 scales, one per block of 32 (llama.cpp's q8_0 KV cache: 56% of the
 * bytes; with long histories a step reads more cache than weights, and attention is bound by
 * reading it). A position's row of one head starts KV_ROW bytes after the last. */
#define KV_ROW(kv8, d) ((kv8) ? (d) + (d) / 8 : 2 * (d))
/* Dimensions k..k+7 of the cached vector at position pos of a head's cache c, as float32. */
static inline __attribute__((always_inline)) __m256 kv_load(const int kv8, const char *c, int64_t pos, int64_t k,
                                                            int64_t d) {
    const char *row = c + pos * KV_ROW(kv8, d);
    if (!kv8) return half8((const uint16_t *)row + k);
    float s;
    memcpy(&s, row + d + (k / 32) * 4, 4);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + k)))),
                         _mm256_set1_ps(s));
}
#ifdef __AVX512F__
/* Dimensions k..k+15 (k a multiple of 16: one int8 block's half) as kv_load, on 512 bits. */
static inline __attribute__((always_inline)) __m512 kv_load16(const int kv8, const char *c, int64_t pos, int64_t k,
                                                              int64_t d) {
    const char *row = c + pos * KV_ROW(kv8, d);
    if (!kv8) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k)));
    float s;
    memcpy(&s, row + d + (k / 32) * 4, 4);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + k)))),
                         _mm512_set1_ps(s));
}
#endif

/* A head's vector x [d] into an int8 cache row: each block of 32 rounded to int8 with the scale
 * max|x| / 127 (as quantize_rows rounds activations), the scales after the d bytes. */
static inline void kv_store8(int8_t *row, const float *x, int64_t d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < d / 32; b++) {
        __m256 v[4], mx = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + 32 * b + 8 * j);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[j]));
        }
        float s = hmax(mx) / 127.0f;
        __m256 inv = _mm256_set1_ps(s > 0.0f ? 1.0f / s : 0.0f);
        __m256i i[4];
        for (int j = 0; j < 4; j++) i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(row + 32 * b), p);
        memcpy(row + d + 4 * b, &s, 4);
    }
}

/* Scores s[0..L) replaced by exp(s - max(s)), in place; returns their sum (softmax's denominator), and
 * the max at *max_out where that is not NULL. */
static inline float softmax_exp(float *s, int64_t L, float *max_out) {
    int64_t l;
    float mx = -INFINITY;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (l = 0; l + 8 <= L; l += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + l));
    for (; l < L; l++) mx = s[l] > mx ? s[l] : mx;
    mx = hmax(vm) > mx ? hmax(vm) : mx;
    if (max_out) *max_out = mx;
    __m256 vmx = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
    for (l = 0; l + 8 <= L; l += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + l), vmx));
        _mm256_storeu_ps(s + l, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum(vsum);
    for (; l < L; l++) {
        float tail[8] = {s[l] - mx};
        float e = _mm256_cvtss_f32(exp8(_mm256_loadu_ps(tail)));
        s[l] = e;
        sum += e;
    }
    return sum;
}

/* One row's attention for n (<= 8; a constant after inlining) query heads that share a key/value head:
 * each key and value is read and widened from the cache once for all n. qh: the first head's query (the
 * n are consecutive), kh, vh: the key/value head's caches (kv8: int8 rows), s: n * stride floats of
 * scores, o: the first head's output. stats: NULL, or where each head's max score and softmax sum go
 * (2 floats a head), for a part of the positions whose output is combined with the others' after. */
static inline __attribute__((always_inline)) void attend_group(
        const int n, const int kv8, const float *qh, const char *kh, const char *vh, float *o, float *s,
        int64_t stride, int64_t L, int64_t d, float scale, float *stats) {
    float sum[8];
    /* scores, P positions at a time (n * P accumulators, at most 12): their sums reduced together */
    const int P = n <= 3 ? 4 : n <= 6 ? 2 : 1;
    int64_t l = 0;
    for (; l + P <= L; l += P) {
        /* the cache was written a step ago and the weights since have pushed it out of the caches:
         * the keys 16 positions on, and these positions' values (read next), are asked for now
         * (8 rows at ~100 positions: 1.7 -> 1.4 ms of attention a step) */
        prefetch(kh + (l + 16) * KV_ROW(kv8, d), (int)(P * KV_ROW(kv8, d)));
        prefetch(vh + l * KV_ROW(kv8, d), (int)(P * KV_ROW(kv8, d)));
        __m256 acc[8][4];
        for (int h = 0; h < n; h++)
            for (int j = 0; j < P; j++) acc[h][j] = _mm256_setzero_ps();
        for (int64_t k = 0; k < d; k += 8) {
            __m256 qv[8];
            for (int h = 0; h < n; h++) qv[h] = _mm256_loadu_ps(qh + h * d + k);
            for (int j = 0; j < P; j++) {
                __m256 key = kv_load(kv8, kh, l + j, k, d);
                for (int h = 0; h < n; h++) acc[h][j] = _mm256_fmadd_ps(qv[h], key, acc[h][j]);
            }
        }
        for (int h = 0; h < n; h++) {
            if (P == 4) {
                __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(acc[h][0], acc[h][1]), _mm256_hadd_ps(acc[h][2], acc[h][3]));
                __m128 r = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
                _mm_storeu_ps(s + h * stride + l, _mm_mul_ps(r, _mm_set1_ps(scale)));
            } else {
                for (int j = 0; j < P; j++) s[h * stride + l + j] = hsum(acc[h][j]) * scale;
            }
        }
    }
    for (; l < L; l++) {
        __m256 acc[8];
        for (int h = 0; h < n; h++) acc[h] = _mm256_setzero_ps();
        for (int64_t k = 0; k < d; k += 8) {
            __m256 key = kv_load(kv8, kh, l, k, d);
            for (int h = 0; h < n; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qh + h * d + k), key, acc[h]);
        }
        for (int h = 0; h < n; h++) s[h * stride + l] = hsum(acc[h]) * scale;
    }
    for (int h = 0; h < n; h++) {
        sum[h] = softmax_exp(s + h * stride, L, stats ? stats + 2 * h : NULL);
        if (stats) stats[2 * h + 1] = sum[h];
    }
    int64_t k0 = 0;
#ifdef __AVX512F__
    /* with AVX-512, 16 dimensions a vector and 32 registers: NV16 vectors for all n heads at once (the
     * same products in the same order as below, so the same sums bit for bit; 8 rows' attention at
     * ~100 positions took ~25% less) */
    const int NV16 = n <= 6 ? 4 : 2;
    for (; d % 16 == 0 && k0 + 16 * NV16 <= d; k0 += 16 * NV16) {
        __m512 acc[8][4];
        for (int h = 0; h < n; h++)
            for (int j = 0; j < NV16; j++) acc[h][j] = _mm512_setzero_ps();
        for (int64_t p = 0; p < L; p++) {
            __m512 v[4];
            for (int j = 0; j < NV16; j++) v[j] = kv_load16(kv8, vh, p, k0 + 16 * j, d);
            for (int h = 0; h < n; h++) {
                __m512 sp = _mm512_set1_ps(s[h * stride + p]);
                for (int j = 0; j < NV16; j++) acc[h][j] = _mm512_fmadd_ps(sp, v[j], acc[h][j]);
            }
        }
        for (int h = 0; h < n; h++)
            for (int j = 0; j < NV16; j++)
                _mm512_storeu_ps(o + h * d + k0 + 16 * j, _mm512_mul_ps(acc[h][j], _mm512_set1_ps(1.0f / sum[h])));
    }
#endif
    /* the values, NV vectors of dimensions at a time for all n heads (n * NV accumulators: at most 8),
     * then one at a time where d leaves a remainder */
    const int NV = n <= 2 ? 4 : n <= 4 ? 2 : 1;
    for (; k0 + 8 * NV <= d; k0 += 8 * NV) {
        __m256 acc[8][4];
        for (int h = 0; h < n; h++)
            for (int j = 0; j < NV; j++) acc[h][j] = _mm256_setzero_ps();
        for (int64_t p = 0; p < L; p++) {
            __m256 v[4];
            for (int j = 0; j < NV; j++) v[j] = kv_load(kv8, vh, p, k0 + 8 * j, d);
            for (int h = 0; h < n; h++) {
                __m256 sp = _mm256_set1_ps(s[h * stride + p]);
                for (int j = 0; j < NV; j++) acc[h][j] = _mm256_fmadd_ps(sp, v[j], acc[h][j]);
            }
        }
        for (int h = 0; h < n; h++)
            for (int j = 0; j < NV; j++)
                _mm256_storeu_ps(o + h * d + k0 + 8 * j, _mm256_mul_ps(acc[h][j], _mm256_set1_ps(1.0f / sum[h])));
    }
    for (; k0 < d; k0 += 8) {
        __m256 acc[8];
        for (int h = 0; h < n; h++) acc[h] = _mm256_setzero_ps();
        for (int64_t p = 0; p < L; p++) {
            __m256 v = kv_load(kv8, vh, p, k0, d);
            for (int h = 0; h < n; h++) acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(s[h * stride + p]), v, acc[h]);
        }
        for (int h = 0; h < n; h++) _mm256_storeu_ps(o + h * d + k0, _mm256_mul_ps(acc[h], _mm256_set1_ps(1.0f / sum[h])));
    }
}

/* Positions p0..p1 of row i's attention for the query heads of key/value head kv: outputs at o + h * d
 * for query head h, and with stats (NULL: the whole row) each head's max score and softmax sum at
 * stats + 2 * h. s: this thread's 8 * stride floats of scores. */
static inline void row_part(const float *q, int64_t q_stride, const void *kc, const void *vc, int kv8, float *o_row,
                            float *stats, const int64_t *slots, int64_t first_slot, int64_t i, int64_t kv, int64_t p0,
                            int64_t p1, int64_t H, int64_t KV, int64_t cap, int64_t d, float scale, float *s,
                            int64_t stride) {
    const int64_t G = H / KV, L = p1 - p0, slot = slots ? slots[i] : first_slot + i;
    const char *kh = (const char *)kc + ((slot * KV + kv) * cap + p0) * KV_ROW(kv8, d);
    const char *vh = (const char *)vc + ((slot * KV + kv) * cap + p0) * KV_ROW(kv8, d);
    for (int64_t h0 = 0; h0 < G; h0 += 8) {
        int64_t h = kv * G + h0;
        const float *qh = q + i * q_stride + h * d;
        float *o = o_row + h * d, *st = stats ? stats + 2 * h : NULL;
#define GROUP(N) if (kv8) attend_group(N, 1, qh, kh, vh, o, s, stride, L, d, scale, st); \
                 else attend_group(N, 0, qh, kh, vh, o, s, stride, L, d, scale, st)
        switch (G - h0 < 8 ? G - h0 : 8) {
            case 1: GROUP(1); break; case 2: GROUP(2); break; case 3: GROUP(3); break; case 4: GROUP(4); break;
            case 5: GROUP(5); break; case 6: GROUP(6); break; case 7: GROUP(7); break; default: GROUP(8);
        }
#undef GROUP
    }
}

/* Row i's attention for the query heads of key/value head kv (one task of attention() below); s: this
 * thread's 8 * max_len floats of scores. */
static inline void row_task(const float *q, int64_t q_stride, const void *kc, const void *vc, int kv8, float *out,
                            const int64_t *slots, int64_t first_slot, const int64_t *lens, int64_t i, int64_t kv,
                            int64_t H, int64_t KV, int64_t cap, int64_t d, float scale, float *s, int64_t max_len) {
    row_part(q, q_stride, kc, vc, kv8, out + i * H * d, NULL, slots, first_slot, i, kv, 0, lens[i], H, KV, cap, d,
             scale, s, max_len);
}

/* Attention for one query per row and head, over that row's own history in the cache: a decoding
 * step's rows (each the next token of its sequence), or a prefill's tokens once their keys and values
 * are in the cache (each a row of its prompt's slot, seeing the positions up to its own).
 *   q    [b, q_stride] float32: row i's head h at q + i * q_stride + h * d
 *   kc, vc [slots, KV, cap, d] float16 caches, or int8 ones with kv8 (rows of KV_ROW bytes); row i
 *        reads slot slots[i] (slots NULL: first_slot + i) and sees lens[i] positions (with 8 rows and
 *        a few hundred positions the cache, not the weights, is most of what a step reads)
 *   out  [b, H * d]; scores: attention_floats() of scratch
 * Query head h reads key/value head h / (H / KV) (grouped-query attention). d is a multiple of 8.
 * PyTorch's SDPA spends ~50 us a layer setting up its flash kernel for one query; this is ~5.
 * A task is a row's query heads of one key/value head over up to SPLIT of its positions: where rows
 * are longer, each part keeps its output, max score and softmax sum, and a second pass weighs the
 * parts together (as flash-decoding does). One row of a 6,000-token chat had been 3 tasks (the default
 * model's key/value heads) on 2 threads, one idle a third of the time.
 * Called by every thread of a team (or one thread outside any), as product(). */
#define SPLIT 1024
static inline int64_t attention_floats(int64_t threads, int64_t max_len, int64_t b, int64_t H, int64_t d) {
    const int64_t parts = (max_len + SPLIT - 1) / SPLIT, stride = max_len < SPLIT ? max_len : SPLIT;
    return threads * 8 * stride + (parts > 1 ? b * parts * H * (d + 2) : 0);
}
static void attention(const float *q, int64_t q_stride, const void *kc, const void *vc, int kv8, float *out,
                      const int64_t *slots, int64_t first_slot, const int64_t *lens, int64_t b, int64_t H,
                      int64_t KV, int64_t cap, int64_t d, float scale, float *scores, int64_t max_len) {
    const int64_t parts = (max_len + SPLIT - 1) / SPLIT, stride = max_len < SPLIT ? max_len : SPLIT;
    float *s = scores + (int64_t)omp_get_thread_num() * 8 * stride;
    if (parts == 1) {
        /* one task per row and key/value head (its query heads in groups of up to 8); a prefill's rows
         * see histories of different lengths, so the tasks are handed out as threads come free */
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < b * KV; task++)
            row_task(q, q_stride, kc, vc, kv8, out, slots, first_slot, lens, task / KV, task % KV, H, KV, cap, d,
                     scale, s, stride);
        return;
    }
    /* part c of row i: outputs [H][d] at part_out + (i * parts + c) * H * d, (max, sum) pairs [H] at
     * part_stats + (i * parts + c) * H * 2 */
    float *part_out = scores + omp_get_num_threads() * 8 * stride, *part_stats = part_out + b * parts * H * d;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < b * KV * parts; task++) {
        const int64_t i = task / (KV * parts), kv = task / parts % KV, c = task % parts, p0 = c * SPLIT;
        if (p0 >= lens[i]) continue;
        const int64_t p1 = p0 + SPLIT < lens[i] ? p0 + SPLIT : lens[i], at = i * parts + c;
        row_part(q, q_stride, kc, vc, kv8, part_out + at * H * d, part_stats + at * H * 2, slots, first_slot, i, kv,
                 p0, p1, H, KV, cap, d, scale, s, stride);
    }
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < b * H; unit++) {
        const int64_t i = unit / H, h = unit % H, n = (lens[i] + SPLIT - 1) / SPLIT;
        float mx = -INFINITY, total = 0.0f, w[64];
        for (int64_t c = 0; c < n; c++) {
            float m = part_stats[((i * parts + c) * H + h) * 2];
            mx = m > mx ? m : mx;
        }
        for (int64_t c = 0; c < n; c++) {
            const float *st = part_stats + ((i * parts + c) * H + h) * 2;
            w[c % 64] = st[1] * expf(st[0] - mx);  /* (a part's output is its own softmax's) */
            total += w[c % 64];
        }
        float *o = out + i * H * d + h * d;
        for (int64_t k = 0; k < d; k += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t c = 0; c < n; c++) {
                const float *st = part_stats + ((i * parts + c) * H + h) * 2;
                float wc = n <= 64 ? w[c] : st[1] * expf(st[0] - mx);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(wc / total),
                                      _mm256_loadu_ps(part_out + ((i * parts + c) * H + h) * d + k), acc);
            }
            _mm256_storeu_ps(o + k, acc);
        }
    }
}

/* --- A prompt's tokens, tiled ----------------------------------------------------------------------
 * A prefill's rows come in runs: the tokens of one prompt, in its slot at consecutive positions. Row by
 * row (attention()), each token reads and widens its whole history for its few query heads: on a Zen 5
 * that ran at 47 GMAC/s, and a chat turn of 36 tokens continuing 464 cached positions spent 12 of its
 * 31 ms of prefill there. Here a run's keys and values are widened to float32 once (the keys
 * transposed, VW positions a tile), and a task takes up to QV query vectors (some tokens times the query
 * heads of one key/value head) over them: each key tile is loaded once for all of them, each vector's
 * products with it go to one register of VW positions' scores, and no horizontal sums are left. */
#define RUN_MIN 4     /* runs of fewer tokens go row by row */
#define QV 12         /* query vectors a task: their score sums, a key tile and a broadcast fit the registers */
#define PV_NV 4       /* the values' pass: this many vectors of dimensions at once, */
#if VW == 16
#define PV_ROWS 6     /* for this many query vectors (6 x 4 sums and 4 values in 32 registers) */
#else
#define PV_ROWS 2     /* (2 x 4 sums and 4 values in 16) */
#endif

typedef struct {
    int64_t row, n, slot, first; /* rows row..row + n - 1, in slot `slot`; row `row` sees `first` positions */
    float *k, *v;                /* widened: keys [KV][tiles][d][VW] (transposed), values [KV][L][d] */
} att_run;

static inline int64_t att_tiles(int64_t L) { return (L + VW - 1) / VW; }

/* The end of the run of rows starting at row i (one past its last row). */
static int64_t run_end(const int64_t *slots, int64_t first_slot, const int64_t *lens, int64_t b, int64_t i) {
    const int64_t slot = slots ? slots[i] : first_slot + i;
    int64_t j = i + 1;
    while (j < b && (slots ? slots[j] : first_slot + j) == slot && lens[j] == lens[j - 1] + 1) j++;
    return j;
}

/* Floats of one run's widened keys and values, and of one thread's room (scores and transposed queries
 * for the tiled tasks, or attend_group's scores for the others). */
static inline int64_t run_floats(int64_t L, int64_t KV, int64_t d) { return KV * (att_tiles(L) * VW * d + L * d); }
static inline int64_t thread_floats(int64_t max_len, int64_t d) {
    int64_t tiled = QV * (att_tiles(max_len) * VW + d), rows = 8 * max_len;
    return (tiled > rows ? tiled : rows) + 16;
}

/* Positions p0..p1 of run u's keys and values of key/value head kv, widened to float32 (positions past
 * the run's last one, up to a whole tile, are zero keys). */
#define WIDEN 256 /* positions a task of widening (a multiple of VW) */
static void widen_run(const att_run *u, int64_t kv, int64_t p0, int64_t p1, const void *kc, const void *vc, int kv8,
                      int64_t KV, int64_t cap, int64_t d) {
    const int64_t L = u->first + u->n - 1, tiles = att_tiles(L);
    const char *kh = (const char *)kc + (u->slot * KV + kv) * cap * KV_ROW(kv8, d);
    const char *vh = (const char *)vc + (u->slot * KV + kv) * cap * KV_ROW(kv8, d);
    float *kt = u->k + kv * tiles * VW * d, *vv = u->v + kv * L * d;
    for (int64_t p = p0; p < p1 && p < tiles * VW; p++) {
        float *col = kt + (p / VW) * d * VW + p % VW;
        for (int64_t k = 0; k < d; k += 8) {
            float key[8] = {0};
            if (p < L) {
                _mm256_storeu_ps(key, kv_load(kv8, kh, p, k, d));
                _mm256_storeu_ps(vv + p * d + k, kv_load(kv8, vh, p, k, d));
            }
            for (int j = 0; j < 8; j++) col[(k + j) * VW] = key[j];
        }
    }
}

/* The scores of R query vectors (qt: transposed, qt[k * R + r]) over `tiles` key tiles, times scale,
 * into S (vector r's at S + r * stride). */
static inline __attribute__((always_inline)) void tile_scores(const int R, const float *qt, const float *kt,
                                                              int64_t tiles, int64_t d, float scale, float *S,
                                                              int64_t stride) {
    for (int64_t j = 0; j < tiles; j++) {
        const float *t = kt + j * d * VW;
        fv acc[QV];
        for (int r = 0; r < R; r++) acc[r] = f_zero();
        for (int64_t k = 0; k < d; k++) {
            fv key = f_load(t + k * VW);
            for (int r = 0; r < R; r++) acc[r] = f_fmadd(f_set1(qt[k * R + r]), key, acc[r]);
        }
        for (int r = 0; r < R; r++) f_store(S + r * stride + j * VW, f_mul(acc[r], f_set1(scale)));
    }
}

/* Dimensions c.. (NV vectors) of RB query vectors' outputs: the weights p[i][0..L) times the values
 * vv [L][d], scaled by inv[i], stored at o[i] + c. */
static inline __attribute__((always_inline)) void tile_values(const int RB, const int NV, const float *const *p,
                                                              const float *vv, int64_t L, int64_t d, int64_t c,
                                                              const float *inv, float *const *o) {
    fv acc[PV_ROWS][PV_NV];
    for (int i = 0; i < RB; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = f_zero();
    for (int64_t l = 0; l < L; l++) {
        fv v[PV_NV];
        for (int j = 0; j < NV; j++) v[j] = f_load(vv + l * d + c + j * VW);
        for (int i = 0; i < RB; i++) {
            fv w = f_set1(p[i][l]);
            for (int j = 0; j < NV; j++) acc[i][j] = f_fmadd(w, v[j], acc[i][j]);
        }
    }
    for (int i = 0; i < RB; i++)
        for (int j = 0; j < NV; j++) f_store(o[i] + c + j * VW, f_mul(acc[i][j], f_set1(inv[i])));
}

/* One tiled task: run u's tokens t0..t0 + nt - 1 with query heads h0..h0 + nh - 1 of key/value head kv
 * (nh * nt <= QV vectors). room: this thread's thread_floats(). */
static void run_task(const att_run *u, int64_t kv, int64_t h0, int64_t nh, int64_t t0, int64_t nt,
                     const float *q, int64_t q_stride, float *out, int64_t H, int64_t KV, int64_t d, float scale,
                     float *room, int64_t max_len) {
    const int R = (int)(nh * nt);
    const int64_t G = H / KV, L = u->first + u->n - 1, Lb = u->first + t0 + nt - 1, tiles = att_tiles(Lb);
    const int64_t stride = att_tiles(max_len) * VW;
    float *qt = room, *S = room + QV * d;
    const float *p[QV];
    float *o[QV], inv[QV];
    for (int r = 0; r < R; r++) {
        int64_t t = t0 + r / nh, h = kv * G + h0 + r % nh, row = u->row + t;
        const float *x = q + row * q_stride + h * d;
        for (int64_t k = 0; k < d; k++) qt[k * R + r] = x[k];
        o[r] = out + row * H * d + h * d;
        p[r] = S + r * stride;
    }
    const float *kt = u->k + kv * att_tiles(L) * VW * d;
#define SCORES(N) tile_scores(N, qt, kt, tiles, d, scale, S, stride)
    switch (R) {
        case 1: SCORES(1); break; case 2: SCORES(2); break; case 3: SCORES(3); break; case 4: SCORES(4); break;
        case 5: SCORES(5); break; case 6: SCORES(6); break; case 7: SCORES(7); break; case 8: SCORES(8); break;
        case 9: SCORES(9); break; case 10: SCORES(10); break; case 11: SCORES(11); break; default: SCORES(12);
    }
#undef SCORES
    for (int r = 0; r < R; r++) { /* token t sees first + t positions: the rest weigh nothing */
        int64_t len = u->first + t0 + r / nh;
        float *s = S + r * stride;
        inv[r] = 1.0f / softmax_exp(s, len, NULL);
        for (int64_t l = len; l < Lb; l++) s[l] = 0.0f;
    }
    const float *vv = u->v + kv * L * d;
    for (int r0 = 0; r0 < R; r0 += PV_ROWS) {
        const int rb = R - r0 < PV_ROWS ? R - r0 : PV_ROWS;
        int64_t c = 0;
#define VALUES(N, NV) tile_values(N, NV, p + r0, vv, Lb, d, c, inv + r0, o + r0)
#if PV_ROWS > 2
#define PASS(NV) switch (rb) { \
            case 1: VALUES(1, NV); break; case 2: VALUES(2, NV); break; case 3: VALUES(3, NV); break; \
            case 4: VALUES(4, NV); break; case 5: VALUES(5, NV); break; default: VALUES(6, NV); }
#else
#define PASS(NV) if (rb == 1) VALUES(1, NV); else VALUES(2, NV)
#endif
        for (; c + PV_NV * VW <= d; c += PV_NV * VW) PASS(PV_NV);
        for (; c + VW <= d; c += VW) PASS(1);
#undef PASS
#undef VALUES
        for (; c < d; c += 8) { /* a head size that is not a whole number of vectors (VW 16, d 72) */
            for (int i = r0; i < r0 + rb; i++) {
                __m256 acc = _mm256_setzero_ps();
                for (int64_t l = 0; l < Lb; l++)
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(p[i][l]), _mm256_loadu_ps(vv + l * d + c), acc);
                _mm256_storeu_ps(o[i] + c, _mm256_mul_ps(acc, _mm256_set1_ps(inv[i])));
            }
        }
    }
}

/* The size of chatloop_decode_step's scores scratch in bytes (attention()'s). */
int64_t chatloop_decode_scores(int threads, int64_t max_len, int64_t b, int64_t H, int64_t d) {
    return 4 * attention_floats(threads, max_len, b, H, d);
}

/* The size of chatloop_attention's scratch in bytes, for these rows. */
int64_t chatloop_attention_scratch(const int64_t *slots, const int64_t *lens, int64_t b, int64_t H, int64_t KV,
                                   int64_t d, int threads) {
    int64_t floats = 0, max_len = 0;
    for (int64_t i = 0; i < b; i++) max_len = lens[i] > max_len ? lens[i] : max_len;
    for (int64_t i = 0, j; i < b; i = j) {
        j = run_end(slots, 0, lens, b, i);
        if (j - i >= RUN_MIN) floats += run_floats(lens[j - 1], KV, d);
    }
    floats += threads * thread_floats(max_len, d);
    const int64_t rows = attention_floats(threads, max_len, b, H, d); /* no runs: attention() */
    return 4 * (floats > rows ? floats : rows) + 64;
}

/* attention() for rows given from Python: runs of RUN_MIN or more tokens of one prompt go tiled, the
 * other rows (short runs) row by row; without runs (a decoding step's rows) it is attention().
 * scratch: chatloop_attention_scratch() bytes. */
void chatloop_attention(const float *q, int64_t q_stride, const void *kc, const void *vc, int kv8, float *out,
                        const int64_t *slots, int64_t first_slot, const int64_t *lens, int64_t b, int64_t H,
                        int64_t KV, int64_t cap, int64_t d, float scale, float *scratch, int64_t max_len,
                        int threads) {
    (void)first_slot;  /* rows from Python name their slots */
    const int64_t G = H / KV, nh = G < QV ? G : QV, chunks = (G + nh - 1) / nh, per_block = QV / nh;
    const int64_t room = thread_floats(max_len, d);
    att_run *runs = malloc(sizeof(att_run) * (size_t)(b / RUN_MIN + 1));
    int64_t *rest = malloc(sizeof(int64_t) * (size_t)(b + 1)), *first_task = malloc(sizeof(int64_t) * (size_t)(b / RUN_MIN + 2));
    if (!runs || !rest || !first_task) { /* no room for the bookkeeping: every row by itself */
        free(runs); free(rest); free(first_task);
#pragma omp parallel num_threads(threads) if (threads > 1 && b * KV > 1)
        {
            float *mine = scratch + (int64_t)omp_get_thread_num() * room;
#pragma omp for schedule(dynamic)
            for (int64_t task = 0; task < b * KV; task++)
                row_task(q, q_stride, kc, vc, kv8, out, slots, 0, lens, task / KV, task % KV, H, KV, cap, d, scale,
                         mine, max_len);
        }
        return;
    }
    int64_t n_runs = 0, n_rest = 0;
    float *widened = scratch + threads * room;
    first_task[0] = 0;
    for (int64_t i = 0, j; i < b; i = j) {
        j = run_end(slots, 0, lens, b, i);
        if (j - i < RUN_MIN) {
            for (int64_t r = i; r < j; r++) rest[n_rest++] = r;
            continue;
        }
        att_run *u = runs + n_runs;
        u->row = i, u->n = j - i, u->slot = slots[i], u->first = lens[i];
        u->k = widened, u->v = widened + KV * att_tiles(lens[j - 1]) * VW * d;
        widened += run_floats(lens[j - 1], KV, d);
        first_task[n_runs + 1] = first_task[n_runs] + KV * chunks * ((u->n + per_block - 1) / per_block);
        n_runs++;
    }
    if (n_runs == 0) { /* a decoding step's rows: long ones split over their positions */
        free(runs); free(rest); free(first_task);
#pragma omp parallel num_threads(threads) if (threads > 1)
        attention(q, q_stride, kc, vc, kv8, out, slots, 0, lens, b, H, KV, cap, d, scale, scratch, max_len);
        return;
    }
    const int64_t tiled = first_task[n_runs], tasks = tiled + n_rest * KV, parts = (max_len + WIDEN - 1) / WIDEN;
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
    {
        float *mine = scratch + (int64_t)omp_get_thread_num() * room;
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < n_runs * KV * parts; task++) {
            const att_run *u = runs + task / (KV * parts);
            int64_t p0 = task % parts * WIDEN;
            if (p0 < u->first + u->n - 1)
                widen_run(u, task / parts % KV, p0, p0 + WIDEN, kc, vc, kv8, KV, cap, d);
        }
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            if (task >= tiled) {
                int64_t at = task - tiled;
                row_task(q, q_stride, kc, vc, kv8, out, slots, 0, lens, rest[at / KV], at % KV, H, KV, cap, d,
                         scale, mine, max_len);
                continue;
            }
            int64_t u = 0;
            while (first_task[u + 1] <= task) u++;
            const att_run *run = runs + u;
            int64_t at = task - first_task[u], blocks = (run->n + per_block - 1) / per_block;
            int64_t kv = at / (chunks * blocks), chunk = at / blocks % chunks, blk = at % blocks;
            int64_t h0 = chunk * nh, t0 = blk * per_block;
            run_task(run, kv, h0, G - h0 < nh ? G - h0 : nh, t0, run->n - t0 < per_block ? run->n - t0 : per_block,
                     q, q_stride, out, H, KV, d, scale, mine, max_len);
        }
    }
    free(runs);
    free(rest);
    free(first_task);
}

/* --- A whole decoding step in one call ------------------------------------------------------------
 * Each projection is one call already; what stayed in Python per layer was the glue between them
 * (views, the rotary embedding, the cache writes, four ctypes calls and their argument checks):
 * ~85 us a layer: on the default model (30 layers) a one-row step took 7.4 ms that way, 4.8 here.
 * Here the runner hands over every layer at once (its weights' pointers, packed once) and gets the
 * hidden states back before the final norm. The arithmetic is the per-call path's, op for op. */

typedef struct {
    int32_t fmt;        /* 4: q4 (int4-avx2), 8: q8 (int8-avx2) */
    int32_t x8;         /* x quantised to int8 (int4-avx2-a8, int8-avx2-a8) */
    const void *q;      /* packed weights [N, K/2] (q4) or [N, K] (q8) */
    const void *s;      /* q4: (scale, min) float16 [N, K/32, 2]; q8: float32 [N] */
    const float *bias;  /* [N] or NULL */
    const float *norm;  /* the RMS norm's weight [K] in front of the product, or NULL */
    int64_t N, K;       /* K: the product's input size (for a gated input, half of x's width) */
} chatloop_linear;

typedef struct {
    chatloop_linear qkv, o, gate_up, down;  /* qkv carries the input norm, gate_up the post-attention one */
    void *kc, *vc;                           /* the caches [slots, KV, cap, d]: float16, or int8 rows (kv8) */
    int64_t kv8;
} chatloop_layer;

static void linear(const chatloop_linear *L, const float *x, const float *res, float *y, void *scratch,
                   int64_t M, float eps, int glu) {
    if (L->fmt == 4 && L->x8)
        product(4, x, L->q, L->s, L->bias, res, y, scratch, M, L->N, L->K, L->norm, eps, glu, 1);
#ifdef HAVE_Q8X8
    else if (L->x8)
        product(8, x, L->q, L->s, L->bias, res, y, scratch, M, L->N, L->K, L->norm, eps, glu, 1);
#endif
    else if (L->fmt == 4)
        product(4, x, L->q, L->s, L->bias, res, y, scratch, M, L->N, L->K, L->norm, eps, glu, 0);
    else
        product(8, x, L->q, L->s, L->bias, res, y, scratch, M, L->N, L->K, L->norm, eps, glu, 0);
}

/* Rotary embedding of one head in place at one position: x * cos + roll(x, d/2) * sin, where sin
 * carries rotate_half's sign (the runner's table). */
static inline void rotate(float *x, const float *cos, const float *sin, int64_t d) {
    const int64_t half = d / 2;
    int64_t j = 0;
    for (; j + 8 <= half; j += 8) {
        __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + half);
        _mm256_storeu_ps(x + j, _mm256_fmadd_ps(b, _mm256_loadu_ps(sin + j),
                                                _mm256_mul_ps(a, _mm256_loadu_ps(cos + j))));
        _mm256_storeu_ps(x + j + half, _mm256_fmadd_ps(a, _mm256_loadu_ps(sin + j + half),
                                                       _mm256_mul_ps(b, _mm256_loadu_ps(cos + j + half))));
    }
    for (; j < half; j++) {
        float a = x[j], b = x[j + half];
        x[j] = a * cos[j] + b * sin[j];
        x[j + half] = b * cos[j + half] + a * sin[j + half];
    }
}

/* Rows of q, k and v ([b, (H + 2 KV) d], as the fused projection gives them): each row's query and key
 * heads rotated in place for its position pos[i], and its keys and values written into the caches
 * [slots, KV, cap, d] (float16, or int8 rows with kv8) at that position of slot slots[i] (slots NULL:
 * first_slot + i). A decoding step's rows, or a prefill's tokens. Called by every thread of a team, as
 * product(). */
static void rope_store(float *qkv, int64_t b, const int64_t *slots, int64_t first_slot, const int64_t *pos,
                       const float *cos, const float *sin, int64_t H, int64_t KV, int64_t d, int64_t cap,
                       void *kc, void *vc, int kv8) {
    const int64_t width = (H + 2 * KV) * d;
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < b * (H + KV); unit++) {
        int64_t i = unit / (H + KV), head = unit % (H + KV);
        float *row = qkv + i * width;
        rotate(row + head * d, cos + pos[i] * d, sin + pos[i] * d, d);
        if (head < H) continue;  /* a key head, once rotated, goes into the cache with its value head */
        int64_t kv = head - H, slot = slots ? slots[i] : first_slot + i;
        int64_t at = ((slot * KV + kv) * cap + pos[i]) * KV_ROW(kv8, d);
        const float *key = row + head * d, *value = row + (H + KV + kv) * d;
        if (kv8) {
            kv_store8((int8_t *)kc + at, key, d);
            kv_store8((int8_t *)vc + at, value, d);
            continue;
        }
        for (int64_t j = 0; j < d; j += 8) {
            _mm_storeu_si128((__m128i *)((char *)kc + at + 2 * j),
                             _mm256_cvtps_ph(_mm256_loadu_ps(key + j), _MM_FROUND_TO_NEAREST_INT));
            _mm_storeu_si128((__m128i *)((char *)vc + at + 2 * j),
                             _mm256_cvtps_ph(_mm256_loadu_ps(value + j), _MM_FROUND_TO_NEAREST_INT));
        }
    }
}

void chatloop_rope_store(float *qkv, int64_t b, const int64_t *slots, const int64_t *pos, const float *cos,
                         const float *sin, int64_t H, int64_t KV, int64_t d, int64_t cap, void *kc, void *vc,
                         int kv8, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    rope_store(qkv, b, slots, 0, pos, cos, sin, H, KV, d, cap, kc, vc, kv8);
}

/* h [b, hidden]: the embedded tokens in, the last layer's output out (in place). Row i is slot
 * first_slot + i at position pos[i] and sees lens[i] = pos[i] + 1 positions. cos, sin: the runner's
 * rotary table [positions, d]. Work buffers: qkv [b, (H + 2 KV) d], att [b, H d], gu [b, 2 I],
 * scores (chatloop_decode_scores() bytes); scratch as the products' (sized for the widest input). */
void chatloop_decode_step(const chatloop_layer *layers, int64_t n_layers, float *h, int64_t b, int64_t first_slot,
                          const int64_t *pos, const int64_t *lens, const float *cos, const float *sin, int64_t H,
                          int64_t KV, int64_t d, int64_t cap, float eps, float scale, float *qkv, float *att,
                          float *gu, float *scores, void *scratch, int threads) {
    const int64_t width = (H + 2 * KV) * d;
    int64_t max_len = 0;
    for (int64_t i = 0; i < b; i++) max_len = lens[i] > max_len ? lens[i] : max_len;
    /* one team for the whole step: its threads share every stage (each ends in a barrier), and wait
     * at those barriers instead of being started and stopped again for each of the layers' stages */
#pragma omp parallel num_threads(threads) if (threads > 1)
    for (int64_t l = 0; l < n_layers; l++) {
        const chatloop_layer *L = layers + l;
        linear(&L->qkv, h, NULL, qkv, scratch, b, eps, 0);
        rope_store(qkv, b, NULL, first_slot, pos, cos, sin, H, KV, d, cap, L->kc, L->vc, (int)L->kv8);
        attention(qkv, width, L->kc, L->vc, (int)L->kv8, att, NULL, first_slot, lens, b, H, KV, cap, d, scale, scores,
                  max_len);
        linear(&L->o, att, h, h, scratch, b, eps, 0);
        linear(&L->gate_up, h, NULL, gu, scratch, b, eps, 0);
        linear(&L->down, gu, h, h, scratch, b, eps, 1);
    }
}
