// NoNorm forward/backward on every compiled-and-supported ISA against a double-precision scalar
// reference: odd row/column counts (tails), with and without residual, 1 and 2 threads; plus
// bitwise determinism of the backward column sums and the ISA selection errors.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "ops/nonorm.h"

namespace {

using mbk::Isa;

constexpr double kTolF32 = 1e-6;
constexpr double kTolF64 = 1e-12;

template <typename T>
std::vector<T> random_vec(size_t n, std::mt19937& rng, double lo = -2.0, double hi = 2.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& e : v) e = static_cast<T>(dist(rng));
  return v;
}

// max over rows of ||out_row - ref_row|| / ||mag_row||, where mag is the reference computed on
// absolute values (|x + res| |w| + |b|, sum_r |g (x + res)|, ...). That is the relative error
// bound of a correctly rounded evaluation: cancellation in random data (an output near zero, a
// column sum of mixed signs) does not count against the kernel, an error in any row does.
double row_rel_err(const double* err2, const double* mag2, int64_t rows, int64_t cols) {
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double e = 0.0, m = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      e += err2[r * cols + c];
      m += mag2[r * cols + c];
    }
    worst = std::fmax(worst, std::sqrt(e) / std::fmax(std::sqrt(m), 1e-300));
  }
  return worst;
}

template <typename T>
double rel_err(const std::vector<T>& out, const std::vector<double>& ref,
               const std::vector<double>& mag, int64_t rows, int64_t cols) {
  std::vector<double> err2(out.size()), mag2(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    err2[i] = d * d;
    mag2[i] = mag[i] * mag[i];
  }
  return row_rel_err(err2.data(), mag2.data(), rows, cols);
}

// Exact results (double) and their magnitudes (the same sums over absolute values).
struct Reference {
  std::vector<double> y, gx, gw, gb;
  std::vector<double> y_mag, gx_mag, gw_mag, gb_mag;
};

template <typename T>
Reference reference(const std::vector<T>& x, const std::vector<T>* res, const std::vector<T>& w,
                    const std::vector<T>& b, const std::vector<T>& g, int64_t rows, int64_t cols) {
  const size_t n = static_cast<size_t>(rows * cols);
  Reference ref;
  for (auto* v : {&ref.y, &ref.gx, &ref.y_mag, &ref.gx_mag}) v->assign(n, 0.0);
  for (auto* v : {&ref.gw, &ref.gb, &ref.gw_mag, &ref.gb_mag}) v->assign(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const double xs = double(x[i]) + (res ? double((*res)[i]) : 0.0);
      const double xs_mag = std::fabs(double(x[i])) + (res ? std::fabs(double((*res)[i])) : 0.0);
      ref.y[i] = xs * double(w[c]) + double(b[c]);
      ref.y_mag[i] = xs_mag * std::fabs(double(w[c])) + std::fabs(double(b[c]));
      ref.gx[i] = double(g[i]) * double(w[c]);
      ref.gx_mag[i] = std::fabs(ref.gx[i]);
      ref.gw[c] += double(g[i]) * xs;
      ref.gw_mag[c] += std::fabs(double(g[i])) * xs_mag;
      ref.gb[c] += double(g[i]);
      ref.gb_mag[c] += std::fabs(double(g[i]));
    }
  return ref;
}

template <typename T>
double check_case(const char* isa, int64_t rows, int64_t cols, bool with_res, int threads,
                  double tol, std::mt19937& rng) {
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<T> x = random_vec<T>(n, rng), res = random_vec<T>(n, rng), g = random_vec<T>(n, rng);
  std::vector<T> w = random_vec<T>(cols, rng, 0.5, 1.5), b = random_vec<T>(cols, rng);
  const T* rp = with_res ? res.data() : nullptr;
  const Reference ref = reference(x, with_res ? &res : nullptr, w, b, g, rows, cols);

  std::vector<T> y(n), gx(n), gw(cols), gb(cols);
  mbk::ops::nonorm_forward(x.data(), rp, w.data(), b.data(), y.data(), rows, cols, threads);
  mbk::ops::nonorm_backward(g.data(), x.data(), rp, w.data(), gx.data(), gw.data(), gb.data(),
                            rows, cols, threads);
  const char* dtype = sizeof(T) == 4 ? "f32" : "f64";
  const double ey = rel_err(y, ref.y, ref.y_mag, rows, cols);
  const double egx = rel_err(gx, ref.gx, ref.gx_mag, rows, cols);
  const double egw = rel_err(gw, ref.gw, ref.gw_mag, 1, cols);
  const double egb = rel_err(gb, ref.gb, ref.gb_mag, 1, cols);
  CHECK(ey <= tol && egx <= tol && egw <= tol && egb <= tol,
        "%s %s rows=%lld cols=%lld res=%d threads=%d: rel err y=%.3g gx=%.3g gw=%.3g gb=%.3g "
        "(tol %.1g)",
        isa, dtype, (long long)rows, (long long)cols, int(with_res), threads, ey, egx, egw, egb,
        tol);

  // The same call again must give bitwise the same column sums.
  std::vector<T> gx2(n), gw2(cols), gb2(cols);
  mbk::ops::nonorm_backward(g.data(), x.data(), rp, w.data(), gx2.data(), gw2.data(), gb2.data(),
                            rows, cols, threads);
  CHECK(std::memcmp(gw.data(), gw2.data(), cols * sizeof(T)) == 0 &&
            std::memcmp(gb.data(), gb2.data(), cols * sizeof(T)) == 0 &&
            std::memcmp(gx.data(), gx2.data(), n * sizeof(T)) == 0,
        "%s %s rows=%lld cols=%lld res=%d threads=%d: backward not deterministic", isa, dtype,
        (long long)rows, (long long)cols, int(with_res), threads);
  return std::fmax(std::fmax(ey, egx), std::fmax(egw, egb));
}

// Large enough that 2 threads really run in parallel; repeated runs must agree bitwise.
void check_parallel_determinism(const char* isa, std::mt19937& rng) {
  const int64_t rows = 1000, cols = 129;
  const size_t n = rows * cols;
  std::vector<float> x = random_vec<float>(n, rng), g = random_vec<float>(n, rng);
  std::vector<float> w = random_vec<float>(cols, rng);
  std::vector<float> gx(n), gw0(cols), gb0(cols), gw(cols), gb(cols);
  mbk::ops::nonorm_backward(g.data(), x.data(), nullptr, w.data(), gx.data(), gw0.data(),
                            gb0.data(), rows, cols, 2);
  for (int rep = 0; rep < 20; ++rep) {
    mbk::ops::nonorm_backward(g.data(), x.data(), nullptr, w.data(), gx.data(), gw.data(),
                              gb.data(), rows, cols, 2);
    CHECK(std::memcmp(gw.data(), gw0.data(), cols * sizeof(float)) == 0 &&
              std::memcmp(gb.data(), gb0.data(), cols * sizeof(float)) == 0,
          "%s: 2-thread backward differs between runs (rep %d)", isa, rep);
  }
}

void check_isa_errors() {
  bool threw = false;
  try {
    mbk::set_isa("bogus");
  } catch (const std::invalid_argument& e) {
    threw = std::strstr(e.what(), "bogus") != nullptr;
  }
  CHECK(threw, "set_isa(\"bogus\") must throw std::invalid_argument naming it");
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::avx512_simde}) {
    if (mbk::isa_supported(isa)) continue;
    threw = false;
    try {
      mbk::set_isa(isa);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw, "set_isa(%s) must throw: not supported here", mbk::isa_name(isa));
  }
}

}  // namespace

int main() {
  std::printf("compiled:");
  for (Isa isa : mbk::compiled_isas()) std::printf(" %s", mbk::isa_name(isa));
  std::printf("\nsupported:");
  for (Isa isa : mbk::supported_isas()) std::printf(" %s", mbk::isa_name(isa));
  std::printf("\nbest: %s\n", mbk::isa_name(mbk::best_isa()));

  std::mt19937 rng(1234);
  const int64_t kRows[] = {1, 3, 17, 128};
  const int64_t kCols[] = {1, 7, 16, 127, 128, 129, 512};
  for (Isa isa : mbk::supported_isas()) {
    mbk::set_isa(isa);
    CHECK(mbk::active_isa() == isa, "set_isa(%s) did not take effect", mbk::isa_name(isa));
    int cases = 0;
    double worst_f32 = 0.0, worst_f64 = 0.0;
    for (int threads : {1, 2})
      for (int64_t rows : kRows)
        for (int64_t cols : kCols)
          for (bool with_res : {false, true}) {
            worst_f32 = std::fmax(worst_f32, check_case<float>(mbk::isa_name(isa), rows, cols,
                                                               with_res, threads, kTolF32, rng));
            worst_f64 = std::fmax(worst_f64, check_case<double>(mbk::isa_name(isa), rows, cols,
                                                                with_res, threads, kTolF64, rng));
            ++cases;
          }
    check_parallel_determinism(mbk::isa_name(isa), rng);
    std::printf("%s: %d shape cases, worst rel err f32 %.3g (tol %.0e), f64 %.3g (tol %.0e)\n",
                mbk::isa_name(isa), cases, worst_f32, kTolF32, worst_f64, kTolF64);
  }
  check_isa_errors();
  return mbk::test::check_exit_code();
}
