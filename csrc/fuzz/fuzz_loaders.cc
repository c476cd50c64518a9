// libFuzzer target for the C++ engine's file loaders: config.json (MobileBertConfig), the
// safetensors reader and load_weights (fp32 and int8 checkpoints: I8 weights, weight_scale,
// input_smooth, quantization_config), through the MobileBert constructor mobilebert_run calls.
// An input is config.json + kSeparator + model.safetensors (loader_input.h); seeds:
// csrc/fuzz/corpus/fuzz_loaders (make_corpus.py), dictionary: fuzz_loaders.dict.
//
// A loader refusing an input with std::runtime_error / std::invalid_argument is the expected
// outcome; any crash, sanitizer report (built with ASan + UBSan, UB aborts), leak, hang, escaped
// exception of another type or allocation over -malloc_limit_mb is a bug. Build and run:
// docs/design.md "Testing rules" (CMake option MBK_FUZZ, clang only).
#include <cstdio>
#include <cstdlib>

#include "loader_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mbk::fuzz::TempFolder folder;
  const std::optional<std::string> error = mbk::fuzz::load(data, size, folder.path());
  // MBK_FUZZ_VERBOSE=1 with inputs named on the command line says what each one did.
  static const bool verbose = std::getenv("MBK_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::printf("%s\n", error ? ("refused: " + *error).c_str() : "loaded and ran");
  return 0;
}
