// The C++ engine's readers on files written here: safetensors (F32, F16 and BF16 to fp32, shape
// and dtype checks, truncated and malformed files) and config.json (HF defaults, id2label, and
// the errors that name an unsupported field). The engine's numerics against the Python model are
// tested end to end by tests/test_cpp_engine.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "engine/config.h"
#include "engine/safetensors.h"

namespace {

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/mbk_test_engine_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file: header JSON, then the data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Runs f and returns the message of the std::exception it throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

void test_safetensors() {
  using mbk::engine::SafeTensors;
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  // 1.0, -2.5, 65504 (max half), 2^-24 (smallest subnormal half)
  const std::vector<uint16_t> f16 = {0x3c00, 0xc100, 0x7bff, 0x0001};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc020};  // 1.0, -2.5
  const std::string data = raw(f32) + raw(f16) + raw(bf16);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("h":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[32,36]},)"
      R"("i":{"dtype":"I64","shape":[0],"data_offsets":[36,36]}})";
  const std::string path = temp_path("ok.safetensors");
  write_file(path, safetensors_bytes(header, data));
  const SafeTensors st(path);
  CHECK(st.contains("a") && st.contains("h") && !st.contains("__metadata__"), "entries");
  CHECK(st.names().size() == 4, "4 tensors, got %zu", st.names().size());
  CHECK(st.get("a", {2, 3}) == f32, "F32 values round-trip");
  const std::vector<float> h = st.get("h", {4});
  CHECK(h[0] == 1.0f && h[1] == -2.5f && h[2] == 65504.0f && h[3] == std::ldexp(1.0f, -24),
        "F16 -> fp32: %g %g %g %g", h[0], h[1], h[2], h[3]);
  const std::vector<float> b = st.get("b", {2});
  CHECK(b[0] == 1.0f && b[1] == -2.5f, "BF16 -> fp32: %g %g", b[0], b[1]);
  std::string e = error_of([&] { st.get("a", {3, 2}); });
  CHECK(contains(e, "'a'") && contains(e, "[3, 2]") && contains(e, "[2, 3]"),
        "a wrong shape names the tensor, expected and actual: %s", e.c_str());
  e = error_of([&] { st.get("missing", {1}); });
  CHECK(contains(e, "'missing'"), "a missing tensor is named: %s", e.c_str());
  e = error_of([&] { st.get("i", {0}); });
  CHECK(contains(e, "I64"), "a non-float dtype is named: %s", e.c_str());

  write_file(path, safetensors_bytes(header, data.substr(0, 20)));  // data cut short
  e = error_of([&] { SafeTensors t(path); });
  CHECK(contains(e, "data_offsets"), "truncated data is refused: %s", e.c_str());
  write_file(path, safetensors_bytes("{not json", ""));
  e = error_of([&] { SafeTensors t(path); });
  CHECK(contains(e, "JSON"), "a malformed header is refused: %s", e.c_str());
  write_file(path, std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8));
  e = error_of([&] { SafeTensors t(path); });
  CHECK(contains(e, "header length"), "a header longer than the file is refused: %s", e.c_str());
  e = error_of([&] { SafeTensors t(temp_path("does_not_exist")); });
  CHECK(contains(e, "cannot open"), "a missing file is named: %s", e.c_str());

  // Headers that crashed the fuzz target (csrc/fuzz/corpus/fuzz_loaders/crash-*): sizes whose
  // product overflowed (and wrapped around to the byte count), floats where the header has integers
  // (nlohmann converts 1e300 with UB: build/asan aborts), a header or entry that is no object.
  const auto refused = [&](const std::string& header, const std::vector<int64_t>& shape,
                           const std::string& part) {
    write_file(path, safetensors_bytes(header, data));
    const std::string err = error_of([&] { SafeTensors(path).get("a", shape); });
    CHECK(contains(err, part), "header %s must be refused naming %s, got: %s", header.c_str(),
          part.c_str(), err.c_str());
  };
  // 2^62 * 4 elements of 4 bytes: 2^66 bytes, 0 modulo 2^64.
  refused(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})",
          {4611686018427387904, 4}, "'a': 0 bytes for shape");
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}})", {2}, "data_offsets");
  refused(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", {1}, "shape: expected integers");
  refused(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", {-1}, "shape: expected integers");
  refused(R"([{"dtype":"F32","shape":[1],"data_offsets":[0,4]}])", {1}, "header: expected a JSON object");
  refused(R"({"a":[1]})", {1}, "tensor 'a': expected an object");
  std::remove(path.c_str());
}

void test_config() {
  using mbk::engine::MobileBertConfig;
  const std::string path = temp_path("config.json");
  write_file(path, R"({"hidden_act": "gelu", "normalization_type": "layer_norm",
                       "use_bottleneck_attention": true, "id2label": {"0": "a", "1": "b", "2": "c"},
                       "pad_token_id": null, "architectures": ["MobileBertForSequenceClassification"]})");
  MobileBertConfig c = MobileBertConfig::from_json_file(path);
  CHECK(c.hidden_size == 512 && c.num_hidden_layers == 24 && c.vocab_size == 30522,
        "HF defaults for absent fields");
  CHECK(c.hidden_act == "gelu" && c.normalization_type == "layer_norm", "strings read");
  CHECK(c.attention_mode() == "bottleneck", "use_bottleneck_attention -> bottleneck mode");
  CHECK(c.num_labels == 3, "num_labels from id2label, got %lld", (long long)c.num_labels);
  CHECK(c.pad_token_id == 0 && c.architectures.size() == 1, "null pad_token_id keeps 0");

  const auto refused = [&](const std::string& json, const std::string& field) {
    write_file(path, json);
    const std::string e = error_of([&] { MobileBertConfig::from_json_file(path); });
    CHECK(contains(e, field), "config %s must be refused naming %s, got: %s", json.c_str(),
          field.c_str(), e.c_str());
  };
  refused(R"({"use_bottleneck": false})", "use_bottleneck");
  refused(R"({"hidden_act": "swish"})", "hidden_act");
  refused(R"({"normalization_type": "rms"})", "normalization_type");
  refused(R"({"num_attention_heads": 3})", "num_attention_heads");
  refused(R"({"hidden_size": "512"})", "hidden_size");
  refused(R"({"num_hidden_layers": 0})", "num_hidden_layers");
  refused("{", "not valid JSON");
  // Configs that crashed the fuzz target or loaded when they should not (corpus crash-*): 1e300
  // converted to int64 (UB: build/asan aborts), a value nested so deep that printing it for the
  // error overflowed the stack, and a config that is no object (it loaded as HF's defaults).
  refused(R"({"hidden_size": 1e300})", "hidden_size has the wrong type: expected an integer");
  refused(R"({"num_labels": 2.5})", "num_labels has the wrong type: expected an integer");
  refused(R"({"vocab_size": 18446744073709551615})", "vocab_size has the wrong type");
  refused(R"({"hidden_size": )" + std::string(200000, '[') + std::string(200000, ']') + "}",
          "hidden_size has the wrong type: expected an integer (int64), got an array");
  refused("[]", "expected a JSON object");
  std::remove(path.c_str());
}

}  // namespace

int main() {
  test_safetensors();
  test_config();
  return mbk::test::check_exit_code();
}
