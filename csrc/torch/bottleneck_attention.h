// The torch side of bottleneck_attention (bottleneck_attention.cpp), shared with the whole-layer
// op: the mode's weights checked, stacked and packed for csrc/core/ops/bottleneck_attention.h.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <vector>

#include "gemm/gemm.h"
#include "ops/bottleneck_attention.h"

namespace mbk::torch_cpu {

// The op's 18 weight arguments in schema order (None where the mode does not use one).
struct BottleneckAttentionTensors {
  const std::optional<at::Tensor>&input_weight, &input_bias, &input_norm_weight, &input_norm_bias;
  const std::optional<at::Tensor>&attention_weight, &attention_bias, &attention_norm_weight,
      &attention_norm_bias;
  const std::optional<at::Tensor>&query_weight, &query_bias, &key_weight, &key_bias;
  const std::optional<at::Tensor>&value_weight, &value_bias;
  const std::optional<at::Tensor>&output_weight, &output_bias, &output_norm_weight,
      &output_norm_bias;
};

// The core's weights plus what keeps their memory alive.
struct PackedBottleneckAttention {
  ops::BottleneckAttentionWeights weights{};
  int64_t width = 0;  // the output's width
  std::shared_ptr<const gemm::PackedWeights> over_h, over_bottleneck, output;
  std::vector<at::Tensor> keep;  // contiguous norm parameters
};

// Checks h [batch, seq, hidden] fp32 and the weights the mode needs (errors name op and argument).
PackedBottleneckAttention pack_bottleneck_attention(const at::Tensor& h,
                                                    const BottleneckAttentionTensors& t,
                                                    int64_t num_heads, c10::string_view mode,
                                                    c10::string_view norm, double eps,
                                                    const char* op);

// key_mask [batch, seq] bool or integer as contiguous bytes (nonzero = attend); undefined if None.
at::Tensor key_mask_bytes(const std::optional<at::Tensor>& key_mask, int64_t batch, int64_t seq,
                          const char* op);

}  // namespace mbk::torch_cpu
