// What one core's 512-bit VNNI and FMA units deliver on their own, for judging the kernels'
// GMAC/s (BENCHMARKS.md): eight independent accumulators, no memory traffic.
//   cc -O2 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma bench/vnni-peak.c -o /tmp/vnni-peak
//   /tmp/vnni-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const long n = 200000000;
    __m512i a[8];
    __m256i b[8];
    __m512 f[8];
    for (int i = 0; i < 8; i++) {
        a[i] = _mm512_set1_epi32(i);
        b[i] = _mm256_set1_epi32(i);
        f[i] = _mm512_set1_ps((float)i);
    }
    __m512i w = _mm512_set1_epi16(3), x = _mm512_set1_epi16(5);
    __m256i w2 = _mm256_set1_epi16(3), x2 = _mm256_set1_epi16(5);
    __m512 g = _mm512_set1_ps(0.5f), h = _mm512_set1_ps(0.25f);

    double t = now();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 8; i++) a[i] = _mm512_dpwssd_epi32(a[i], w, x);
        __asm__ volatile("" : "+v"(w), "+v"(x));  // keep the loop from being folded
    }
    double dt = now() - t;
    int s = 0;
    for (int i = 0; i < 8; i++) s += _mm512_reduce_add_epi32(a[i]);
    printf("vpdpwssd zmm: %.2f G/s (%.1f GMAC/s)  [%d]\n", n * 8 / dt / 1e9, n * 8 * 32 / dt / 1e9, s);

    t = now();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 8; i++) b[i] = _mm256_dpwssd_epi32(b[i], w2, x2);
        __asm__ volatile("" : "+v"(w2), "+v"(x2));
    }
    dt = now() - t;
    s = 0;
    for (int i = 0; i < 8; i++) s += _mm256_extract_epi32(b[i], 0);
    printf("vpdpwssd ymm: %.2f G/s (%.1f GMAC/s)  [%d]\n", n * 8 / dt / 1e9, n * 8 * 16 / dt / 1e9, s);

    t = now();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 8; i++) f[i] = _mm512_fmadd_ps(f[i], g, h);
        __asm__ volatile("" : "+v"(g), "+v"(h));
    }
    dt = now() - t;
    float fs = 0;
    for (int i = 0; i < 8; i++) fs += _mm512_reduce_add_ps(f[i]);
    printf("vfmadd zmm:   %.2f G/s  [%g]\n", n * 8 / dt / 1e9, fs);
    return 0;
}
