// The dropout hash (dropout.h) against values of mbkernels/ops/dropout.py's formula, the threshold
// edge, and every compiled-and-supported ISA's vector hash (VecF32::dropout_multiplier, through
// mbk::dropout_rows) against the scalar one, the element index wrapping modulo 2³² included.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <tuple>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "dropout.h"
#include "ops/attention.h"

namespace {

// (seed, stream, element index) → lowbias32(idx ^ key) and key, computed in Python with
// ops/dropout.py: key = _mix32((_mix32(seed & M32) ^ (stream * 0x9E3779B9)) & M32),
// hash = _mix32((idx & M32) ^ key).
struct Known {
  int64_t seed;
  uint32_t stream;
  uint64_t idx;
  uint32_t key, hash;
};
constexpr Known kKnown[] = {
    {0, 0, 0, 0x0u, 0x0u},
    {1, 0, 0, 0x58f54975u, 0x24009c6du},
    {12345, 0, 7, 0x8a2daf16u, 0xce40ef1fu},
    {12345, 1, 7, 0x98994ec4u, 0xd47a473au},
    {2147483646, 1, 123456789, 0x71bb2485u, 0xfe011be5u},
    {42, 0, 4294967301ull, 0x601bfb49u, 0x6fd914a0u},  // 2³² + 5: the same element as 5
    {42, 0, 5, 0x601bfb49u, 0x6fd914a0u},
};

// keep_mask((64,), p, seed=987, stream, 'cpu') from ops/dropout.py, '1' = kept.
constexpr const char* kMaskP01Stream0 =
    "1111101110111111101111101111111011110111101011111111111110111111";
constexpr const char* kMaskP05Stream1 =
    "1001100101001010110001110100110000000001100100010110101111110111";

void check_known() {
  for (const Known& k : kKnown) {
    const mbk::DropoutMask m = mbk::dropout_mask(0.5, k.seed, k.stream);
    CHECK(m.key == k.key, "seed %lld stream %u: key %08x, Python gives %08x", (long long)k.seed,
          k.stream, m.key, k.key);
    const uint32_t h = mbk::mix32(static_cast<uint32_t>(k.idx) ^ m.key);
    CHECK(h == k.hash, "seed %lld stream %u idx %llu: hash %08x, Python gives %08x",
          (long long)k.seed, k.stream, (unsigned long long)k.idx, h, k.hash);
  }
  // Thresholds: int(p * 2**32) capped at 2**32 - 1.
  CHECK(mbk::dropout_mask(0.1, 1, 0).threshold == 0x19999999u, "p=0.1 threshold");
  CHECK(mbk::dropout_mask(0.5, 1, 0).threshold == 0x80000000u, "p=0.5 threshold");
  CHECK(mbk::dropout_mask(0.999999999999, 1, 0).threshold == 0xFFFFFFFFu, "p→1 threshold capped");
  CHECK(!mbk::dropout_mask(0.0, 1, 0).active && mbk::dropout_keep(mbk::dropout_mask(0.0, 1, 0), 0),
        "p=0 keeps everything");
  CHECK(mbk::dropout_mask(0.1, 1, 0).scale == static_cast<float>(1.0 / 0.9), "scale 1/(1-p)");
  // The edge: hash == threshold is kept (>=), one above is dropped. (12345, 0, 7) hashes to
  // 0xce40ef1f; p = that / 2³² gives exactly that threshold.
  const double p_at = double(0xce40ef1fu) / 4294967296.0, p_above = double(0xce40ef20u) / 4294967296.0;
  CHECK(mbk::dropout_mask(p_at, 12345, 0).threshold == 0xce40ef1fu, "threshold from p exact");
  CHECK(mbk::dropout_keep(mbk::dropout_mask(p_at, 12345, 0), 7), "hash == threshold is kept");
  CHECK(!mbk::dropout_keep(mbk::dropout_mask(p_above, 12345, 0), 7), "hash < threshold is dropped");
  for (const auto& [p, stream, expect] :
       {std::make_tuple(0.1, 0u, kMaskP01Stream0), std::make_tuple(0.5, 1u, kMaskP05Stream1)}) {
    const mbk::DropoutMask m = mbk::dropout_mask(p, 987, stream);
    for (int i = 0; i < 64; ++i)
      CHECK(mbk::dropout_keep(m, i) == (expect[i] == '1'), "seed 987 p %.1f stream %u element %d",
            p, stream, i);
  }
}

// dropout_rows on each ISA vs dropout_factor, rows with tails, a first index near 2³² (wraps).
void check_vector_hash() {
  const int64_t rows = 5, cols = 37, ld = 41;
  const mbk::DropoutMask m = mbk::dropout_mask(0.3, 777, 1);
  for (uint64_t first : {uint64_t{0}, uint64_t{4294967296ull - 100}}) {
    std::vector<float> x(rows * ld), res(rows * ld);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 1.0f + 0.01f * float(i), res[i] = -0.5f * float(i);
    for (mbk::Isa isa : mbk::supported_isas()) {
      mbk::set_isa(isa);
      for (bool with_res : {false, true}) {
        std::vector<float> y = x;
        mbk::dropout_rows(y.data(), ld, rows, cols, m, first, with_res ? res.data() : nullptr,
                               ld, 2);
        int64_t bad = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < ld; ++c) {
            const size_t i = r * ld + c;
            if (c >= cols) {  // past the columns: untouched
              bad += y[i] != x[i];
              continue;
            }
            // Without a residual bit for bit; with one the ISA may fuse the multiply-add.
            const double xf = double(x[i]) * mbk::dropout_factor(m, first + r * cols + c);
            const double want = xf + (with_res ? res[i] : 0.0f);
            const double tol = with_res ? 1e-6 * (std::fabs(xf) + std::fabs(res[i])) : 0.0;
            bad += !(std::fabs(y[i] - want) <= tol) && y[i] != float(want);
          }
        CHECK(bad == 0, "%s: dropout_rows differs from the scalar hash in %lld elements "
              "(first=%llu residual=%d)", mbk::isa_name(isa), (long long)bad,
              (unsigned long long)first, int(with_res));
      }
    }
  }
}

}  // namespace

int main() {
  check_known();
  check_vector_hash();
  return mbk::test::check_exit_code();
}
