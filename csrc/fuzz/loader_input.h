// One fuzz input -> the C++ engine's real loading path. The engine reads a checkpoint folder
// (config.json + model.safetensors) by path and has no in-memory API, so an input carries both
// files, split at kSeparator, and is written into a folder before MobileBert (the constructor
// mobilebert_run calls: config, safetensors, load_weights' checks and packing, the arena) loads it.
// Shared by the libFuzzer target (fuzz_loaders.cc) and the corpus test (csrc/tests/test_fuzz_corpus.cc),
// so the committed seeds and findings run through exactly what the fuzzer ran.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace mbk::fuzz {

// Between config.json's bytes and model.safetensors's (input without it: config.json only and an
// empty model.safetensors). A newline-framed line a JSON config never holds and that mutations
// rarely make or break by accident.
inline constexpr char kSeparator[] = "\n--model.safetensors--\n";

// A fresh folder under $TMPDIR (default /tmp) for load()'s two files; removed with them when the
// process exits normally.
class TempFolder {
 public:
  TempFolder();
  ~TempFolder();
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes the input's two files into folder, loads them with engine::MobileBert (one sequence of one
// token, one thread) and, when that succeeds, runs the token through encode and each head the
// checkpoint has, so that weights a loader accepted are also read in full by the ops (ASan sees
// any tensor shorter than the ops take it to be). Returns nullopt when the model loaded and ran,
// else the message of the std::runtime_error / std::invalid_argument the engine threw: the
// expected outcome for a malformed folder. Any other exception propagates (std::bad_alloc,
// std::length_error, nlohmann's json::exception that no loader wrapped with its file name): for
// the fuzzer a crash, i.e. a bug.
std::optional<std::string> load(const uint8_t* data, size_t size, const std::string& folder);

}  // namespace mbk::fuzz
