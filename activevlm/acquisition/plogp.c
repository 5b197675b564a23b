/* Row sums of x log x, fused: one read of the block, log vectorised by the compiler through
   glibc's libmvec (declared below as SIMD functions, so no -ffast-math is needed and the
   process's floating-point mode is never touched). Rows are summed in the input's precision
   and added to a float64 accumulator, like the torch path. Entries must be positive. */
#include <math.h>
#include <stdint.h>

#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
double log(double);

void add_plogp_rows_f32(const float *x, int64_t rows, int64_t cols, double *out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = x + r * cols;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < cols; ++i) s += row[i] * logf(row[i]);
    out[r] += (double)s;
  }
}

void add_plogp_rows_f64(const double *x, int64_t rows, int64_t cols, double *out) {
  for (int64_t r = 0; r < rows; ++r) {
    const double *row = x + r * cols;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < cols; ++i) s += row[i] * log(row[i]);
    out[r] += s;
  }
}
