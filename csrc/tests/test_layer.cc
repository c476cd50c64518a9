// ops/layer.h against the separate core ops it composes: layer_forward and encoder_forward vs
// bottleneck_attention_forward -> ffn_stack_forward -> linear_norm_forward (residual: the layer's
// input) called one after another on the same random weights, in every attention mode, both norms,
// both activations, with and without the output bottleneck (the teacher's layer), odd sizes, a
// padding key mask, a caller's workspace or none, 1 and 2 threads. Also: the errors that name an
// inconsistent layer.
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "ops/bottleneck_attention.h"
#include "ops/ffn_stack.h"
#include "ops/layer.h"
#include "ops/linear_norm.h"

namespace {

using namespace mbk;
using ops::AttentionMode;

// The composition runs the same kernels in the same order, so it should agree bit for bit; the
// tolerance only allows for a different reduction order, never for a wrong composition.
constexpr double kTol = 1e-6;

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

// ||got - ref|| / ||ref||.
double rel_err(const float* got, const float* ref, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0.0 ? den : 1.0));
}

using Packed = std::unique_ptr<gemm::PackedWeights>;

Packed linear(int64_t n, int64_t k, std::mt19937& rng) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(k));
  const std::vector<float> w = random_vec(n * k, rng, -scale, scale), b = random_vec(n, rng, -0.1f, 0.1f);
  return std::make_unique<gemm::PackedWeights>(w.data(), k, 1, b.data(), n, k, active_isa());
}

// One layer's weights, owned, and the LayerWeights view on them.
struct Layer {
  Packed over_h, over_bottleneck, attention_output, output;
  std::vector<Packed> ffn_in, ffn_out;
  std::vector<std::vector<float>> vectors;  // norm weights and biases
  std::vector<ops::FfnWeights> ffns;
  ops::LayerWeights w{};
};

const float* norm_vector(Layer& L, int64_t n, std::mt19937& rng, bool weight) {
  L.vectors.push_back(weight ? random_vec(n, rng, 0.5f, 1.5f) : random_vec(n, rng, -0.2f, 0.2f));
  return L.vectors.back().data();
}

std::unique_ptr<Layer> make_layer(AttentionMode mode, gemm::Norm norm, gemm::Act act,
                                  bool bottleneck, int64_t hidden, int64_t width, int64_t heads,
                                  int64_t inter, int num_ffn, std::mt19937& rng) {
  auto L = std::make_unique<Layer>();
  L->vectors.reserve(16);
  const ops::ProjectionLayout P = ops::projection_layout(mode);
  L->over_h = linear(P.a_segments * width, hidden, rng);
  if (P.b_segments > 0) L->over_bottleneck = linear(P.b_segments * width, width, rng);
  L->attention_output = linear(width, width, rng);
  ops::BottleneckAttentionWeights& a = L->w.attention;
  a.mode = mode;
  a.over_h = L->over_h.get();
  a.over_bottleneck = L->over_bottleneck.get();
  a.output = L->attention_output.get();
  a.norm = norm;
  a.eps = 1e-5f;
  a.heads = heads;
  if (mode != AttentionMode::none) {
    a.input_norm_weight = norm_vector(*L, width, rng, true);
    a.input_norm_bias = norm_vector(*L, width, rng, false);
  }
  if (mode == AttentionMode::shared) {
    a.attention_norm_weight = norm_vector(*L, width, rng, true);
    a.attention_norm_bias = norm_vector(*L, width, rng, false);
  }
  a.output_norm_weight = norm_vector(*L, width, rng, true);
  a.output_norm_bias = norm_vector(*L, width, rng, false);
  for (int f = 0; f < num_ffn; ++f) {
    L->ffn_in.push_back(linear(inter, width, rng));
    L->ffn_out.push_back(linear(width, inter, rng));
    const float* nw = norm_vector(*L, width, rng, true);
    const float* nb = norm_vector(*L, width, rng, false);
    L->ffns.push_back({L->ffn_in.back().get(), L->ffn_out.back().get(), nw, nb,
                       f + 1 == num_ffn ? 1e-5f : 1e-12f});
  }
  L->w.ffns = L->ffns.data();
  L->w.ffn_count = num_ffn;
  L->w.act = act;
  if (bottleneck) {
    L->output = linear(hidden, width, rng);
    L->w.output = L->output.get();
    L->w.output_norm_weight = norm_vector(*L, hidden, rng, true);
    L->w.output_norm_bias = norm_vector(*L, hidden, rng, false);
  }
  L->w.eps = 1e-6f;
  return L;
}

// The layer as three separate op calls.
void reference_layer(const ops::LayerWeights& w, const float* h, float* out, int64_t batch,
                     int64_t seq, const uint8_t* mask, int threads) {
  const int64_t rows = batch * seq, width = w.attention.output->n(), hidden = w.attention.over_h->k();
  std::vector<float> a(rows * width), f(rows * width);
  ops::bottleneck_attention_forward(w.attention, h, hidden, batch, seq, mask, a.data(), nullptr, threads);
  if (w.output == nullptr) {
    ops::ffn_stack_forward(a.data(), width, rows, w.ffns, w.ffn_count, w.act, w.attention.norm, out,
                           hidden, threads);
    return;
  }
  ops::ffn_stack_forward(a.data(), width, rows, w.ffns, w.ffn_count, w.act, w.attention.norm,
                         f.data(), width, threads);
  ops::linear_norm_forward(f.data(), width, rows, *w.output, h, hidden, w.attention.norm,
                           w.output_norm_weight, w.output_norm_bias, w.eps, out, hidden, threads);
}

const char* mode_name(AttentionMode m) {
  switch (m) {
    case AttentionMode::shared: return "shared";
    case AttentionMode::bottleneck: return "bottleneck";
    case AttentionMode::full: return "full";
    case AttentionMode::none: return "none";
  }
  return "?";
}

void test_case(AttentionMode mode, gemm::Norm norm, gemm::Act act, bool bottleneck, int threads,
               bool own_workspace) {
  std::mt19937 rng(static_cast<unsigned>(static_cast<int>(mode) * 97 + static_cast<int>(norm) * 13 +
                                         static_cast<int>(act) * 5 + bottleneck * 3 + threads));
  // Odd sizes: hidden 37 (no vector multiple), width 24 over 3 heads of 8 (mode none and the
  // teacher layer: width = hidden = 36, 3 heads of 12), intermediate 29, sequences 7 and 3 long
  // in a batch padded to 7.
  const bool square = mode == AttentionMode::none || !bottleneck;
  const int64_t hidden = square ? 36 : 37, width = square ? 36 : 24, heads = 3, inter = 29;
  const int64_t batch = 2, seq = 7, rows = batch * seq;
  const int layers = 3, num_ffn = mode == AttentionMode::shared ? 4 : 2;
  std::vector<std::unique_ptr<Layer>> owned;
  std::vector<ops::LayerWeights> w;
  for (int l = 0; l < layers; ++l) {
    owned.push_back(make_layer(mode, norm, act, bottleneck, hidden, width, heads, inter, num_ffn, rng));
    w.push_back(owned.back()->w);
  }
  std::vector<uint8_t> mask(batch * seq, 1);
  for (int64_t s = 3; s < seq; ++s) mask[seq + s] = 0;
  const std::vector<float> h = random_vec(rows * hidden, rng, -2.0f, 2.0f);
  const std::string name = std::string(mode_name(mode)) + (norm == gemm::Norm::nonorm ? " nonorm" : " layernorm") +
                           (act == gemm::Act::relu ? " relu" : " gelu") +
                           (bottleneck ? "" : " no-bottleneck") + " threads=" + std::to_string(threads) +
                           (own_workspace ? " workspace" : "");

  // One layer.
  std::vector<float> ref(rows * hidden), got(rows * hidden, NAN);
  reference_layer(w[0], h.data(), ref.data(), batch, seq, mask.data(), threads);
  std::vector<float> ws;
  if (own_workspace) ws.assign(ops::layer_workspace_floats(w[0], batch, seq, threads), NAN);
  ops::layer_forward(w[0], h.data(), got.data(), batch, seq, mask.data(), threads,
                     own_workspace ? ws.data() : nullptr);
  double e = rel_err(got.data(), ref.data(), got.size());
  CHECK(e <= kTol, "layer_forward %s: rel err %.3g", name.c_str(), e);

  // The stack, in place; the reference ping-pongs through separate buffers.
  std::vector<float> x = h, y(rows * hidden);
  for (int l = 0; l < layers; ++l) {
    reference_layer(w[l], x.data(), y.data(), batch, seq, mask.data(), threads);
    std::swap(x, y);
  }
  std::vector<float> stack = h;
  if (own_workspace) ws.assign(ops::encoder_workspace_floats(w.data(), layers, batch, seq, threads), NAN);
  ops::encoder_forward(w.data(), layers, stack.data(), batch, seq, mask.data(), threads,
                       own_workspace ? ws.data() : nullptr);
  e = rel_err(stack.data(), x.data(), stack.size());
  CHECK(e <= kTol, "encoder_forward %s: rel err %.3g", name.c_str(), e);
  bool finite = true;
  for (float v : stack) finite = finite && std::isfinite(v);
  CHECK(finite, "encoder_forward %s: non-finite output", name.c_str());

  // Padded keys do not matter: changing h on the padded positions of sequence 1 leaves its
  // unpadded rows as they were.
  std::vector<float> h2 = h;
  for (int64_t s = 3; s < seq; ++s)
    for (int64_t c = 0; c < hidden; ++c) h2[(seq + s) * hidden + c] += 1.0f;
  ops::encoder_forward(w.data(), layers, h2.data(), batch, seq, mask.data(), threads);
  e = rel_err(h2.data() + seq * hidden, stack.data() + seq * hidden, 3 * hidden);
  CHECK(e <= kTol, "encoder_forward %s: padded keys change the unpadded rows (rel err %.3g)",
        name.c_str(), e);

  // Zero layers leave h alone.
  std::vector<float> same = h;
  ops::encoder_forward(w.data(), 0, same.data(), batch, seq, mask.data(), threads);
  CHECK(same == h, "encoder_forward %s: 0 layers changed h", name.c_str());
}

std::string error_of(void (*f)()) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

void test_errors() {
  std::mt19937 rng(7);
  static std::unique_ptr<Layer> L;
  L = make_layer(AttentionMode::shared, gemm::Norm::nonorm, gemm::Act::relu, true, 37, 24, 3, 29, 2, rng);
  static std::vector<float> h(2 * 37), out(2 * 37);
  const std::string wrong_output = error_of([] {
    ops::LayerWeights w = L->w;
    w.output = L->ffn_in[0].get();  // [29, 24], not [37, 24]
    ops::layer_forward(w, h.data(), out.data(), 1, 2, nullptr, 1);
  });
  CHECK(wrong_output.find("output bottleneck") != std::string::npos, "got '%s'", wrong_output.c_str());
  const std::string teacher = error_of([] {
    ops::LayerWeights w = L->w;
    w.output = nullptr;  // width 24 != hidden 37
    ops::layer_forward(w, h.data(), out.data(), 1, 2, nullptr, 1);
  });
  CHECK(teacher.find("must equal the hidden width") != std::string::npos, "got '%s'", teacher.c_str());
  const std::string no_ffn = error_of([] {
    ops::LayerWeights w = L->w;
    w.ffn_count = 0;
    ops::layer_forward(w, h.data(), out.data(), 1, 2, nullptr, 1);
  });
  CHECK(no_ffn.find("at least one FFN") != std::string::npos, "got '%s'", no_ffn.c_str());
  L.reset();
}

}  // namespace

int main() {
  for (AttentionMode mode : {AttentionMode::shared, AttentionMode::bottleneck, AttentionMode::full,
                             AttentionMode::none})
    for (gemm::Norm norm : {gemm::Norm::nonorm, gemm::Norm::layernorm})
      for (gemm::Act act : {gemm::Act::relu, gemm::Act::gelu})
        for (bool bottleneck : {true, false})
          for (int threads : {1, 2}) test_case(mode, norm, act, bottleneck, threads, threads == 2);
  test_errors();
  return mbk::test::check_exit_code();
}
