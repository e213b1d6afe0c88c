// The optimizer side of training: fused AdamW over one parameter, and sums of squares (global-norm
// clipping). All of it f32 storage.
#include "common.cuh"
// llmopt:pdl

// AdamW, element by element in f64 with the cpu reference's operation order, and with explicit
// round-to-nearest intrinsics so that no multiply-add is contracted into an fma: the f32 results
// (m, v, master) equal the cpu's bit for bit.
//   g = grad gradScale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g   (each stored as f32)
//   master -= lr (m / c1 / (sqrt(v / c2) + eps) + wd master);  compute <- master in T (when given)
// omb1 = 1 - b1 and omb2 = 1 - b2 and the bias corrections c1 = 1 - b1^step, c2 = 1 - b2^step come from the host.
template <typename T>
__device__ __forceinline__ void adamw(float* master, const float* grad, float* m, float* v, T* compute, long long n, double lr,
                                      double b1, double omb1, double b2, double omb2, double eps, double wd, double c1,
                                      double c2, double gradScale) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const double g = __dmul_rn((double)grad[i], gradScale);
    const float mi = __double2float_rn(__dadd_rn(__dmul_rn(b1, (double)m[i]), __dmul_rn(omb1, g)));
    const float vi = __double2float_rn(__dadd_rn(__dmul_rn(b2, (double)v[i]), __dmul_rn(__dmul_rn(omb2, g), g)));
    m[i] = mi;
    v[i] = vi;
    const double w = (double)master[i];
    const double step = __ddiv_rn(__ddiv_rn((double)mi, c1), __dadd_rn(__dsqrt_rn(__ddiv_rn((double)vi, c2)), eps));
    const float nw = __double2float_rn(__dadd_rn(w, -__dmul_rn(lr, __dadd_rn(step, __dmul_rn(wd, w)))));
    master[i] = nw;
    if (compute != nullptr) compute[i] = from_float<T>(nw);
  }
}

#define DEF_ADAMW(T, S)                                                                                             \
  extern "C" __global__ void adamw_##S(float* master, const float* grad, float* m, float* v, T* compute, long long n, \
                                       double lr, double b1, double omb1, double b2, double omb2, double eps,         \
                                       double wd, double c1, double c2, double gradScale) { pdl_start();                          \
    adamw<T>(master, grad, m, v, compute, n, lr, b1, omb1, b2, omb2, eps, wd, c1, c2, gradScale);                    \
  }
FOR_EACH_DTYPE(DEF_ADAMW)

// out[blockIdx.x] = sum of x[i]^2 over this block's grid-stride share of x, in f64 (an f32 square is
// exact in f64).
extern "C" __global__ void sum_squares_partial(double* out, const float* x, long long n) { pdl_start();
  double s = 0.0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const double v = (double)x[i];
    s += v * v;
  }
  s = block_sum_f64(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// out[0] = sum of part[0 .. n) (one block; fixed order per thread, then the block reduction).
extern "C" __global__ void sum_f64(double* out, const double* part, int n) { pdl_start();
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum_f64(s);
  if (threadIdx.x == 0) out[0] = s;
}
