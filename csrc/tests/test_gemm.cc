// The packed-weight GEMM, linear_norm and ffn_stack on every compiled-and-supported ISA against a
// double-precision reference: M, N, K below, at and above each ISA's tile (and K = 0), every
// epilogue (act none/relu/gelu x residual or not x no norm/NoNorm/LayerNorm), strided A/C,
// transposed weights, 1 and 2 threads (both thread splits); plus the AVX-512 tile geometry
// (6 x 64, 16 lanes) run through an emulated 16-lane vector where AVX-512 cannot run.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "gemm/gemm.h"
#include "gemm/gemm_kernels.h"
#include "ops/ffn_stack.h"
#include "ops/linear_norm.h"

// A portable 16-lane vector with the VecF32 interface: runs the AVX-512 kernels' template code
// (tile 6 x 64, tails through 16-lane partial loads/stores) on any CPU.
struct Emu16 {
  using value_type = float;
  static constexpr int W = 16;
  struct reg {
    float v[16];
  };
  static reg set1(float x) {
    reg r;
    for (float& e : r.v) e = x;
    return r;
  }
  static reg zero() { return set1(0.0f); }
  static reg loadu(const float* p) { return load_partial(p, W); }
  static reg load(const float* p) { return loadu(p); }
  static void storeu(float* p, reg v) { store_partial(p, v, W); }
  static void store(float* p, reg v) { storeu(p, v); }
  static reg load_partial(const float* p, int n) {
    reg r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static void store_partial(float* p, reg v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v.v[i];
  }
  template <class F>
  static reg map2(reg a, reg b, F f) {
    for (int i = 0; i < W; ++i) a.v[i] = f(a.v[i], b.v[i]);
    return a;
  }
  static reg add(reg a, reg b) { return map2(a, b, [](float x, float y) { return x + y; }); }
  static reg mul(reg a, reg b) { return map2(a, b, [](float x, float y) { return x * y; }); }
  static reg max(reg a, reg b) { return map2(a, b, [](float x, float y) { return x > y ? x : y; }); }
  static reg min(reg a, reg b) { return map2(a, b, [](float x, float y) { return x < y ? x : y; }); }
  static reg div(reg a, reg b) { return map2(a, b, [](float x, float y) { return x / y; }); }
  static reg fmadd(reg a, reg b, reg c) {
    for (int i = 0; i < W; ++i) a.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return a;
  }
  static float reduce_add(reg a) {
    float s = 0.0f;
    for (float e : a.v) s += e;
    return s;
  }
};

#include "gemm/gemm_impl.h"

namespace {

using mbk::Isa;
using mbk::gemm::Act;
using mbk::gemm::Norm;

constexpr double kTol = 1e-5;

std::vector<float> random_vec(size_t n, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = static_cast<float>(dist(rng));
  return v;
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// One GEMM problem with its inputs; W is [n, k] at w[n * sn + k * sk].
struct Problem {
  int64_t m, n, k, lda, ldc, ldr;
  int64_t sn, sk;
  std::vector<float> a, w, bias, res, nw, nb;
  bool has_bias, has_res;
  Act act;
  Norm norm;
  float eps = 1e-5f;
};

Problem make_problem(int64_t m, int64_t n, int64_t k, Act act, bool has_res, Norm norm,
                     bool has_bias, bool transposed_w, int64_t pad, std::mt19937& rng) {
  Problem p;
  p.m = m, p.n = n, p.k = k;
  p.lda = k + pad, p.ldc = n + pad, p.ldr = n + 2 * pad;
  p.sn = transposed_w ? 1 : k;
  p.sk = transposed_w ? n : 1;
  p.a = random_vec(static_cast<size_t>(m * p.lda), rng);
  p.w = random_vec(static_cast<size_t>(n * k), rng, -0.5, 0.5);
  p.bias = random_vec(static_cast<size_t>(n), rng);
  p.res = random_vec(static_cast<size_t>(m * p.ldr), rng);
  p.nw = random_vec(static_cast<size_t>(n), rng, 0.5, 1.5);
  p.nb = random_vec(static_cast<size_t>(n), rng);
  p.has_bias = has_bias, p.has_res = has_res, p.act = act, p.norm = norm;
  return p;
}

// Per row: ||out - ref|| / ||mag||, where mag bounds the rounding error's scale (sums of absolute
// values; for LayerNorm the normalized output itself, whose inputs are well spread here).
double reference_error(const Problem& p, const float* c, int64_t ldc) {
  double worst = 0.0;
  std::vector<double> v(static_cast<size_t>(p.n)), mag(static_cast<size_t>(p.n));
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double s = p.has_bias ? p.bias[j] : 0.0, sa = std::fabs(s);
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const double t = double(p.a[i * p.lda + kk]) * double(p.w[j * p.sn + kk * p.sk]);
        s += t;
        sa += std::fabs(t);
      }
      if (p.act == Act::relu) s = s > 0.0 ? s : 0.0;
      if (p.act == Act::gelu) s = gelu(s), sa *= 1.13;
      if (p.has_res) s += p.res[i * p.ldr + j], sa += std::fabs(p.res[i * p.ldr + j]);
      if (p.norm == Norm::nonorm) {
        sa = sa * std::fabs(p.nw[j]) + std::fabs(p.nb[j]);
        s = s * p.nw[j] + p.nb[j];
      }
      v[j] = s;
      mag[j] = sa;
    }
    if (p.norm == Norm::layernorm) {
      double mean = 0.0, var = 0.0;
      for (double e : v) mean += e;
      mean /= double(p.n);
      for (double e : v) var += (e - mean) * (e - mean);
      var /= double(p.n);
      for (int64_t j = 0; j < p.n; ++j) {
        v[j] = (v[j] - mean) / std::sqrt(var + p.eps) * p.nw[j] + p.nb[j];
        mag[j] = std::fabs(v[j]) + std::fabs(p.nb[j]);
      }
    }
    double e2 = 0.0, m2 = 0.0;
    for (int64_t j = 0; j < p.n; ++j) {
      const double d = double(c[i * ldc + j]) - v[j];
      e2 += d * d;
      m2 += mag[j] * mag[j];
    }
    worst = std::fmax(worst, m2 > 0.0 ? std::sqrt(e2 / m2) : std::sqrt(e2));
  }
  return worst;
}

mbk::gemm::Epilogue epilogue(const Problem& p) {
  mbk::gemm::Epilogue ep;
  ep.act = p.act;
  ep.residual = p.has_res ? p.res.data() : nullptr;
  ep.ld_residual = p.ldr;
  ep.norm = p.norm;
  ep.norm_weight = p.nw.data();
  ep.norm_bias = p.nb.data();
  ep.eps = p.eps;
  return ep;
}

// Sizes around the tile (1, below, at, above, twice above) and K from 0 up; every size gets the
// next epilogue in turn, so all 18 combinations meet every edge kind.
double sweep_isa(Isa isa, std::mt19937& rng, int* cases) {
  const mbk::gemm::Tile t = mbk::gemm::tile(isa);
  const int64_t ms[] = {1, t.mr - 1, t.mr, t.mr + 1, 2 * t.mr + 1, 37};
  const int64_t ns[] = {1, t.nr - 1, t.nr, t.nr + 1, 2 * t.nr + 3, 129};
  const int64_t ks[] = {0, 1, 7, 64, 129};
  double worst = 0.0;
  int combo = 0;
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        if (m < 1 || n < 1) continue;
        const Act act = static_cast<Act>(combo % 3);
        const bool res = (combo / 3) % 2 == 1;
        const Norm norm = static_cast<Norm>((combo / 6) % 3);
        const bool bias = combo % 5 != 0, transposed = combo % 7 == 0;
        const int64_t pad = combo % 2 == 0 ? 0 : 3;
        const int threads = 1 + combo % 2;
        ++combo;
        Problem p = make_problem(m, n, k, act, res, norm, bias, transposed, pad, rng);
        mbk::gemm::PackedWeights pw(p.w.data(), p.sn, p.sk, bias ? p.bias.data() : nullptr, n, k,
                                    isa);
        std::vector<float> c(static_cast<size_t>(m * p.ldc), -777.0f);
        mbk::gemm::gemm(p.a.data(), p.lda, m, pw, c.data(), p.ldc, epilogue(p), threads);
        const double err = reference_error(p, c.data(), p.ldc);
        worst = std::fmax(worst, err);
        CHECK(err <= kTol, "%s M=%lld N=%lld K=%lld act=%d res=%d norm=%d bias=%d wT=%d pad=%lld "
              "threads=%d: rel err %.3g", t.name, (long long)m, (long long)n, (long long)k,
              int(act), int(res), int(norm), int(bias), int(transposed), (long long)pad, threads,
              err);
        // Padding columns between rows of C are never written.
        bool pad_intact = true;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = n; j < p.ldc; ++j) pad_intact &= c[i * p.ldc + j] == -777.0f;
        CHECK(pad_intact, "%s M=%lld N=%lld K=%lld: wrote past column N", t.name, (long long)m,
              (long long)n, (long long)k);
        ++*cases;
      }
  return worst;
}

// Shapes big enough that 2 threads really split: whole-row blocks (M = 129) and the
// row-block x panel-chunk grid with LayerNorm as a second pass (M = 7, wide N).
double parallel_cases(Isa isa, std::mt19937& rng, int* cases) {
  const int64_t shapes[][3] = {{129, 130, 200}, {7, 515, 128}, {2, 300, 300}};
  double worst = 0.0;
  for (const auto& s : shapes)
    for (Norm norm : {Norm::none, Norm::nonorm, Norm::layernorm}) {
      Problem p = make_problem(s[0], s[1], s[2], Act::relu, true, norm, true, false, 1, rng);
      mbk::gemm::PackedWeights pw(p.w.data(), p.sn, p.sk, p.bias.data(), p.n, p.k, isa);
      std::vector<float> c(static_cast<size_t>(p.m * p.ldc));
      mbk::gemm::gemm(p.a.data(), p.lda, p.m, pw, c.data(), p.ldc, epilogue(p), 2);
      const double err = reference_error(p, c.data(), p.ldc);
      worst = std::fmax(worst, err);
      CHECK(err <= kTol, "%s parallel M=%lld N=%lld K=%lld norm=%d: rel err %.3g",
            mbk::isa_name(isa), (long long)s[0], (long long)s[1], (long long)s[2], int(norm), err);
      ++*cases;
    }
  return worst;
}

double linear_norm_cases(Isa isa, std::mt19937& rng, int* cases) {
  double worst = 0.0;
  for (int64_t rows : {1, 7, 130})
    for (Norm norm : {Norm::nonorm, Norm::layernorm})
      for (bool res : {false, true}) {
        Problem p = make_problem(rows, 129, 70, Act::none, res, norm, true, false, 2, rng);
        mbk::gemm::PackedWeights pw(p.w.data(), p.sn, p.sk, p.bias.data(), p.n, p.k, isa);
        std::vector<float> y(static_cast<size_t>(rows * p.ldc));
        mbk::ops::linear_norm_forward(p.a.data(), p.lda, rows, pw, res ? p.res.data() : nullptr,
                                      p.ldr, norm, p.nw.data(), p.nb.data(), p.eps, y.data(),
                                      p.ldc, 2);
        const double err = reference_error(p, y.data(), p.ldc);
        worst = std::fmax(worst, err);
        CHECK(err <= kTol, "%s linear_norm rows=%lld norm=%d res=%d: rel err %.3g",
              mbk::isa_name(isa), (long long)rows, int(norm), int(res), err);
        ++*cases;
      }
  return worst;
}

// The stack against a double reference of the same recurrence.
double ffn_stack_cases(Isa isa, std::mt19937& rng, int* cases) {
  const int64_t width = 37, inter = 70, count = 4;
  double worst = 0.0;
  for (int64_t rows : {1, 7, 69, 150})
    for (Act act : {Act::relu, Act::gelu})
      for (Norm norm : {Norm::nonorm, Norm::layernorm}) {
        const int64_t ldx = width + 1;
        std::vector<float> x = random_vec(static_cast<size_t>(rows * ldx), rng);
        std::vector<std::vector<float>> w1, b1, w2, b2, nw, nb;
        std::vector<mbk::gemm::PackedWeights> packed;
        packed.reserve(2 * count);
        std::vector<mbk::ops::FfnWeights> ffns;
        for (int i = 0; i < count; ++i) {
          w1.push_back(random_vec(inter * width, rng, -0.3, 0.3));
          b1.push_back(random_vec(inter, rng, -0.1, 0.1));
          w2.push_back(random_vec(width * inter, rng, -0.2, 0.2));
          b2.push_back(random_vec(width, rng, -0.1, 0.1));
          nw.push_back(random_vec(width, rng, 0.5, 1.0));
          nb.push_back(random_vec(width, rng, -0.1, 0.1));
          packed.emplace_back(w1[i].data(), width, 1, b1[i].data(), inter, width, isa);
          packed.emplace_back(w2[i].data(), inter, 1, b2[i].data(), width, inter, isa);
        }
        for (int i = 0; i < count; ++i)
          ffns.push_back({&packed[2 * i], &packed[2 * i + 1], nw[i].data(), nb[i].data(),
                          i == count - 1 ? 1e-5f : 1e-6f});
        std::vector<float> y(static_cast<size_t>(rows * width));
        mbk::ops::ffn_stack_forward(x.data(), ldx, rows, ffns.data(), count, act, norm, y.data(),
                                    width, 2);
        // Reference: per row, in double; error relative to the row's norm.
        double err = 0.0;
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<double> v(width), h(inter);
          for (int64_t j = 0; j < width; ++j) v[j] = x[r * ldx + j];
          for (int i = 0; i < count; ++i) {
            for (int64_t o = 0; o < inter; ++o) {
              double s = b1[i][o];
              for (int64_t j = 0; j < width; ++j) s += double(w1[i][o * width + j]) * v[j];
              h[o] = act == Act::relu ? (s > 0 ? s : 0) : gelu(s);
            }
            std::vector<double> u(width);
            for (int64_t j = 0; j < width; ++j) {
              double s = b2[i][j];
              for (int64_t o = 0; o < inter; ++o) s += double(w2[i][j * inter + o]) * h[o];
              u[j] = s + v[j];
            }
            if (norm == Norm::layernorm) {
              double mean = 0, var = 0;
              for (double e : u) mean += e;
              mean /= width;
              for (double e : u) var += (e - mean) * (e - mean);
              var /= width;
              const double eps = i == count - 1 ? 1e-5 : 1e-6;
              for (int64_t j = 0; j < width; ++j)
                v[j] = (u[j] - mean) / std::sqrt(var + double(float(eps))) * nw[i][j] + nb[i][j];
            } else {
              for (int64_t j = 0; j < width; ++j) v[j] = u[j] * nw[i][j] + nb[i][j];
            }
          }
          double e2 = 0, r2 = 0;
          for (int64_t j = 0; j < width; ++j) {
            e2 += (y[r * width + j] - v[j]) * (y[r * width + j] - v[j]);
            r2 += v[j] * v[j];
          }
          err = std::fmax(err, std::sqrt(e2 / r2));
        }
        worst = std::fmax(worst, err);
        CHECK(err <= kTol, "%s ffn_stack rows=%lld act=%d norm=%d: rel err %.3g",
              mbk::isa_name(isa), (long long)rows, int(act), int(norm), err);
        ++*cases;
      }
  return worst;
}

// The AVX-512 tile family's template code with a 16-lane emulated vector, on the packed layout
// of the avx512 ISA (needs that ISA compiled, not runnable).
void emulated_avx512(std::mt19937& rng) {
  bool compiled = false;
  for (Isa isa : mbk::compiled_isas()) compiled |= isa == Isa::avx512;
  if (!compiled) {
    std::printf("emulated 6x64: avx512 not compiled, skipped\n");
    return;
  }
  double worst = 0.0;
  int cases = 0, combo = 0;
  for (int64_t m : {1, 5, 6, 7, 13})
    for (int64_t n : {1, 15, 16, 17, 63, 64, 65, 131})
      for (int64_t k : {0, 3, 33}) {
        const Act act = static_cast<Act>(combo % 3);
        const Norm norm = static_cast<Norm>((combo / 3) % 3);
        const bool res = combo % 2 == 0;
        ++combo;
        Problem p = make_problem(m, n, k, act, res, norm, true, false, 1, rng);
        mbk::gemm::PackedWeights pw(p.w.data(), p.sn, p.sk, p.bias.data(), n, k, Isa::avx512);
        std::vector<float> c(static_cast<size_t>(m * p.ldc));
        const mbk::gemm::GemmArgs g =
            mbk::gemm::gemm_args(p.a.data(), p.lda, pw, c.data(), p.ldc, epilogue(p));
        mbk::gemm::run_rows<Emu16, 6, 4>(g, 0, m, 0, pw.panels());
        const double err = reference_error(p, c.data(), p.ldc);
        worst = std::fmax(worst, err);
        CHECK(err <= kTol, "emulated 6x64 M=%lld N=%lld K=%lld act=%d res=%d norm=%d: %.3g",
              (long long)m, (long long)n, (long long)k, int(act), int(res), int(norm), err);
        ++cases;
      }
  std::printf("emulated f32_gemm_6x64 (16 lanes): %d cases, worst rel err %.3g\n", cases, worst);
}

void check_errors() {
  bool threw = false;
  try {
    mbk::gemm::PackedWeights bad(nullptr, 1, 1, nullptr, -1, 2, Isa::scalar);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "PackedWeights with n < 0 must throw std::invalid_argument");
  const uint64_t before = mbk::gemm::pack_count();
  std::vector<float> w(6, 1.0f);
  mbk::gemm::PackedWeights once(w.data(), 3, 1, nullptr, 2, 3, Isa::scalar);
  CHECK(mbk::gemm::pack_count() == before + 1, "pack_count must count every packing");
}

}  // namespace

int main() {
  std::mt19937 rng(4321);
  for (Isa isa : mbk::supported_isas()) {
    mbk::set_isa(isa);
    int cases = 0;
    double worst = sweep_isa(isa, rng, &cases);
    worst = std::fmax(worst, parallel_cases(isa, rng, &cases));
    worst = std::fmax(worst, linear_norm_cases(isa, rng, &cases));
    worst = std::fmax(worst, ffn_stack_cases(isa, rng, &cases));
    std::printf("%s (%s): %d cases, worst rel err %.3g (tol %.0e)\n", mbk::isa_name(isa),
                mbk::gemm::tile(isa).name, cases, worst, kTol);
  }
  emulated_avx512(rng);
  check_errors();
  return mbk::test::check_exit_code();
}
