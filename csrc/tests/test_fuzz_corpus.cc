// The loaders fuzz target's committed corpus (csrc/fuzz/corpus/fuzz_loaders) through the target's
// own loading code (csrc/fuzz/loader_input.h), in every build ctest runs: each valid-* seed must
// load and run, else the fuzzer would only explore error paths; every other file (the malformed
// seeds and the fuzzer's minimized findings) must be refused with a message. Under build/asan a
// finding whose fix is undone crashes here again.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "loader_input.h"

int main() {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(MBK_FUZZ_CORPUS))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  const mbk::fuzz::TempFolder folder;
  int valid = 0;
  for (const fs::path& p : files) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    const std::optional<std::string> error = mbk::fuzz::load(bytes.data(), bytes.size(), folder.path());
    const std::string name = p.filename().string();
    std::printf("%s: %s\n", name.c_str(), error ? error->c_str() : "loaded and ran");
    if (name.rfind("valid-", 0) == 0) {
      ++valid;
      CHECK(!error, "seed %s must load: %s", name.c_str(), error->c_str());
    } else {
      CHECK(error && !error->empty(), "%s must be refused with a message", name.c_str());
    }
  }
  CHECK(valid >= 4, "the corpus %s must hold the valid-* seeds (fp32 and int8), found %d", MBK_FUZZ_CORPUS, valid);
  return mbk::test::check_exit_code();
}
