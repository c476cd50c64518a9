// ops::norm_backward (ops/norm.h), NoNorm and LayerNorm, against a straightforward double-precision
// backward and, for LayerNorm's gt, a central finite difference of the double forward: gt, gw, gb
// and gsum (the column sums of gt) at odd sizes around the vector widths and the 64-row chunks, 1
// and 2 threads, gsum null or not; column sums bitwise equal across thread counts for LayerNorm.
// Norm::none is refused.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "ops/norm.h"

namespace {

using mbk::gemm::Norm;

// Norm-wise relative error ||got - ref|| / ||ref||: fp32 rounding of a few terms per element
// (column sums: up to a few hundred) stays far below.
constexpr double kTol = 1e-5;

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0.0 ? den : 1.0));
}

// y = LayerNorm(t_row) * w + b in double, for one row.
void layernorm_row(const double* t, const std::vector<float>& w, double eps, int64_t n, double* y) {
  double mean = 0.0, var = 0.0;
  for (int64_t c = 0; c < n; ++c) mean += t[c];
  mean /= n;
  for (int64_t c = 0; c < n; ++c) var += (t[c] - mean) * (t[c] - mean);
  const double rstd = 1.0 / std::sqrt(var / n + eps);
  for (int64_t c = 0; c < n; ++c) y[c] = (t[c] - mean) * rstd * w[c];  // + b: no effect on grads
}

struct Ref {
  std::vector<double> gt, gw, gb, gsum;
};

Ref reference(Norm norm, const std::vector<float>& g, const std::vector<float>& t,
              const std::vector<float>& w, double eps, int64_t rows, int64_t n) {
  Ref r{std::vector<double>(rows * n), std::vector<double>(n, 0.0), std::vector<double>(n, 0.0),
        std::vector<double>(n, 0.0)};
  for (int64_t i = 0; i < rows; ++i) {
    const float* gi = g.data() + i * n;
    const float* ti = t.data() + i * n;
    double* gti = r.gt.data() + i * n;
    if (norm == Norm::nonorm) {
      for (int64_t c = 0; c < n; ++c) {
        gti[c] = static_cast<double>(gi[c]) * w[c];
        r.gw[c] += static_cast<double>(gi[c]) * ti[c];
      }
    } else {
      double mean = 0.0, var = 0.0;
      for (int64_t c = 0; c < n; ++c) mean += ti[c];
      mean /= n;
      for (int64_t c = 0; c < n; ++c) var += (ti[c] - mean) * (ti[c] - mean);
      const double rstd = 1.0 / std::sqrt(var / n + eps);
      // gt = rstd (gh - mean(gh) - t_hat mean(gh t_hat)), gh = g w.
      double m1 = 0.0, m2 = 0.0;
      for (int64_t c = 0; c < n; ++c) {
        const double th = (ti[c] - mean) * rstd, gh = static_cast<double>(gi[c]) * w[c];
        m1 += gh;
        m2 += gh * th;
        r.gw[c] += gi[c] * th;
      }
      m1 /= n;
      m2 /= n;
      for (int64_t c = 0; c < n; ++c) {
        const double th = (ti[c] - mean) * rstd, gh = static_cast<double>(gi[c]) * w[c];
        gti[c] = rstd * (gh - m1 - th * m2);
      }
    }
    for (int64_t c = 0; c < n; ++c) {
      r.gb[c] += gi[c];
      r.gsum[c] += gti[c];
    }
  }
  return r;
}

void test_case(Norm norm, int64_t rows, int64_t n, int threads, bool with_sum) {
  std::mt19937 rng(static_cast<unsigned>(rows * 1009 + n * 7 + threads + (norm == Norm::nonorm ? 0 : 50000)));
  const std::vector<float> g = random_vec(rows * n, rng, -1.0f, 1.0f), w = random_vec(n, rng, 0.5f, 1.5f);
  std::vector<float> t = random_vec(rows * n, rng, -2.0f, 2.0f);
  for (float& e : t) e += 3.0f;  // a mean far from 0, as real rows have
  const float eps = 1e-5f;
  std::vector<float> gt(rows * n), gw(n), gb(n), gsum(n);
  mbk::ops::norm_backward(norm, g.data(), t.data(), w.data(), eps, gt.data(), gw.data(), gb.data(),
                          with_sum ? gsum.data() : nullptr, rows, n, threads);
  const Ref r = reference(norm, g, t, w, eps, rows, n);
  const char* name = norm == Norm::nonorm ? "nonorm" : "layernorm";
  const std::string at = std::string(name) + " rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                         " threads=" + std::to_string(threads);
  double e = rel_err(gt, r.gt);
  CHECK(e <= kTol, "%s gt: rel err %.3g", at.c_str(), e);
  e = rel_err(gw, r.gw);
  CHECK(e <= kTol, "%s gw: rel err %.3g", at.c_str(), e);
  e = rel_err(gb, r.gb);
  CHECK(e <= kTol, "%s gb: rel err %.3g", at.c_str(), e);
  if (with_sum) {
    // gsum's reference magnitude: LayerNorm's column sums of gt cancel, so judge against sum |gt|.
    double num = 0.0, den = 0.0;
    for (int64_t c = 0; c < n; ++c) {
      double mag = 0.0;
      for (int64_t i = 0; i < rows; ++i) mag += std::fabs(r.gt[i * n + c]);
      num += (gsum[c] - r.gsum[c]) * (gsum[c] - r.gsum[c]);
      den += mag * mag;
    }
    e = std::sqrt(num / (den > 0.0 ? den : 1.0));
    CHECK(e <= kTol, "%s gsum: rel err %.3g", at.c_str(), e);
  }

  if (norm == Norm::layernorm) {
    // gt against a central finite difference of the double forward's L = sum g * y.
    const int64_t row = rows / 2;
    std::vector<double> trow(t.begin() + row * n, t.begin() + (row + 1) * n), y(n);
    double num = 0.0, den = 0.0;
    for (int64_t c = 0; c < n; ++c) {
      const double h = 1e-4, keep = trow[c];
      double lp = 0.0, lm = 0.0;
      trow[c] = keep + h;
      layernorm_row(trow.data(), w, eps, n, y.data());
      for (int64_t k = 0; k < n; ++k) lp += g[row * n + k] * y[k];
      trow[c] = keep - h;
      layernorm_row(trow.data(), w, eps, n, y.data());
      for (int64_t k = 0; k < n; ++k) lm += g[row * n + k] * y[k];
      trow[c] = keep;
      const double fd = (lp - lm) / (2 * h);
      num += (gt[row * n + c] - fd) * (gt[row * n + c] - fd);
      den += fd * fd;
    }
    e = std::sqrt(num / (den > 0.0 ? den : 1.0));
    CHECK(e <= 1e-4, "%s gt vs finite difference (row %lld): rel err %.3g", at.c_str(),
          static_cast<long long>(row), e);

    // LayerNorm's column sums do not depend on the thread count.
    std::vector<float> gt1(rows * n), gw1(n), gb1(n), gs1(n);
    mbk::ops::norm_backward(norm, g.data(), t.data(), w.data(), eps, gt1.data(), gw1.data(),
                            gb1.data(), gs1.data(), rows, n, 1);
    if (with_sum)
      CHECK(gw1 == gw && gb1 == gb && gs1 == gsum, "%s: column sums differ from 1 thread's", at.c_str());
    // gt may be t.
    std::vector<float> inplace = t;
    mbk::ops::norm_backward(norm, g.data(), inplace.data(), w.data(), eps, inplace.data(), gw1.data(),
                            gb1.data(), nullptr, rows, n, threads);
    CHECK(inplace == gt, "%s: gt written over t differs", at.c_str());
  }
}

}  // namespace

int main() {
  for (Norm norm : {Norm::nonorm, Norm::layernorm})
    for (int64_t rows : {1, 3, 64, 65, 200})
      for (int64_t n : {1, 7, 16, 37, 128, 513})
        for (int threads : {1, 2}) test_case(norm, rows, n, threads, (rows + n) % 2 == 0 || threads == 2);
  std::string what;
  try {
    float x = 0.0f;
    mbk::ops::norm_backward(Norm::none, &x, &x, &x, 1e-5f, &x, &x, &x, nullptr, 1, 1, 1);
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK(what.find("nonorm or layernorm") != std::string::npos, "Norm::none: got '%s'", what.c_str());
  return mbk::test::check_exit_code();
}
