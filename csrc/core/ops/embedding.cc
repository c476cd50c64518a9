#include "ops/embedding.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "scratch.h"

namespace mbk::ops {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("embedding_forward: " + what);
}

void check_ids(const char* name, const int64_t* ids, int64_t rows, int64_t seq, int64_t limit) {
  for (int64_t r = 0; r < rows; ++r)
    if (ids[r] < 0 || ids[r] >= limit)
      fail(std::string(name) + " must be in [0, " + std::to_string(limit) + "), got " +
           std::to_string(ids[r]) + " at [" + std::to_string(r / seq) + ", " +
           std::to_string(r % seq) + "]");
}

void check(const EmbeddingArgs& a) {
  if (a.batch < 0 || a.seq < 0) fail("batch and seq must be >= 0");
  if (a.input_ids == nullptr || a.word_embeddings == nullptr || a.position_embeddings == nullptr ||
      a.token_type_embeddings == nullptr || a.norm_weight == nullptr || a.norm_bias == nullptr ||
      a.out == nullptr || a.transformation == nullptr)
    fail("input_ids, the embedding tables, transformation, the norm parameters and out must "
         "not be null");
  const int64_t in = a.trigram ? 3 * a.embedding_size : a.embedding_size;
  if (a.transformation->k() != in || a.transformation->n() != a.hidden)
    fail("transformation must be [hidden=" + std::to_string(a.hidden) + ", " +
         std::to_string(in) + (a.trigram ? " (3 x embedding_size)" : " (embedding_size)") +
         "], got [" + std::to_string(a.transformation->n()) + ", " +
         std::to_string(a.transformation->k()) + "]");
  if (a.ld_out < a.hidden)
    fail("ld_out must be >= hidden (" + std::to_string(a.hidden) + "), got " +
         std::to_string(a.ld_out));
  if (a.norm != gemm::Norm::nonorm && a.norm != gemm::Norm::layernorm)
    fail("norm must be nonorm or layernorm");
  const int64_t rows = a.batch * a.seq;
  check_ids("input_ids", a.input_ids, rows, a.seq, a.vocab);
  if (a.token_type_ids != nullptr) check_ids("token_type_ids", a.token_type_ids, rows, a.seq, a.type_vocab);
  if (a.position_ids != nullptr)
    check_ids("position_ids", a.position_ids, rows, a.seq, a.max_positions);
  else if (a.seq > a.max_positions)
    fail("seq must be <= max_positions (" + std::to_string(a.max_positions) + "), got " +
         std::to_string(a.seq));
  if (a.type_vocab < 1) fail("type_vocab must be >= 1");
}

}  // namespace

size_t embedding_workspace_floats(const EmbeddingArgs& a) {
  return static_cast<size_t>(a.batch * a.seq * (a.trigram ? 3 : 1) * a.embedding_size);
}

void embedding_forward(const EmbeddingArgs& a, int num_threads, float* workspace) {
  check(a);
  const int64_t rows = a.batch * a.seq, e = a.embedding_size, hidden = a.hidden;
  if (rows == 0) return;
  const int64_t width = a.trigram ? 3 * e : e;
  float* t = workspace != nullptr ? workspace : thread_scratch(embedding_workspace_floats(a));
  const size_t row_bytes = static_cast<size_t>(e) * sizeof(float);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = r % a.seq;
    const float* pos = a.position_embeddings + (a.position_ids != nullptr ? a.position_ids[r] : s) * hidden;
    const float* type = a.token_type_embeddings +
                        (a.token_type_ids != nullptr ? a.token_type_ids[r] : 0) * hidden;
    float* y = a.out + r * a.ld_out;
    for (int64_t c = 0; c < hidden; ++c) y[c] = pos[c] + type[c];
    // [next, cur, prev] (trigram) or [cur]; zeros beyond the sequence's ends.
    float* tr = t + r * width;
    const auto put = [&](float* dst, int64_t src_row, bool inside) {
      if (inside)
        std::memcpy(dst, a.word_embeddings + a.input_ids[src_row] * e, row_bytes);
      else
        std::memset(dst, 0, row_bytes);
    };
    if (a.trigram) {
      put(tr, r + 1, s + 1 < a.seq);
      put(tr + e, r, true);
      put(tr + 2 * e, r - 1, s > 0);
    } else {
      put(tr, r, true);
    }
  }
  // y = N(t Wᵀ + bias + y): the position + type rows come back as the residual, read before
  // each element is written.
  gemm::Epilogue ep;
  ep.residual = a.out;
  ep.ld_residual = a.ld_out;
  ep.norm = a.norm;
  ep.norm_weight = a.norm_weight;
  ep.norm_bias = a.norm_bias;
  ep.eps = a.eps;
  gemm::gemm(t, width, rows, *a.transformation, a.out, a.ld_out, ep, num_threads);
}

}  // namespace mbk::ops
