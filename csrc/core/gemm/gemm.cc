// The GEMM's ISA-independent parts: which kernels an ISA has, weight packing and the threaded
// driver. Compiled with baseline flags; the per-ISA kernels are in gemm_<isa>.cc.
#include "gemm/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "gemm/gemm_kernels.h"

namespace mbk::gemm {
namespace {

std::atomic<uint64_t> g_pack_count{0};

// Below this many FLOPs (about 1-2 us of one core) one thread beats an OpenMP fork/join.
constexpr double kParallelMinFlops = 2e5;

}  // namespace

const IsaGemm& isa_gemm(Isa isa) {
  switch (isa) {
    case Isa::scalar: return scalar::f32_gemm();
#ifdef MBK_HAVE_AVX2
    case Isa::avx2: return avx2::f32_gemm();
#endif
#ifdef MBK_HAVE_AVX512
    case Isa::avx512: return avx512::f32_gemm();
#endif
#ifdef MBK_HAVE_NEON
    case Isa::neon: return neon::f32_gemm();
#endif
#ifdef MBK_HAVE_AVX512_SIMDE
    case Isa::avx512_simde: return avx512_simde::f32_gemm();
#endif
    default:
      throw std::invalid_argument(std::string("gemm: ISA '") + isa_name(isa) +
                                  "' is not compiled into this build");
  }
}

Tile tile(Isa isa) { return isa_gemm(isa).tile; }

const Int8Gemm& int8_gemm(Isa isa, Int8Variant variant, int weight_max) {
  const IsaGemm& kern = isa_gemm(isa);
  if (kern.int8.run == nullptr)
    throw std::invalid_argument(std::string("gemm: ISA '") + isa_name(isa) +
                                "' has no int8 GEMM kernel");
  const bool dot_runs = kern.int8_dot.run != nullptr && int8_dot_supported(isa);
  if (variant == Int8Variant::best) {
    if (dot_runs) return kern.int8_dot;
    const bool narrow_fits = kern.int8_narrow.run != nullptr && weight_max <= kern.int8_narrow.weight_max;
    return narrow_fits ? kern.int8_narrow : kern.int8;
  }
  if (variant == Int8Variant::base) return kern.int8;
  if (variant == Int8Variant::narrow) {
    if (kern.int8_narrow.run == nullptr)
      throw std::invalid_argument(std::string("gemm: ISA '") + isa_name(isa) +
                                  "' has no narrow-weight int8 GEMM kernel");
    return kern.int8_narrow;
  }
  if (kern.int8_dot.run == nullptr)
    throw std::invalid_argument(std::string("gemm: ISA '") + isa_name(isa) +
                                "' has no dot-product int8 GEMM kernel");
  if (!dot_runs)
    throw std::invalid_argument(std::string("gemm: this CPU lacks the dot-product extension of ISA '") +
                                isa_name(isa) + "' that " + kern.int8_dot.tile.name + " needs");
  return kern.int8_dot;
}

Tile int8_tile(Isa isa, Int8Variant variant, int weight_max) {
  return int8_gemm(isa, variant, weight_max).tile;
}

void PackedWeights::Free::operator()(void* p) const { std::free(p); }

namespace {

void check_sizes(int64_t n, int64_t k) {
  if (n < 0 || k < 0)
    throw std::invalid_argument("PackedWeights: n and k must be >= 0, got n=" + std::to_string(n) +
                                " k=" + std::to_string(k));
}

void* aligned_bytes(size_t bytes) {
  void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void PackedWeights::allocate() {
  data_.reset(static_cast<unsigned char*>(aligned_bytes(bytes())));
}

PackedWeights::PackedWeights(const float* w, int64_t stride_n, int64_t stride_k,
                             const float* bias, int64_t n, int64_t k, Isa isa)
    : n_(n), k_(k), mr_(tile(isa).mr), nr_(tile(isa).nr), isa_(isa) {
  check_sizes(n, k);
  allocate();
  float* buf = reinterpret_cast<float*>(data_.get());
  const int nr = nr_;
  for (int64_t p = 0; p < panels(); ++p) {
    float* dst = buf + p * panel_stride();
    const int64_t n0 = p * nr;
    for (int j = 0; j < nr; ++j) dst[j] = bias != nullptr && n0 + j < n ? bias[n0 + j] : 0.0f;
    for (int j = 0; j < nr; ++j) {
      const int64_t col = n0 + j;
      float* d = dst + nr + j;
      if (col < n) {
        const float* src = w + col * stride_n;
        for (int64_t kk = 0; kk < k; ++kk) d[kk * nr] = src[kk * stride_k];
      } else {
        for (int64_t kk = 0; kk < k; ++kk) d[kk * nr] = 0.0f;
      }
    }
  }
  g_pack_count.fetch_add(1, std::memory_order_relaxed);
}

namespace {

// The largest |w| of an int8 weight; std::invalid_argument at a -128 (outside the symmetric range).
int largest_weight(const Int8Weight& w, int64_t n, int64_t k) {
  int most = 0;
  for (int64_t col = 0; col < n; ++col)
    for (int64_t kk = 0; kk < k; ++kk) {
      const int v = w.w[col * w.stride_n + kk * w.stride_k];
      if (v == -128)
        throw std::invalid_argument("PackedWeights: int8 weights must be in [-127, 127], got -128 at [" +
                                    std::to_string(col) + ", " + std::to_string(kk) + "]");
      most = std::max(most, v < 0 ? -v : v);
    }
  return most;
}

}  // namespace

PackedWeights::PackedWeights(const Int8Weight& w, const float* bias, int64_t n, int64_t k, Isa isa,
                             Int8Variant variant)
    : n_(n), k_(k), isa_(isa) {
  check_sizes(n, k);
  if (k > kMaxInt8K)
    throw std::invalid_argument("PackedWeights: the int8 GEMM takes k <= " +
                                std::to_string(kMaxInt8K) + ", got k=" + std::to_string(k));
  const int weight_max = largest_weight(w, n, k);
  const Int8Gemm& kern = int8_gemm(isa, variant, weight_max);
  if (weight_max > kern.weight_max)
    throw std::invalid_argument(std::string("PackedWeights: ") + kern.tile.name + " takes int8 weights in [-" +
                                std::to_string(kern.weight_max) + ", " + std::to_string(kern.weight_max) +
                                "], got one of magnitude " + std::to_string(weight_max));
  mr_ = kern.tile.mr, nr_ = kern.tile.nr, group_ = kern.group;
  const IsaGemm& all = isa_gemm(isa);
  variant_ = &kern == &all.int8_dot ? Int8Variant::dot
             : &kern == &all.int8_narrow ? Int8Variant::narrow : Int8Variant::base;
  for (int64_t col = 0; col < n; ++col)
    if (!(w.scale[col] > 0.0f && w.scale[col] <= 3.4e38f))
      throw std::invalid_argument("PackedWeights: int8 scale[" + std::to_string(col) +
                                  "] must be finite and > 0, got " + std::to_string(w.scale[col]));
  const int64_t kp = k_padded();
  smooth_.reset(static_cast<float*>(aligned_bytes(static_cast<size_t>(kp) * sizeof(float))));
  for (int64_t kk = 0; kk < kp; ++kk)
    smooth_.get()[kk] = kk < k && w.smooth != nullptr ? w.smooth[kk] : 1.0f;
  allocate();
  const int nr = nr_, group = group_;
  for (int64_t p = 0; p < panels(); ++p) {
    unsigned char* dst = data_.get() + p * panel_stride();
    float* head = reinterpret_cast<float*>(dst);  // bias [nr], scale [nr]
    int32_t* comp = reinterpret_cast<int32_t*>(head + 2 * nr);
    unsigned char* groups = dst + 3 * nr * sizeof(float);
    for (int j = 0; j < nr; ++j) {
      const int64_t col = p * nr + j;
      head[j] = bias != nullptr && col < n ? bias[col] : 0.0f;
      head[nr + j] = col < n ? w.scale[col] : 0.0f;
      int32_t colsum = 0;  // |colsum| <= 127 * kMaxInt8K: 128 * colsum fits int32
      for (int64_t kk = 0; kk < kp; ++kk) {
        int8_t v = 0;
        if (col < n && kk < k) v = w.w[col * w.stride_n + kk * w.stride_k];
        colsum += v;
        unsigned char* at = groups + ((kk / group) * nr + j) * 4;  // this column's 4 bytes
        if (group == 4)
          reinterpret_cast<int8_t*>(at)[kk % 4] = v;
        else
          reinterpret_cast<int16_t*>(at)[kk % 2] = v;
      }
      comp[j] = -kern.a_offset * colsum;
    }
  }
  g_pack_count.fetch_add(1, std::memory_order_relaxed);
}

uint64_t pack_count() { return g_pack_count.load(std::memory_order_relaxed); }

void gemm(const float* a, int64_t lda, int64_t m, const PackedWeights& w, float* c, int64_t ldc,
          const Epilogue& ep, int num_threads) {
  if (m <= 0 || w.n() == 0) return;
  const IsaGemm& kern = isa_gemm(w.isa());
  const GemmArgs g = gemm_args(a, lda, w, c, ldc, ep);
  const int mr = w.mr();
  const int64_t row_blocks = (m + mr - 1) / mr, panels = w.panels();
  int nt = std::max(num_threads, 1);
  if (2.0 * double(m) * double(w.n()) * double(w.k()) < kParallelMinFlops) nt = 1;
  if (nt == 1) {
    kern.run(g, 0, m, 0, panels);
    return;
  }
  // Whole rows per thread (LayerNorm fused per row block) when there are enough row blocks to
  // balance; otherwise a grid of row blocks x panel chunks and LayerNorm as a second pass.
  const int64_t chunks = row_blocks >= 4 * nt ? 1 : std::min<int64_t>(panels, (4 * nt + row_blocks - 1) / row_blocks);
  const bool ln_pass = chunks > 1 && ep.norm == Norm::layernorm;
  parallel(nt, [&](int tid, int threads) {
    if (chunks == 1) {
      const int64_t r0 = row_blocks * tid / threads * mr;
      const int64_t r1 = std::min(m, row_blocks * (tid + 1) / threads * mr);
      if (r0 < r1) kern.run(g, r0, r1, 0, panels);
      return;
    }
    const int64_t tasks = row_blocks * chunks;
    for (int64_t t = tasks * tid / threads; t < tasks * (tid + 1) / threads; ++t) {
      const int64_t rb = t / chunks, ch = t % chunks;
      kern.run(g, rb * mr, std::min(m, rb * mr + mr), panels * ch / chunks,
               panels * (ch + 1) / chunks);
    }
    if (ln_pass) {
#pragma omp barrier
      const int64_t r0 = m * tid / threads, r1 = m * (tid + 1) / threads;
      kern.layernorm_rows(c + r0 * ldc, ldc, r1 - r0, w.n(), ep.norm_weight, ep.norm_bias,
                          ep.eps);
    }
  });
}

}  // namespace mbk::gemm
