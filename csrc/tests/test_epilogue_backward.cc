// The epilogue backward kernels (gemm/epilogue_backward.h) on every compiled-and-supported ISA
// against a double-precision reference: LayerNorm backward (gt, gw, gb, sum of gt) and the
// ReLU/GELU backward (gu, act(u), sum of gu) at row and column counts around the vector widths and
// the 64-row chunks, 1 and 2 threads; column sums bitwise equal across thread counts.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "gemm/epilogue_backward.h"

namespace {

using mbk::Isa;
using mbk::gemm::Act;

// Errors are judged against the magnitude of the terms (|a| + |b| ...), so cancellation in random
// data does not count against the kernel: a correctly rounded fp32 evaluation is within ~1e-6.
constexpr double kTol = 2e-6;

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -2.0f, float hi = 2.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

// Not vectorized: aarch64 GCC 12 hits an internal compiler error vectorizing this fmax reduction.
__attribute__((optimize("no-tree-vectorize"))) double max_err(const std::vector<float>& got,
                                                              const std::vector<double>& ref,
                                                              const std::vector<double>& mag) {
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::fmax(worst, std::fabs(got[i] - ref[i]) / std::fmax(mag[i], 1e-30));
  return worst;
}

void test_layernorm(Isa isa, int64_t rows, int64_t n, int threads) {
  std::mt19937 rng(static_cast<unsigned>(rows * 131 + n));
  const std::vector<float> g = random_vec(rows * n, rng), w = random_vec(n, rng, 0.5f, 1.5f);
  std::vector<float> t = random_vec(rows * n, rng);
  for (int64_t i = 0; i < rows * n; ++i) t[i] += 3.0f;  // a mean far from 0, as real rows have
  const float eps = 1e-5f;
  std::vector<float> gt(rows * n), gw(n), gb(n), gs(n);
  mbk::gemm::layernorm_backward(g.data(), t.data(), w.data(), eps, gt.data(), gw.data(), gb.data(),
                                gs.data(), rows, n, isa, threads);
  std::vector<double> rgt(rows * n), mgt(rows * n), rgw(n, 0.0), mgw(n, 0.0), rgb(n, 0.0),
      mgb(n, 0.0), rgs(n, 0.0), mgs(n, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < n; ++c) mean += t[r * n + c];
    mean /= n;
    for (int64_t c = 0; c < n; ++c) var += (t[r * n + c] - mean) * (t[r * n + c] - mean);
    const double rstd = 1.0 / std::sqrt(var / n + eps);
    double a1 = 0.0, a2 = 0.0, m1 = 0.0, m2 = 0.0;
    // t_hat's magnitude is that of its inputs, (|t| + |mean|) rstd: t - mean cancels.
    const auto th_mag = [&](int64_t i) { return (std::fabs(t[i]) + std::fabs(mean)) * rstd; };
    for (int64_t c = 0; c < n; ++c) {
      const double gw_ = double(g[r * n + c]) * w[c], th = (t[r * n + c] - mean) * rstd;
      a1 += gw_;
      a2 += gw_ * th;
      m1 += std::fabs(gw_);
      m2 += std::fabs(gw_) * th_mag(r * n + c);
    }
    for (int64_t c = 0; c < n; ++c) {
      const size_t i = r * n + c;
      const double gw_ = double(g[i]) * w[c], th = (t[i] - mean) * rstd;
      rgt[i] = rstd * (gw_ - a1 / n - th * a2 / n);
      mgt[i] = rstd * (std::fabs(gw_) + m1 / n + th_mag(i) * m2 / n);
      rgw[c] += g[i] * th;
      mgw[c] += std::fabs(g[i]) * th_mag(i);
      rgb[c] += g[i];
      mgb[c] += std::fabs(g[i]);
      rgs[c] += rgt[i];
      mgs[c] += mgt[i];
    }
  }
  const char* name = mbk::isa_name(isa);
  const double e[] = {max_err(gt, rgt, mgt), max_err(gw, rgw, mgw), max_err(gb, rgb, mgb),
                      max_err(gs, rgs, mgs)};
  for (int k = 0; k < 4; ++k)
    CHECK(e[k] <= kTol, "layernorm_backward %s rows=%lld n=%lld threads=%d output %d: err %.3g",
          name, static_cast<long long>(rows), static_cast<long long>(n), threads, k, e[k]);
  if (threads == 2) {  // fixed chunks: the same sums on one thread
    std::vector<float> gt1(rows * n), gw1(n), gb1(n), gs1(n);
    mbk::gemm::layernorm_backward(g.data(), t.data(), w.data(), eps, gt1.data(), gw1.data(),
                                  gb1.data(), gs1.data(), rows, n, isa, 1);
    CHECK(std::memcmp(gw.data(), gw1.data(), n * sizeof(float)) == 0 &&
              std::memcmp(gs.data(), gs1.data(), n * sizeof(float)) == 0,
          "layernorm_backward %s rows=%lld: column sums differ between 1 and 2 threads", name,
          static_cast<long long>(rows));
  }
}

double gelu(double u) { return 0.5 * u * (1.0 + std::erf(u / std::sqrt(2.0))); }
double gelu_grad(double u) {
  return 0.5 * (1.0 + std::erf(u / std::sqrt(2.0))) + u * std::exp(-0.5 * u * u) / std::sqrt(2.0 * M_PI);
}

void test_activation(Isa isa, Act act, int64_t rows, int64_t n, int threads) {
  std::mt19937 rng(static_cast<unsigned>(rows * 7 + n));
  std::vector<float> u = random_vec(rows * n, rng, -6.0f, 6.0f);
  const std::vector<float> u0 = u, gh = random_vec(rows * n, rng);
  std::vector<float> gu(rows * n), gs(n);
  mbk::gemm::activation_backward(act, u.data(), gh.data(), gu.data(), gs.data(), rows, n, isa, threads);
  std::vector<double> rgu(rows * n), mgu(rows * n), rh(rows * n), mh(rows * n), rgs(n, 0.0),
      mgs(n, 0.0);
  for (int64_t i = 0; i < rows * n; ++i) {
    const double x = u0[i];
    const double d = act == Act::relu ? (x > 0 ? 1.0 : 0.0) : gelu_grad(x);
    rgu[i] = gh[i] * d;
    mgu[i] = std::fabs(gh[i]) * (act == Act::relu ? d : 1.0 + std::fabs(x) * 0.4);
    rh[i] = act == Act::relu ? std::fmax(x, 0.0) : gelu(x);
    mh[i] = std::fabs(x);
    rgs[i % n] += rgu[i];
    mgs[i % n] += mgu[i];
  }
  const char* name = mbk::isa_name(isa);
  const double e[] = {max_err(gu, rgu, mgu), max_err(u, rh, mh), max_err(gs, rgs, mgs)};
  for (int k = 0; k < 3; ++k)
    CHECK(e[k] <= kTol, "activation_backward %s %s rows=%lld n=%lld threads=%d output %d: err %.3g",
          name, act == Act::relu ? "relu" : "gelu", static_cast<long long>(rows),
          static_cast<long long>(n), threads, k, e[k]);
}

}  // namespace

int main() {
  for (Isa isa : mbk::supported_isas()) {
    for (int64_t rows : {1, 7, 64, 130})
      for (int64_t n : {1, 13, 128, 515})
        for (int threads : {1, 2}) {
          test_layernorm(isa, rows, n, threads);
          test_activation(isa, Act::relu, rows, n, threads);
          test_activation(isa, Act::gelu, rows, n, threads);
        }
    std::printf("%s: epilogue backward checked\n", mbk::isa_name(isa));
  }
  return mbk::test::check_exit_code();
}
