#include "loader_input.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include "engine/model.h"

namespace mbk::fuzz {
namespace {

// std::logic_error, not runtime_error: a harness that cannot write its files must not pass for a
// loader that refused them.
void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) throw std::logic_error("fuzz: cannot write '" + path + "'");
}

}  // namespace

TempFolder::TempFolder() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/mbk_fuzz_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr)
    throw std::logic_error("fuzz: cannot create a folder like '" + pattern + "'");
  path_ = pattern;
}

TempFolder::~TempFolder() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::optional<std::string> load(const uint8_t* data, size_t size, const std::string& folder) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t sep = input.find(kSeparator);
  const size_t config_size = sep == std::string_view::npos ? size : sep;
  const size_t weights_begin = sep == std::string_view::npos ? size : sep + std::strlen(kSeparator);
  write_file(folder + "/config.json", data, config_size);
  write_file(folder + "/model.safetensors", data + weights_begin, size - weights_begin);
  try {
    engine::MobileBert model(folder, {/*max_batch=*/1, /*max_seq=*/1, /*num_threads=*/1});
    // The last id and token type: the embedding tables' last rows are read too.
    const int64_t id = model.config().vocab_size - 1, type = model.config().type_vocab_size - 1;
    const uint8_t mask = 1;
    const engine::Batch batch{1, 1, &id, &type, &mask};
    model.encode(batch);
    if (model.has_mlm_head()) model.mlm_logits(batch);
    if (model.has_classifier()) model.sequence_logits(batch);
  } catch (const std::runtime_error& e) {
    return std::string(e.what());
  } catch (const std::invalid_argument& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

}  // namespace mbk::fuzz
