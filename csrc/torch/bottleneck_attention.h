// The torch side of bottleneck_attention (bottleneck_attention.cpp), shared with the whole-layer
// op: the mode's weights checked, stacked and packed for csrc/core/ops/bottleneck_attention.h.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <vector>

#include "gemm/gemm.h"
#include "dropout.h"
#include "ops/attention.h"
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

  // All 18 in schema order.
  std::vector<const std::optional<at::Tensor>*> all() const {
    return {&input_weight,     &input_bias,      &input_norm_weight,     &input_norm_bias,
            &attention_weight, &attention_bias,  &attention_norm_weight, &attention_norm_bias,
            &query_weight,     &query_bias,      &key_weight,            &key_bias,
            &value_weight,     &value_bias,      &output_weight,         &output_bias,
            &output_norm_weight, &output_norm_bias};
  }
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

// The dropout streams of reference.py (ATTN_STREAM, HIDDEN_STREAM).
constexpr uint32_t kAttnStream = 0, kHiddenStream = 1;

// The mask of one dropout site (inactive for p == 0); p > 0 needs a one-element integer seed.
DropoutMask dropout_of(double p, const std::optional<at::Tensor>& seed, uint32_t stream,
                       const char* op);

// t itself when its last dimension has unit stride, else a contiguous copy.
at::Tensor unit_last(const at::Tensor& t);

// The (batch, head, row) strides of a [B, H, S, D] tensor.
ops::HeadStrides head_strides(const at::Tensor& t);

// The attention op's checked operands (q, k, v [B, H, S, D] fp32) as the core's arguments, with
// what keeps their memory alive; ctx and scores are left for the caller.
struct AttentionOperands {
  at::Tensor q, k, v, mask;
  ops::AttentionArgs args;
};
AttentionOperands attention_operands(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const std::optional<at::Tensor>& key_mask, double dropout_p,
                                     const std::optional<at::Tensor>& seed, const char* op);

}  // namespace mbk::torch_cpu
