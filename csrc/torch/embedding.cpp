// mbkernels_cpu::embedding_forward: the embedding op's fp32 forward from input_ids, without dropout,
// on csrc/core/ops/embedding.h (lookup + trigram, the transformation Linear on the packed GEMM with
// position + token type and the norm in its epilogue). inputs_embeds, a missing transformation and
// dropout run the reference inside mbkernels.ops.embedding.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "args.h"
#include "ops/embedding.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {
namespace {

constexpr const char* kOp = "embedding_forward";

at::Tensor ids(const at::Tensor& t, int64_t batch, int64_t seq, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && !t.is_floating_point() && !t.is_complex() &&
                  t.scalar_type() != at::kBool,
              "mbkernels_cpu::", kOp, ": ", name, " must be an integer CPU tensor, got ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == seq, "mbkernels_cpu::", kOp, ": ",
              name, " must have shape [", batch, ", ", seq, "], got ", t.sizes());
  return t.to(at::kLong).contiguous();
}

at::Tensor table(const at::Tensor& t, int64_t width, const char* name) {
  check_f32(t, kOp, name);
  TORCH_CHECK(t.dim() == 2 && (width < 0 || t.size(1) == width), "mbkernels_cpu::", kOp, ": ",
              name, " must be [rows, ", width < 0 ? "width" : std::to_string(width), "], got ",
              t.sizes());
  return t.contiguous();
}

at::Tensor embedding_forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids,
                             const at::Tensor& position_ids, const at::Tensor& word_embeddings,
                             const at::Tensor& transformation_weight,
                             const std::optional<at::Tensor>& transformation_bias,
                             const at::Tensor& position_embeddings,
                             const at::Tensor& token_type_embeddings,
                             const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                             bool trigram, c10::string_view norm, double eps) {
  TORCH_CHECK(input_ids.dim() == 2, "mbkernels_cpu::", kOp, ": input_ids must be [batch, seq], got ",
              input_ids.sizes());
  const int64_t batch = input_ids.size(0), seq = input_ids.size(1);
  const at::Tensor in = ids(input_ids, batch, seq, "input_ids");
  const at::Tensor types = ids(token_type_ids, batch, seq, "token_type_ids");
  const at::Tensor pos = ids(position_ids, batch, seq, "position_ids");
  const at::Tensor words = table(word_embeddings, -1, "word_embeddings");
  const int64_t e = words.size(1);
  check_linear_weight(transformation_weight, trigram ? 3 * e : e, kOp, "transformation_weight");
  const int64_t hidden = transformation_weight.size(0);
  if (transformation_bias.has_value())
    check_vector(*transformation_bias, hidden, kOp, "transformation_bias");
  const at::Tensor positions = table(position_embeddings, hidden, "position_embeddings");
  const at::Tensor type_table = table(token_type_embeddings, hidden, "token_type_embeddings");
  check_vector(norm_weight, hidden, kOp, "norm_weight");
  check_vector(norm_bias, hidden, kOp, "norm_bias");
  const at::Tensor nw = norm_weight.contiguous(), nb = norm_bias.contiguous();
  const auto packed = packed_weights(
      transformation_weight, transformation_bias.has_value() ? &*transformation_bias : nullptr);
  at::Tensor out = at::empty({batch, seq, hidden}, words.options());
  ops::EmbeddingArgs a;
  a.batch = batch;
  a.seq = seq;
  a.input_ids = in.const_data_ptr<int64_t>();
  a.token_type_ids = types.const_data_ptr<int64_t>();
  a.position_ids = pos.const_data_ptr<int64_t>();
  a.word_embeddings = words.const_data_ptr<float>();
  a.vocab = words.size(0);
  a.embedding_size = e;
  a.trigram = trigram;
  a.transformation = packed.get();
  a.position_embeddings = positions.const_data_ptr<float>();
  a.max_positions = positions.size(0);
  a.token_type_embeddings = type_table.const_data_ptr<float>();
  a.type_vocab = type_table.size(0);
  a.hidden = hidden;
  a.norm = parse_norm(norm, kOp);
  a.norm_weight = nw.const_data_ptr<float>();
  a.norm_bias = nb.const_data_ptr<float>();
  a.eps = static_cast<float>(eps);
  a.out = out.mutable_data_ptr<float>();
  a.ld_out = hidden;
  if (batch * seq == 0) return out;
  try {
    ops::embedding_forward(a, at::get_num_threads());
  } catch (const std::invalid_argument& err) {
    // An id out of range ("<ids> must be in [0, n)") is an IndexError, as in F.embedding.
    const std::string what = err.what();
    TORCH_CHECK_INDEX(what.find("must be in [0, ") == std::string::npos, "mbkernels_cpu::", what);
    TORCH_CHECK_VALUE(false, "mbkernels_cpu::", what);
  }
  return out;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "embedding_forward(Tensor input_ids, Tensor token_type_ids, Tensor position_ids, "
      "Tensor word_embeddings, Tensor transformation_weight, Tensor? transformation_bias, "
      "Tensor position_embeddings, Tensor token_type_embeddings, Tensor norm_weight, "
      "Tensor norm_bias, bool trigram, str norm, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("embedding_forward", &mbk::torch_cpu::embedding_forward);
}
