// The int8 GEMM (gemm.h, "int8") on every int8 kernel this CPU runs (each supported ISA's, every
// variant it has: dot products through SIMDe on x86, natively under qemu-aarch64; narrow on weights
// in [-63, 63]),
// against a reference that follows the definition step by step (fp32 row quantization, exact integer sums in int64, the
// dequantization and the epilogue in double): M, N, K below, at and above each tile (K not a
// multiple of the group), every epilogue, smooth or not, strided A/C, 1 and 2 threads; the
// worst-case products (|a| = 127 and |w| the kernel's largest everywhere, where a saturating int16
// pair sum would show),
// zero and non-finite rows; ffn_stack on int8 weights equal bit for bit to its GEMMs one by one;
// an ISA's variants equal bit for bit (the same integers, the same epilogue code); the run-time
// choice of variant; and the packing's argument errors.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "gemm/gemm.h"
#include "gemm/gemm_kernels.h"
#include "ops/ffn_stack.h"
#include "ops/linear_norm.h"

namespace {

using mbk::Isa;
using mbk::gemm::Act;
using mbk::gemm::Int8Variant;
using mbk::gemm::Norm;
using mbk::gemm::PackedWeights;

// One int8 kernel under test: an ISA and one of its variants.
struct Kernel {
  Isa isa;
  Int8Variant variant;
  const char* name;  // its tile's, e.g. q8_gemm_6x16__neondot
  int weight_max;    // the largest |w| it takes: the tests' weights reach it
};

constexpr double kTol = 2e-6;  // fp32 rounding of the dequantization and the epilogue

struct Problem {
  int64_t m, n, k, lda, ldc;
  std::vector<float> a, scale, smooth, bias, res, nw, nb;
  std::vector<int8_t> w;  // [n, k]
  bool has_smooth;
  Act act;
  Norm norm;
  bool has_res;
  float eps = 1e-5f;
};

Problem make_problem(int64_t m, int64_t n, int64_t k, bool has_smooth, Act act, bool has_res,
                     Norm norm, int64_t pad, std::mt19937& rng, int weight_max = 127) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> wi(-weight_max, weight_max);
  Problem p{m, n, k, k + pad, n + pad, {}, {}, {}, {}, {}, {}, {}, {}, has_smooth, act, norm, has_res};
  p.a.resize(static_cast<size_t>(m * p.lda));
  for (int64_t i = 0; i < m; ++i) {
    // Rows from 1e-1 to 1e7 (MobileBERT's activations span these): per-row scales must follow.
    const float row_scale = std::pow(10.0f, -1.0f + 8.0f * float(i % 5) / 4.0f);
    for (int64_t c = 0; c < p.lda; ++c) p.a[i * p.lda + c] = u(rng) * row_scale;
  }
  p.w.resize(static_cast<size_t>(n * k));
  for (int8_t& e : p.w) e = static_cast<int8_t>(wi(rng));
  for (int64_t j = 0; j < n; ++j) {
    p.scale.push_back(1e-3f * (1.0f + u(rng) * 0.5f));
    p.bias.push_back(u(rng));
    p.nw.push_back(1.0f + 0.5f * u(rng));
    p.nb.push_back(u(rng));
  }
  for (int64_t c = 0; c < k; ++c) p.smooth.push_back(0.25f + std::fabs(u(rng)));
  p.res.resize(static_cast<size_t>(m * p.ldc));
  for (float& e : p.res) e = u(rng);
  return p;
}

PackedWeights pack(const Problem& p, const Kernel& kn) {
  const mbk::gemm::Int8Weight q{p.w.data(), p.k, 1, p.scale.data(),
                                p.has_smooth ? p.smooth.data() : nullptr};
  return PackedWeights(q, p.bias.data(), p.n, p.k, kn.isa, kn.variant);
}

mbk::gemm::Epilogue epilogue(const Problem& p) {
  mbk::gemm::Epilogue ep;
  ep.act = p.act;
  ep.residual = p.has_res ? p.res.data() : nullptr;
  ep.ld_residual = p.ldc;
  ep.norm = p.norm;
  ep.norm_weight = p.nw.data();
  ep.norm_bias = p.nb.data();
  ep.eps = p.eps;
  return ep;
}

// Row i's quantization, as gemm.h defines it (fp32 arithmetic); returns s_a.
float quantize(const Problem& p, int64_t i, std::vector<int>& q) {
  std::vector<float> v(static_cast<size_t>(p.k));
  float amax = 0.0f;
  for (int64_t c = 0; c < p.k; ++c) {
    v[c] = p.a[i * p.lda + c] * (p.has_smooth ? p.smooth[c] : 1.0f);
    amax = std::fmax(amax, std::fabs(v[c]));
  }
  q.assign(static_cast<size_t>(p.k), 0);
  if (amax == 0.0f) return 0.0f;
  const float inv = 127.0f / amax;
  for (int64_t c = 0; c < p.k; ++c) q[c] = static_cast<int>(std::nearbyint(v[c] * inv));
  return amax / 127.0f;
}

// max over rows of ||c - ref|| / ||magnitude|| (the magnitude: what fp32 rounding scales with).
double reference_error(const Problem& p, const float* c) {
  double worst = 0.0;
  std::vector<int> q;
  std::vector<double> y(static_cast<size_t>(p.n)), mag(static_cast<size_t>(p.n));
  for (int64_t i = 0; i < p.m; ++i) {
    const double sa = quantize(p, i, q);
    for (int64_t j = 0; j < p.n; ++j) {
      int64_t acc = 0;
      for (int64_t kk = 0; kk < p.k; ++kk) acc += int64_t(q[kk]) * p.w[j * p.k + kk];
      double s = double(acc) * sa * p.scale[j] + p.bias[j];
      double sm = std::fabs(double(acc) * sa * p.scale[j]) + std::fabs(p.bias[j]);
      if (p.act == Act::relu) s = s > 0.0 ? s : 0.0;
      if (p.act == Act::gelu) s = 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0))), sm *= 1.13;
      if (p.has_res) s += p.res[i * p.ldc + j], sm += std::fabs(p.res[i * p.ldc + j]);
      y[j] = s, mag[j] = sm;
    }
    if (p.norm == Norm::nonorm) {
      for (int64_t j = 0; j < p.n; ++j) {
        y[j] = y[j] * p.nw[j] + p.nb[j];
        mag[j] = mag[j] * std::fabs(p.nw[j]) + std::fabs(p.nb[j]);
      }
    } else if (p.norm == Norm::layernorm) {
      double mean = 0.0, var = 0.0;
      for (double e : y) mean += e;
      mean /= double(p.n);
      for (double e : y) var += (e - mean) * (e - mean);
      const double rstd = 1.0 / std::sqrt(var / double(p.n) + p.eps);
      for (int64_t j = 0; j < p.n; ++j) {
        y[j] = (y[j] - mean) * rstd * p.nw[j] + p.nb[j];
        mag[j] = std::fabs(y[j]) + 1.0;
      }
    }
    double num = 0.0, den = 0.0;
    for (int64_t j = 0; j < p.n; ++j) {
      const double d = double(c[i * p.ldc + j]) - y[j];
      num += d * d;
      den += mag[j] * mag[j];
    }
    if (!(num <= 0.0)) worst = std::fmax(worst, std::sqrt(num / (den > 0.0 ? den : 1.0)));
  }
  return worst;
}

// Every int8 kernel this CPU runs; says which it cannot.
std::vector<Kernel> int8_kernels() {
  std::vector<Kernel> out;
  for (Isa isa : mbk::supported_isas()) {
    const mbk::gemm::IsaGemm& kern = mbk::gemm::isa_gemm(isa);
    if (kern.int8.run != nullptr) out.push_back({isa, Int8Variant::base, kern.int8.tile.name, 127});
    if (kern.int8_narrow.run != nullptr)
      out.push_back({isa, Int8Variant::narrow, kern.int8_narrow.tile.name, kern.int8_narrow.weight_max});
    if (kern.int8_dot.run == nullptr) continue;
    if (mbk::int8_dot_supported(isa))
      out.push_back({isa, Int8Variant::dot, kern.int8_dot.tile.name, 127});
    else
      std::printf("%s (%s): not run, this CPU lacks the extension\n", mbk::isa_name(isa),
                  kern.int8_dot.tile.name);
  }
  return out;
}

double sweep(const Kernel& kn, std::mt19937& rng, int* cases) {
  const mbk::gemm::Tile t = mbk::gemm::int8_tile(kn.isa, kn.variant);
  double worst = 0.0;
  int combo = 0;
  for (int64_t m : {int64_t(1), int64_t(t.mr - 1), int64_t(t.mr), int64_t(t.mr + 1), int64_t(37)}) {
    for (int64_t n : {int64_t(1), int64_t(t.nr - 1), int64_t(t.nr), int64_t(t.nr + 3), int64_t(130)}) {
      for (int64_t k : {1, 2, 3, 4, 5, 7, 64, 131}) {
        if (m < 1 || n < 1) continue;
        const Act act = static_cast<Act>(combo % 3);
        const Norm norm = static_cast<Norm>((combo / 3) % 3);
        const bool res = combo % 2 == 0, smooth = combo % 4 < 2;
        const int threads = 1 + combo % 2;
        ++combo;
        Problem p = make_problem(m, n, k, smooth, act, res, norm, combo % 3, rng, kn.weight_max);
        PackedWeights pw = pack(p, kn);
        std::vector<float> c(static_cast<size_t>(m * p.ldc), -7.0f);
        mbk::gemm::gemm(p.a.data(), p.lda, m, pw, c.data(), p.ldc, epilogue(p), threads);
        const double err = reference_error(p, c.data());
        worst = std::fmax(worst, err);
        CHECK(err <= kTol, "%s M=%lld N=%lld K=%lld act=%d res=%d norm=%d smooth=%d threads=%d: %.3g",
              kn.name, (long long)m, (long long)n, (long long)k, int(act), int(res),
              int(norm), int(smooth), threads, err);
        ++*cases;
      }
    }
  }
  return worst;
}

// |a| = 127 and |w| = the kernel's weight_max in every product, signs chosen so that pair sums reach
// their extremes (+-2 * 255 * 63 on A + 128 for the narrow kernels) and whole dot products
// 127 * weight_max * K up to the largest K: exact, or a saturating kernel shows.
void worst_case_products(const Kernel& kn, std::mt19937& rng) {
  for (int64_t k : {int64_t(2), int64_t(8), int64_t(512), mbk::gemm::kMaxInt8K}) {
    Problem p = make_problem(4, 16, k, false, Act::none, false, Norm::none, 0, rng);
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t c = 0; c < k; ++c) p.a[i * p.lda + c] = (i % 2 == 0 || c % 3 != 0) ? 1e7f : -1e7f;
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t c = 0; c < k; ++c)
        p.w[j * k + c] = static_cast<int8_t>(j % 2 == 0 ? kn.weight_max : -kn.weight_max);
      p.scale[j] = 1.0f;
      p.bias[j] = 0.0f;
    }
    PackedWeights pw = pack(p, kn);
    std::vector<float> c(static_cast<size_t>(p.m * p.ldc));
    mbk::gemm::gemm(p.a.data(), p.lda, p.m, pw, c.data(), p.ldc, epilogue(p), 1);
    for (int64_t i = 0; i < p.m; ++i) {
      int64_t acc = 0;
      for (int64_t cc = 0; cc < k; ++cc) acc += (p.a[i * p.lda + cc] > 0 ? 127 : -127) * kn.weight_max;
      for (int64_t j = 0; j < p.n; ++j) {
        const double want = double(j % 2 == 0 ? acc : -acc) * (1e7 / 127.0);
        CHECK(std::fabs(c[i * p.ldc + j] - want) <= 1e-6 * std::fabs(want) + 1e-3,
              "%s worst case K=%lld row %lld col %lld: got %.9g want %.9g", kn.name,
              (long long)k, (long long)i, (long long)j, c[i * p.ldc + j], want);
      }
    }
  }
}

// A zero row gives the bias, a row holding inf or NaN gives NaN, and neither touches the others.
void special_rows(const Kernel& kn, std::mt19937& rng) {
  Problem p = make_problem(3, 20, 9, true, Act::none, false, Norm::none, 0, rng, kn.weight_max);
  for (int64_t c = 0; c < p.k; ++c) p.a[c] = 0.0f;
  p.a[p.lda + 4] = std::nanf("");
  PackedWeights pw = pack(p, kn);
  std::vector<float> c(static_cast<size_t>(p.m * p.ldc));
  mbk::gemm::gemm(p.a.data(), p.lda, p.m, pw, c.data(), p.ldc, epilogue(p), 1);
  for (int64_t j = 0; j < p.n; ++j) {
    CHECK(c[j] == p.bias[j], "%s zero row col %lld: got %g want the bias %g", kn.name,
          (long long)j, c[j], p.bias[j]);
    CHECK(std::isnan(c[p.ldc + j]), "%s NaN row col %lld: got %g, want NaN", kn.name,
          (long long)j, c[p.ldc + j]);
  }
  p.m = 1;  // the third row alone: the same as in the batch
  std::vector<float> alone(static_cast<size_t>(p.ldc));
  mbk::gemm::gemm(p.a.data() + 2 * p.lda, p.lda, 1, pw, alone.data(), p.ldc, epilogue(p), 1);
  for (int64_t j = 0; j < p.n; ++j)
    CHECK(alone[j] == c[2 * p.ldc + j], "%s row 2 col %lld: %g in the batch, %g alone",
          kn.name, (long long)j, c[2 * p.ldc + j], alone[j]);
  p.a[2 * p.lda] = INFINITY;
  mbk::gemm::gemm(p.a.data() + 2 * p.lda, p.lda, 1, pw, alone.data(), p.ldc, epilogue(p), 1);
  CHECK(std::isnan(alone[0]), "%s inf row: got %g, want NaN", kn.name, alone[0]);
}

// The fused FFN stack on int8 weights runs the same kernels on row tiles: equal bit for bit to
// its GEMMs one at a time (row quantization is per row, so row tiles cannot change it).
void ffn_stack_matches_gemms(const Kernel& kn, std::mt19937& rng) {
  const int64_t rows = 29, width = 24, inter = 40;
  Problem w1 = make_problem(1, inter, width, true, Act::relu, false, Norm::none, 0, rng, kn.weight_max);
  Problem w2 = make_problem(1, width, inter, false, Act::none, false, Norm::nonorm, 0, rng, kn.weight_max);
  PackedWeights p1 = pack(w1, kn), p2 = pack(w2, kn);
  std::vector<float> x(static_cast<size_t>(rows * width));
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (float& e : x) e = u(rng);
  const mbk::ops::FfnWeights ffn{&p1, &p2, w2.nw.data(), w2.nb.data(), 0.0f};
  for (int threads : {1, 2}) {
    std::vector<float> y(x.size()), h(static_cast<size_t>(rows * inter)), want(x.size());
    mbk::ops::ffn_stack_forward(x.data(), width, rows, &ffn, 1, Act::relu, Norm::nonorm, y.data(),
                                width, threads);
    mbk::gemm::Epilogue e1;
    e1.act = Act::relu;
    mbk::gemm::gemm(x.data(), width, rows, p1, h.data(), inter, e1, 1);
    mbk::ops::linear_norm_forward(h.data(), inter, rows, p2, x.data(), width, Norm::nonorm,
                                  w2.nw.data(), w2.nb.data(), 0.0f, want.data(), width, 1);
    bool same = true;
    for (size_t i = 0; i < y.size(); ++i) same &= y[i] == want[i];
    CHECK(same, "%s ffn_stack on int8 weights (%d threads) differs from its GEMMs", kn.name, threads);
  }
}

template <class F>
bool throws(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

void check_errors(const Kernel& kn) {
  std::vector<int8_t> w(6, 1);
  std::vector<float> scale(2, 1.0f);
  const auto pack_2x3 = [&] {
    PackedWeights(mbk::gemm::Int8Weight{w.data(), 3, 1, scale.data()}, nullptr, 2, 3, kn.isa, kn.variant);
  };
  CHECK(!throws(pack_2x3), "a valid int8 packing must not throw");
  w[4] = -128;
  CHECK(throws(pack_2x3), "an int8 weight of -128 must throw");
  w[4] = 1;
  for (float bad : {0.0f, -1.0f, std::nanf(""), INFINITY}) {
    scale[1] = bad;
    CHECK(throws(pack_2x3), "an int8 scale of %g must throw", bad);
  }
  scale[1] = 1.0f;
  if (kn.weight_max < 127) {
    w[4] = static_cast<int8_t>(kn.weight_max + 1);
    CHECK(throws(pack_2x3), "%s: an int8 weight of %d must throw", kn.name, kn.weight_max + 1);
    w[4] = static_cast<int8_t>(-kn.weight_max - 1);
    CHECK(throws(pack_2x3), "%s: an int8 weight of %d must throw", kn.name, -kn.weight_max - 1);
    w[4] = static_cast<int8_t>(-kn.weight_max);
    CHECK(!throws(pack_2x3), "%s: an int8 weight of %d must pack", kn.name, -kn.weight_max);
    w[4] = 1;
  }
  std::vector<int8_t> wide(static_cast<size_t>(mbk::gemm::kMaxInt8K + 1), 1);
  CHECK(throws([&] {
          PackedWeights(mbk::gemm::Int8Weight{wide.data(), 1, 1, scale.data()}, nullptr, 1,
                        mbk::gemm::kMaxInt8K + 1, kn.isa, kn.variant);
        }),
        "k > kMaxInt8K must throw");
}

// An ISA's variants compute the same integers and share the epilogue code: equal bit for bit,
// every epilogue, K not a multiple of either group, on weights the second variant takes.
void variants_agree(const Kernel& base, const Kernel& dot, std::mt19937& rng) {
  for (int combo = 0; combo < 9; ++combo) {
    Problem p = make_problem(13, 70, 67, combo % 2 == 0, static_cast<Act>(combo % 3), combo % 2 == 1,
                             static_cast<Norm>(combo / 3), 1, rng, dot.weight_max);
    std::vector<float> cb(static_cast<size_t>(p.m * p.ldc)), cd(cb.size());
    mbk::gemm::gemm(p.a.data(), p.lda, p.m, pack(p, base), cb.data(), p.ldc, epilogue(p), 1);
    mbk::gemm::gemm(p.a.data(), p.lda, p.m, pack(p, dot), cd.data(), p.ldc, epilogue(p), 1);
    bool same = true;
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) same &= cb[i * p.ldc + j] == cd[i * p.ldc + j];
    CHECK(same, "%s and %s differ (act=%d norm=%d)", base.name, dot.name, combo % 3, combo / 3);
  }
}

// The variant packing picks by default: dot exactly where the ISA has one and this CPU runs it,
// else narrow where the ISA has one and the weights are within its range, else base; naming a
// variant the CPU cannot run (or the ISA lacks) throws.
void variant_choice(Isa isa) {
  const mbk::gemm::IsaGemm& kern = mbk::gemm::isa_gemm(isa);
  const bool dot = kern.int8_dot.run != nullptr && mbk::int8_dot_supported(isa);
  const bool narrow = kern.int8_narrow.run != nullptr;
  for (int most : {1, 63, 64, 127}) {
    std::vector<int8_t> w(6, 1);
    w[5] = static_cast<int8_t>(-most);
    std::vector<float> scale(2, 1.0f);
    const PackedWeights best(mbk::gemm::Int8Weight{w.data(), 3, 1, scale.data()}, nullptr, 2, 3, isa);
    const bool fits = narrow && most <= kern.int8_narrow.weight_max;
    const Int8Variant want = dot ? Int8Variant::dot : fits ? Int8Variant::narrow : Int8Variant::base;
    const mbk::gemm::Tile tile = dot ? kern.int8_dot.tile : fits ? kern.int8_narrow.tile : kern.int8.tile;
    CHECK(best.int8_variant() == want && best.nr() == tile.nr &&
              std::string(mbk::gemm::int8_tile(isa, Int8Variant::best, most).name) == tile.name,
          "%s, weights up to %d: the default int8 kernel must be %s", mbk::isa_name(isa), most, tile.name);
  }
  if (!narrow)
    CHECK(throws([&] { mbk::gemm::int8_tile(isa, Int8Variant::narrow); }),
          "%s: no narrow kernel, int8_tile(narrow) must throw", mbk::isa_name(isa));
  if (!dot)
    CHECK(throws([&] { mbk::gemm::int8_tile(isa, Int8Variant::dot); }),
          "%s: no dot-product kernel this CPU runs, int8_tile(dot) must throw", mbk::isa_name(isa));
}

}  // namespace

int main() {
  std::mt19937 rng(97);
  const std::vector<Kernel> kernels = int8_kernels();
  for (Isa isa : mbk::supported_isas()) {
    if (mbk::gemm::isa_gemm(isa).int8.run == nullptr) {
      CHECK(throws([&] { mbk::gemm::int8_tile(isa); }), "%s has no int8 kernel: int8_tile must throw",
            mbk::isa_name(isa));
      std::printf("%s: no int8 kernel\n", mbk::isa_name(isa));
    } else {
      variant_choice(isa);
    }
  }
  for (const Kernel& kn : kernels) {
    int cases = 0;
    const double worst = sweep(kn, rng, &cases);
    worst_case_products(kn, rng);
    special_rows(kn, rng);
    ffn_stack_matches_gemms(kn, rng);
    check_errors(kn);
    if (kn.variant != Int8Variant::base)
      variants_agree({kn.isa, Int8Variant::base, mbk::gemm::isa_gemm(kn.isa).int8.tile.name, 127}, kn, rng);
    std::printf("%s (%s): %d cases, worst rel err %.3g (tol %.0e)\n", mbk::isa_name(kn.isa), kn.name,
                cases, worst, kTol);
  }
  CHECK(!kernels.empty(), "no ISA with an int8 kernel (scalar always has one)");
  return mbk::test::check_exit_code();
}
