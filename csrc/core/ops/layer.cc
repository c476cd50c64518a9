#include "ops/layer.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/linear_norm.h"

namespace mbk::ops {
namespace {

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

struct LayerSizes {
  int64_t rows, hidden, width;
  size_t attention_ws;  // floats
};

LayerSizes check(const LayerWeights& w, int64_t batch, int64_t seq, int num_threads) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("layer_forward: " + what); };
  LayerSizes s;
  // bottleneck_attention checks its own weights and the sizes.
  s.attention_ws = bottleneck_attention_workspace_floats(w.attention, batch, seq, num_threads);
  s.rows = batch * seq;
  s.hidden = w.attention.over_h->k();
  s.width = w.attention.output->n();
  if (w.ffn_count < 1 || w.ffns == nullptr) fail("a layer needs at least one FFN");
  if (w.output != nullptr) {
    if (w.output->k() != s.width || w.output->n() != s.hidden)
      fail("the output bottleneck must be [" + std::to_string(s.hidden) + ", " +
           std::to_string(s.width) + "], got [" + std::to_string(w.output->n()) + ", " +
           std::to_string(w.output->k()) + "]");
    if (w.output->isa() != w.attention.over_h->isa()) fail("weights packed for different ISAs");
    if (w.output_norm_weight == nullptr || w.output_norm_bias == nullptr)
      fail("the output bottleneck needs its norm weight and bias");
  } else if (s.width != s.hidden) {
    fail("without an output bottleneck the width (" + std::to_string(s.width) +
         ") must equal the hidden width (" + std::to_string(s.hidden) + ")");
  }
  // ffn_stack_forward checks the FFNs' widths against each other and the ISA; the stack's width
  // against the attention's here.
  for (int i = 0; i < w.ffn_count; ++i)
    if (w.ffns[i].intermediate == nullptr || w.ffns[i].output == nullptr ||
        w.ffns[i].intermediate->k() != s.width || w.ffns[i].output->n() != s.width)
      fail("FFN " + std::to_string(i) + " must map width " + std::to_string(s.width) + " to itself");
  return s;
}

size_t layer_floats(const LayerWeights& w, const LayerSizes& s) {
  // The attention's output, then the FFN stack's (when an output bottleneck follows it).
  return round16(static_cast<int64_t>(s.attention_ws)) + round16(s.rows * s.width) +
         (w.output != nullptr ? round16(s.rows * s.width) : 0);
}

// The workspace when the caller passes none. Not thread_scratch: the ops below use that one on
// the calling thread themselves.
float* own_workspace(size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats + 16) buffer.resize(floats + 16);
  float* p = buffer.data();
  return p + (16 - (reinterpret_cast<uintptr_t>(p) / sizeof(float)) % 16) % 16;
}

}  // namespace

size_t layer_workspace_floats(const LayerWeights& w, int64_t batch, int64_t seq, int num_threads) {
  return layer_floats(w, check(w, batch, seq, num_threads));
}

void layer_forward(const LayerWeights& w, const float* h, float* out, int64_t batch, int64_t seq,
                   const uint8_t* key_mask, int num_threads, float* workspace) {
  const LayerSizes s = check(w, batch, seq, num_threads);
  if (s.rows == 0) return;
  float* ws = workspace != nullptr ? workspace : own_workspace(layer_floats(w, s));
  float* attention_ws = ws;
  float* a = attention_ws + round16(static_cast<int64_t>(s.attention_ws));
  float* f = a + round16(s.rows * s.width);

  // The attention block: h [rows, hidden] -> a [rows, width].
  bottleneck_attention_forward(w.attention, h, s.hidden, batch, seq, key_mask, a, nullptr,
                               num_threads, attention_ws);
  // The FFN stack; without an output bottleneck its output is the layer's.
  const gemm::Norm norm = w.attention.norm;
  ffn_stack_forward(a, s.width, s.rows, w.ffns, w.ffn_count, w.act, norm,
                    w.output != nullptr ? f : out, w.output != nullptr ? s.width : s.hidden,
                    num_threads);
  if (w.output == nullptr) return;
  // The output bottleneck back to the hidden width, the layer's input as the residual.
  linear_norm_forward(f, s.width, s.rows, *w.output, h, s.hidden, norm, w.output_norm_weight,
                      w.output_norm_bias, w.eps, out, s.hidden, num_threads);
}

size_t encoder_workspace_floats(const LayerWeights* layers, int count, int64_t batch, int64_t seq,
                                int num_threads) {
  if (count < 0) throw std::invalid_argument("encoder_forward: count must be >= 0");
  size_t most = 0;
  int64_t hidden = 0;
  for (int l = 0; l < count; ++l) {
    most = std::max(most, layer_workspace_floats(layers[l], batch, seq, num_threads));
    hidden = layers[l].attention.over_h->k();
  }
  return count == 0 ? 0 : round16(batch * seq * hidden) + most;
}

void encoder_forward(const LayerWeights* layers, int count, float* h, int64_t batch, int64_t seq,
                     const uint8_t* key_mask, int num_threads, float* workspace) {
  const size_t floats = encoder_workspace_floats(layers, count, batch, seq, num_threads);
  if (count == 0 || batch * seq == 0) return;
  const int64_t hidden = layers[0].attention.over_h->k();
  for (int l = 1; l < count; ++l)
    if (layers[l].attention.over_h->k() != hidden)
      throw std::invalid_argument("encoder_forward: layer " + std::to_string(l) +
                                  " has another hidden width than layer 0");
  float* ws = workspace != nullptr ? workspace : own_workspace(floats);
  // The layers ping-pong between h and a buffer, so that no layer reads what it writes.
  float* other = ws;
  float* layer_ws = ws + round16(batch * seq * hidden);
  float* x = h;
  float* y = other;
  for (int l = 0; l < count; ++l) {
    layer_forward(layers[l], x, y, batch, seq, key_mask, num_threads, layer_ws);
    std::swap(x, y);
  }
  if (x != h) std::memcpy(h, x, static_cast<size_t>(batch * seq * hidden) * sizeof(float));
}

}  // namespace mbk::ops
