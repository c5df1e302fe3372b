// bench_cuda — what one GPU does at the shapes rmoe trains: bf16 GEMM TFLOP/s
// (cuda::gemm_bf16, cuBLAS, fp32 accumulation) for the three GEMMs of every
// linear layer in a training step, and the CUDA attention op, at the sizes of
// the 24-layer config (configs/pretrain_24l_*.ini) and of the medium one
// (configs/medium_char_*.ini). Without a CUDA device it prints
// "SKIPPED: no CUDA device" and exits 0.
//
// Usage: bench_cuda [--seconds S]   (timed seconds per case, default 0.25)
//        RMOE_BF16_PEAK_TFLOPS=312 bench_cuda   (the "% peak" column's base)
//
// Timing: cuda_ops.h has no synchronize call, and every GEMM and kernel runs
// on the default stream, so each timed loop ends with copy_to_host of one
// element (a cudaMemcpy, which waits for the stream's earlier work).
// Every case is run twice before timing (cuBLAS picks its algorithm and
// loads its kernels on the first call of a shape).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "rmoe/core/timer.h"
#include "rmoe/kernels/cuda_ops.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/config.h"
#include "rmoe/model/model.h"

using namespace rmoe;

namespace {

double g_seconds = 0.25;  // timed seconds per case
double g_peak = 989;      // bf16 dense TFLOP/s, the "% peak" column's base

// Seconds per call of f: two untimed calls, one timed call to pick the
// repeat count, then enough calls to fill g_seconds (at least 3).
// `probe` is any device pointer: copying one float from it waits for the stream.
template <class F>
double seconds_per_call(F&& f, const void* probe) {
  float one;
  auto sync = [&] { cuda::copy_to_host(&one, probe, sizeof one); };
  f();
  f();
  sync();
  auto t0 = Clock::now();
  f();
  sync();
  const double first = std::max(seconds_since(t0), 1e-6);
  const int reps = int(std::clamp(g_seconds / first, 3.0, 100000.0));
  t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  sync();
  return seconds_since(t0) / reps;
}

// n elements of T on the device, freed at scope exit.
template <class T>
struct DeviceArray {
  T* p = nullptr;
  explicit DeviceArray(int64_t n) : p(static_cast<T*>(cuda::device_alloc(size_t(std::max<int64_t>(n, 1)) * sizeof(T)))) {}
  ~DeviceArray() { cuda::device_free(p); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

// Random values in [-1, 1) (fixed seed), so the GEMMs see data like training's
// (all-constant inputs draw less power and can clock higher).
class RandomSource {
 public:
  static constexpr int64_t kElements = int64_t(1) << 22;
  RandomSource() : f32_(kElements) {
    std::vector<float> h(static_cast<size_t>(kElements));
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (float& v : h) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      v = float(int64_t(s >> 40) - (int64_t(1) << 23)) / float(1 << 23);
    }
    cuda::copy_to_device(f32_.p, h.data(), h.size() * sizeof(float));
  }
  // dst[0, n) as bf16 of the source, repeated every kElements.
  void fill_bf16(void* dst, int64_t n) const {
    for (int64_t off = 0; off < n; off += kElements)
      cuda::to_bf16(static_cast<uint16_t*>(dst) + off, f32_.p, std::min(kElements, n - off));
  }
  // dst[0, n) as float (for the attention op, which is fp32).
  void fill_f32(float* dst, int64_t n) const {
    std::vector<float> h(size_t(std::min(kElements, n)));
    cuda::copy_to_host(h.data(), f32_.p, h.size() * sizeof(float));
    for (int64_t off = 0; off < n; off += kElements)
      cuda::copy_to_device(dst + off, h.data(), size_t(std::min(kElements, n - off)) * sizeof(float));
  }

 private:
  DeviceArray<float> f32_;
};

void print_header() {
  std::printf("%-28s %-22s %6s %6s %6s %9s %8s %7s\n", "shape", "gemm (transA,transB)", "M", "N", "K", "ms/call",
              "TFLOP/s", "% peak");
}
void print_row(const std::string& shape, const char* what, int64_t M, int64_t N, int64_t K, double s, double flops,
               bool bf16) {
  const double tf = flops / s / 1e12;
  char pct[16];
  if (bf16)
    std::snprintf(pct, sizeof pct, "%7.1f", 100 * tf / g_peak);
  else
    std::snprintf(pct, sizeof pct, "%7s", "fp32");
  std::printf("%-28s %-22s %6lld %6lld %6lld %9.3f %8.1f %s\n", shape.c_str(), what, (long long)M, (long long)N,
              (long long)K, s * 1e3, tf, pct);
  std::fflush(stdout);
}

// The three GEMMs of one linear layer y[T,out] = x[T,in] W[out,in]^T, as the
// cpu backend's linear_forward / linear_backward call them (row-major):
//   forward  y   = x W^T         (N,T), beta 0
//   dX       dx += dy W          (N,N), beta 1 (gradients accumulate)
//   dW       dW += dy^T x        (T,N), beta 1
// Returns the seconds of the three together.
double bench_linear(const RandomSource& rnd, const std::string& shape, int64_t T, int64_t in, int64_t out) {
  DeviceArray<uint16_t> x(T * in), W(out * in), dy(T * out);
  DeviceArray<float> y(T * out), dx(T * in), dW(out * in);
  rnd.fill_bf16(x.p, T * in);
  rnd.fill_bf16(W.p, out * in);
  rnd.fill_bf16(dy.p, T * out);
  // beta = 0 once: the accumulated outputs start from defined values.
  cuda::gemm_bf16(false, false, T, in, out, 1.f, dy.p, out, W.p, in, 0.f, dx.p, in);
  cuda::gemm_bf16(true, false, out, in, T, 1.f, dy.p, out, x.p, in, 0.f, dW.p, in);
  const double flops = 2.0 * double(T) * double(in) * double(out);
  const double fwd = seconds_per_call(
      [&] { cuda::gemm_bf16(false, true, T, out, in, 1.f, x.p, in, W.p, in, 0.f, y.p, out); }, y.p);
  print_row(shape, "fwd  y=x.W^T   (N,T)", T, out, in, fwd, flops, true);
  const double bdx = seconds_per_call(
      [&] { cuda::gemm_bf16(false, false, T, in, out, 1.f, dy.p, out, W.p, in, 1.f, dx.p, in); }, dx.p);
  print_row(shape, "dX  +=dy.W     (N,N)", T, in, out, bdx, flops, true);
  const double bdw = seconds_per_call(
      [&] { cuda::gemm_bf16(true, false, out, in, T, 1.f, dy.p, out, x.p, in, 1.f, dW.p, in); }, dW.p);
  print_row(shape, "dW  +=dy^T.x   (T,N)", out, in, T, bdw, flops, true);
  return fwd + bdx + bdw;
}

// Causal attention forward and backward (fp32: the op table's attention is
// float/double only), q,k,v [B,S,H,D]. FLOPs: forward 2 matmuls (q k^T, P v),
// backward 5 (the recomputed q k^T, dv, dP, dq, dk), each 2 B H S^2 D, and
// half of that for the causal mask. Returns forward + backward seconds.
double bench_attention(const RandomSource& rnd, const std::string& shape, int64_t B, int64_t S, int64_t H,
                       int64_t D) {
  const int64_t n = B * S * H * D;
  DeviceArray<float> q(n), k(n), v(n), o(n), lse(B * H * S), dout(n), dq(n), dk(n), dv(n);
  for (float* p : {q.p, k.p, v.p, dout.p, dq.p, dk.p, dv.p}) rnd.fill_f32(p, n);
  auto view = [&](float* p) { return Tensor<float>(p, {B, S, H, D}, Device::cuda); };
  const Tensor<float> L(lse.p, {B, H, S}, Device::cuda);
  const double mm = 2.0 * double(B * H) * double(S) * double(S) * double(D) / 2;  // one causal matmul
  std::printf("(attention, B %lld: M = N = S, K = D; fp32, so no %% of the bf16 peak; counted: forward 2 and "
              "backward 5 matmuls of B H S^2 D multiply-adds, halved for the causal mask)\n",
              (long long)B);
  const double fwd =
      seconds_per_call([&] { ops::attention_forward(view(o.p), L, view(q.p), view(k.p), view(v.p)); }, o.p);
  print_row(shape, "attention forward", S, S, D, fwd, 2 * mm, false);
  const double bwd = seconds_per_call(
      [&] {
        ops::attention_backward(view(dq.p), view(dk.p), view(dv.p), Tensor<float>{}, view(dout.p), view(o.p), L,
                                view(q.p), view(k.p), view(v.p));
      },
      dq.p);
  print_row(shape, "attention backward", S, S, D, bwd, 5 * mm, false);
  return fwd + bwd;
}

struct Shape {
  const char* name;
  int64_t L, d, H, f, E, k, V, S, micro_batch;
};

// One config: its linear layers' GEMMs, attention, and the sum for one
// micro-batch step at these rates (balanced routing: T k / E tokens per
// expert; router, norms and element-wise work not counted).
void bench_config(const RandomSource& rnd, const Shape& c) {
  const int64_t T = c.S * c.micro_batch, Te = T * c.k / c.E;
  ModelConfig mc;
  mc.vocab_size = int(c.V);
  const int64_t chunk = Model<float>::head_chunk_rows_for(mc, T);  // the LM head's rows per GEMM
  const int64_t chunks = (T + chunk - 1) / chunk;
  std::printf("\n== %s: L %lld, d %lld, H %lld, f %lld, E %lld, k %lld, V %lld; T = %lld tokens (S %lld x %lld), "
              "%lld per expert, head in %lld chunk(s) of %lld rows\n",
              c.name, (long long)c.L, (long long)c.d, (long long)c.H, (long long)c.f, (long long)c.E,
              (long long)c.k, (long long)c.V, (long long)T, (long long)c.S, (long long)c.micro_batch, (long long)Te,
              (long long)chunks, (long long)chunk);
  print_header();
  const std::string d = std::to_string(c.d), f = std::to_string(c.f), V = std::to_string(c.V);
  const double proj = bench_linear(rnd, "attn proj " + d + "->" + d, T, c.d, c.d);
  const double up = bench_linear(rnd, (c.f == c.d ? "expert up=down " : "expert up ") + d + "->" + f, Te, c.d, c.f);
  const double down = c.f == c.d ? up : bench_linear(rnd, "expert down " + f + "->" + d, Te, c.f, c.d);
  const double head = bench_linear(rnd, "head chunk " + d + "->" + V, chunk, c.d, c.V);
  const double att = bench_attention(rnd, "attention S" + std::to_string(c.S) + " H" + std::to_string(c.H) + " D" +
                                              std::to_string(c.d / c.H),
                                     c.micro_batch, c.S, c.H, c.d / c.H);
  // Per layer: q, k, v, o projections; each expert's SwiGLU a, b (up) and down.
  const double layer = 4 * proj + double(c.E) * (2 * up + down) + att;
  const double step = double(c.L) * layer + double(chunks) * head;
  std::printf("one micro-batch step at these rates: %.1f ms per layer (4 projections, %lld experts x 3 linears, "
              "attention), %.1f ms head, %.1f ms total = %.0f tokens/s (router and element-wise work not counted; "
              "a remainder head chunk counted as full)\n",
              layer * 1e3, (long long)c.E, double(chunks) * head * 1e3, step * 1e3, double(T) / step);
}

int usage(const char* msg) {
  std::fprintf(stderr, "bench_cuda: %s\nusage: bench_cuda [--seconds S]   (S > 0: timed seconds per case)\n", msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      char* end = nullptr;
      g_seconds = std::strtod(argv[++i], &end);
      if (*end || !(g_seconds > 0 && g_seconds <= 60))
        return usage(("--seconds '" + std::string(argv[i]) + "' is not a number in (0, 60]").c_str());
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      usage("bf16 GEMM and attention throughput at rmoe's shapes");
      return 0;
    } else {
      return usage(("unknown argument '" + std::string(argv[i]) + "'").c_str());
    }
  }
  // cuda_ops.h has no device-name query, so the peak is not detected here:
  // scripts/gpu_check.sh sets it from nvidia-smi's name when it can.
  const char* peak_env = std::getenv("RMOE_BF16_PEAK_TFLOPS");
  if (peak_env && *peak_env) {
    char* end = nullptr;
    g_peak = std::strtod(peak_env, &end);
    if (*end || !(g_peak > 0))
      return usage(("RMOE_BF16_PEAK_TFLOPS='" + std::string(peak_env) +
                    "' is not a positive number (dense bf16 TFLOP/s: 989 for H100/H200 SXM, 312 for A100)")
                       .c_str());
    std::printf("bf16 peak: %.0f TFLOP/s dense (from RMOE_BF16_PEAK_TFLOPS)\n", g_peak);
  } else {
    std::printf("bf16 peak: %.0f TFLOP/s dense (default, H100/H200 SXM; no device-name query in cuda_ops.h: set "
                "RMOE_BF16_PEAK_TFLOPS, e.g. 312 for A100)\n",
                g_peak);
  }
  const int n = cuda::device_count();
  std::printf("CUDA devices: %d\n", n);
  if (n == 0) {
    std::printf("SKIPPED: no CUDA device (nothing was measured)\n");
    return 0;
  }
  std::printf("device 0; %.2f s timed per case after 2 warm-up calls; synchronised by copy_to_host of one element\n",
              g_seconds);
  try {
    const RandomSource rnd;
    bench_config(rnd, Shape{"24-layer", 24, 1280, 20, 448, 16, 4, 96512, 4096, 1});
    bench_config(rnd, Shape{"medium", 8, 352, 8, 352, 16, 2, 256, 512, 4});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: FAILED: %s\n", e.what());
    return 1;
  }
  return 0;
}
