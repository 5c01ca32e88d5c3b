// What one core's 512-bit VNNI and FMA units deliver on their own, for judging the kernels'
// GMAC/s (BENCHMARKS.md): eight independent accumulators held in named registers, no memory
// traffic; then the 16-bit row kernels' own mix (two `vpdpwssd` into a fresh sum, converted and
// scaled into a float accumulator by one `vcvtdq2ps` and one `vfmadd`), and the same with four.
// Run one copy per core to see both cores at once.
//   cc -O2 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma bench/vnni-peak.c -o /tmp/vnni-peak
//   /tmp/vnni-peak
// An earlier version kept its accumulators in an array the compiler left in memory, and measured
// store-forwarding latency instead: 53 GMAC/s a core where the units do ~115.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define R8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define DECL(i)                                                                                \
    __m512i w##i = _mm512_set1_epi16(i + 1), a##i = _mm512_set1_epi32(i);                      \
    __m512 f##i = _mm512_set1_ps((float)i);
// Each iteration the weights "change", so that no product can be hoisted out of the loop.
#define TOUCH(i) __asm__ volatile("" : "+v"(w##i));
#define PURE(i)                                                                                \
    a##i = _mm512_dpwssd_epi32(a##i, w##i, x);                                                 \
    a##i = _mm512_dpwssd_epi32(a##i, w##i, y);
// The zero is laundered through an empty asm so that the compiler cannot turn the first
// `vpdpwssd` into a `vpmaddwd`.
#define MIX2(i)                                                                                \
    {                                                                                          \
        __m512i p = z;                                                                         \
        __asm__ volatile("" : "+v"(p));                                                        \
        p = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(p, w##i, x), w##i, y);                     \
        f##i = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), f##i);                                \
    }
#define MIX4(i)                                                                                \
    {                                                                                          \
        __m512i p = z;                                                                         \
        __asm__ volatile("" : "+v"(p));                                                        \
        p = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(p, w##i, x), w##i, y);                     \
        p = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(p, w##i, y), w##i, x);                     \
        f##i = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), f##i);                                \
    }
#define FMA(i) f##i = _mm512_fmadd_ps(f##i, s, t);
#define SUMA(i) q += _mm512_reduce_add_epi32(a##i);
#define SUMF(i) fs += _mm512_reduce_add_ps(f##i);

int main(void) {
    const long n = 100000000;
    __m512i x = _mm512_set1_epi16(5), y = _mm512_set1_epi16(7), z = _mm512_setzero_si512();
    __m512 s = _mm512_set1_ps(0.5f), t = _mm512_set1_ps(0.25f);
    R8(DECL)
    int q = 0;
    float fs = 0;

    double t0 = now();
    for (long k = 0; k < n; k++) {
        R8(PURE) R8(TOUCH)
    }
    double dt = now() - t0;
    R8(SUMA)
    printf("vpdpwssd zmm:              %.2f G/s (%.1f GMAC/s)  [%d]\n", n * 16 / dt / 1e9, n * 16 * 32 / dt / 1e9, q);

    t0 = now();
    for (long k = 0; k < n; k++) {
        R8(MIX2) R8(TOUCH)
    }
    dt = now() - t0;
    R8(SUMF)
    printf("2 vpdpwssd + cvt + fmadd:  %.2f G/s (%.1f GMAC/s)  [%g]\n", n * 16 / dt / 1e9, n * 16 * 32 / dt / 1e9, fs);

    t0 = now();
    for (long k = 0; k < n; k++) {
        R8(MIX4) R8(TOUCH)
    }
    dt = now() - t0;
    R8(SUMF)
    printf("4 vpdpwssd + cvt + fmadd:  %.2f G/s (%.1f GMAC/s)  [%g]\n", n * 32 / dt / 1e9, n * 32 * 32 / dt / 1e9, fs);

    t0 = now();
    for (long k = 0; k < n; k++) {
        R8(FMA) R8(TOUCH)
    }
    dt = now() - t0;
    R8(SUMF)
    printf("vfmadd zmm:                %.2f G/s  [%g]\n", n * 8 / dt / 1e9, fs);
    return 0;
}
