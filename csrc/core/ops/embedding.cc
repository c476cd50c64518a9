#include "ops/embedding.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ops/norm.h"
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
  if ((a.input_ids == nullptr) == (a.inputs_embeds == nullptr))
    fail("exactly one of input_ids and inputs_embeds must be given");
  if ((a.input_ids != nullptr && a.word_embeddings == nullptr) ||
      a.position_embeddings == nullptr || a.token_type_embeddings == nullptr || a.out == nullptr ||
      (a.norm != gemm::Norm::none && (a.norm_weight == nullptr || a.norm_bias == nullptr)))
    fail("word_embeddings (with input_ids), the position and type tables, the norm parameters "
         "and out must not be null");
  const int64_t in = a.trigram ? 3 * a.embedding_size : a.embedding_size;
  const char* what = a.trigram ? " (3 x embedding_size)" : " (embedding_size)";
  if (a.transformation != nullptr &&
      (a.transformation->k() != in || a.transformation->n() != a.hidden))
    fail("transformation must be [hidden=" + std::to_string(a.hidden) + ", " +
         std::to_string(in) + what + "], got [" + std::to_string(a.transformation->n()) + ", " +
         std::to_string(a.transformation->k()) + "]");
  if (a.transformation == nullptr && in != a.hidden)
    fail("without a transformation hidden must equal " + std::to_string(in) + what + ", got " +
         std::to_string(a.hidden));
  if (a.ld_out < a.hidden || (a.transformation == nullptr && a.ld_out != a.hidden))
    fail("ld_out must be " + std::string(a.transformation == nullptr ? "== " : ">= ") +
         "hidden (" + std::to_string(a.hidden) + "), got " + std::to_string(a.ld_out));
  const int64_t rows = a.batch * a.seq;
  if (a.input_ids != nullptr) check_ids("input_ids", a.input_ids, rows, a.seq, a.vocab);
  if (a.token_type_ids != nullptr) check_ids("token_type_ids", a.token_type_ids, rows, a.seq, a.type_vocab);
  if (a.position_ids != nullptr)
    check_ids("position_ids", a.position_ids, rows, a.seq, a.max_positions);
  else if (a.seq > a.max_positions)
    fail("seq must be <= max_positions (" + std::to_string(a.max_positions) + "), got " +
         std::to_string(a.seq));
  if (a.type_vocab < 1) fail("type_vocab must be >= 1");
}

// Source row of token r: the looked-up table row, or inputs_embeds row r.
const float* source_row(const EmbeddingArgs& a, int64_t r) {
  return a.input_ids != nullptr ? a.word_embeddings + a.input_ids[r] * a.embedding_size
                                : a.inputs_embeds + r * a.embedding_size;
}

// acc[0, n) += x[0, n) (the compiler vectorizes it; the adds are the gradients' few sums).
void add_row(float* acc, const float* x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += x[c];
}

// t = [next, cur, prev] (trigram) or [cur] rows of the source rows, zeros beyond the sequence's
// ends.
void gather(const EmbeddingArgs& a, float* t) {
  const int64_t rows = a.batch * a.seq, e = a.embedding_size, width = a.trigram ? 3 * e : e;
  const size_t row_bytes = static_cast<size_t>(e) * sizeof(float);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = r % a.seq;
    float* tr = t + r * width;
    const auto put = [&](float* dst, int64_t src_row, bool inside) {
      if (inside)
        std::memcpy(dst, source_row(a, src_row), row_bytes);
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
}

}  // namespace

size_t embedding_workspace_floats(const EmbeddingArgs& a) {
  return static_cast<size_t>(a.batch * a.seq * (a.trigram ? 3 : 1) * a.embedding_size);
}

void embedding_rows(const EmbeddingArgs& a, float* t) {
  check(a);
  gather(a, t);
}

void embedding_forward(const EmbeddingArgs& a, int num_threads, float* workspace) {
  check(a);
  const int64_t rows = a.batch * a.seq, hidden = a.hidden;
  if (rows == 0) return;
  float* t = workspace != nullptr ? workspace : thread_scratch(embedding_workspace_floats(a));
  gather(a, t);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = a.position_ids != nullptr ? a.position_ids[r] : r % a.seq;
    const float* pos = a.position_embeddings + p * hidden;
    const float* type = a.token_type_embeddings +
                        (a.token_type_ids != nullptr ? a.token_type_ids[r] : 0) * hidden;
    float* y = a.out + r * a.ld_out;
    for (int64_t c = 0; c < hidden; ++c) y[c] = pos[c] + type[c];
  }
  if (a.transformation == nullptr) {
    // y = N(t + y) in place (the norm kernels read each element of the residual y before
    // writing it); t keeps the Linear-less input rows.
    if (a.norm == gemm::Norm::none)
      add_row(a.out, t, rows * hidden);
    else
      norm_forward(a.norm, t, a.out, a.norm_weight, a.norm_bias, a.eps, a.out, rows, hidden,
                   num_threads);
    return;
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
  const int64_t width = a.trigram ? 3 * a.embedding_size : a.embedding_size;
  gemm::gemm(t, width, rows, *a.transformation, a.out, a.ld_out, ep, num_threads);
}

void trigram_backward(const float* dt, int64_t rows, int64_t seq, int64_t e, float* de) {
  const size_t row_bytes = static_cast<size_t>(e) * sizeof(float);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = r % seq;
    float* d = de + r * e;
    std::memcpy(d, dt + r * 3 * e + e, row_bytes);
    if (s > 0) add_row(d, dt + (r - 1) * 3 * e, e);
    if (s + 1 < seq) add_row(d, dt + (r + 1) * 3 * e + 2 * e, e);
  }
}

void scatter_add_rows(const float* src, int64_t ld_src, const int64_t* index, int64_t rows,
                      int64_t cols, int64_t skip, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    if (index[r] != skip) add_row(out + index[r] * cols, src + r * ld_src, cols);
}

}  // namespace mbk::ops
