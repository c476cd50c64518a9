// mobilebert_run: MobileBERT inference in C++ alone (no torch, no Python) on a checkpoint folder
// that `save_pretrained` wrote. Reads a batch of token ids, runs the encoder and the checkpoint's
// head, prints a summary and optionally the latency, and writes the output as a .npy file.
//
//   mobilebert_run MODEL_DIR [--input FILE [--token-types FILE]] [--random B S]
//                  [--head auto|hidden|mlm|classify] [--output OUT.npy] [--threads N] [--isa NAME]
//                  [--repeat N]
//
// --input: one sequence per line, token ids separated by spaces; shorter lines are right-padded
// with pad_token_id and masked out. --token-types: the same layout, one segment id per token
// (default all 0). --random B S: B sequences of S random ids (for timing).
// --head auto picks the MLM head, else the classifier, else the last hidden state.
// --repeat N: time N more forwards after the first, print the median (ms).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "engine/model.h"

namespace {

struct Options {
  std::string model, input, token_types, head = "auto", output, isa;
  int64_t random_batch = 0, random_seq = 0;
  int threads = 1, repeat = 0;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "mobilebert_run: %s\nusage: mobilebert_run MODEL_DIR [--input FILE [--token-types FILE]] [--random B S] "
               "[--head auto|hidden|mlm|classify] [--output OUT.npy] [--threads N] [--isa NAME] "
               "[--repeat N]\n",
               why.c_str());
  std::exit(2);
}

int64_t to_int(const std::string& flag, const char* s) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0') usage(flag + " expects an integer, got '" + s + "'");
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> const char* {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--input") o.input = next();
    else if (a == "--token-types") o.token_types = next();
    else if (a == "--output") o.output = next();
    else if (a == "--head") o.head = next();
    else if (a == "--isa") o.isa = next();
    else if (a == "--threads") o.threads = static_cast<int>(to_int(a, next()));
    else if (a == "--repeat") o.repeat = static_cast<int>(to_int(a, next()));
    else if (a == "--random") {
      o.random_batch = to_int(a, next());
      o.random_seq = to_int(a, next());
    } else if (!a.empty() && a[0] == '-') usage("unknown option " + a);
    else if (o.model.empty()) o.model = a;
    else usage("unexpected argument " + a);
  }
  if (o.model.empty()) usage("MODEL_DIR is required");
  if (o.input.empty() == (o.random_batch == 0)) usage("give exactly one of --input and --random");
  if (!o.token_types.empty() && o.input.empty()) usage("--token-types needs --input");
  if (o.head != "auto" && o.head != "hidden" && o.head != "mlm" && o.head != "classify")
    usage("--head must be auto, hidden, mlm or classify, got " + o.head);
  return o;
}

// Token ids and token types, right-padded, and the mask.
struct Tokens {
  int64_t batch = 0, seq = 0;
  std::vector<int64_t> ids, types;  // types: empty without --token-types
  std::vector<uint8_t> mask;
};

// One row of integers per non-empty line of path.
std::vector<std::vector<int64_t>> read_rows(const std::string& flag, const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(flag + ": cannot open '" + path + "'");
  std::vector<std::vector<int64_t>> rows;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::vector<int64_t> row;
    int64_t id;
    while (ss >> id) row.push_back(id);
    if (!ss.eof())
      throw std::runtime_error(flag + ": line " + std::to_string(rows.size() + 1) +
                               " is not a list of integers");
    if (!row.empty()) rows.push_back(std::move(row));
  }
  if (rows.empty()) throw std::runtime_error(flag + ": '" + path + "' has no rows");
  return rows;
}

// rows right-padded with pad into a [rows, seq] matrix.
std::vector<int64_t> pad_rows(const std::vector<std::vector<int64_t>>& rows, int64_t seq,
                              int64_t pad) {
  std::vector<int64_t> out(rows.size() * seq, pad);
  for (size_t b = 0; b < rows.size(); ++b)
    std::copy(rows[b].begin(), rows[b].end(), out.begin() + b * seq);
  return out;
}

Tokens read_tokens(const Options& o, const mbk::engine::MobileBertConfig& c) {
  std::vector<std::vector<int64_t>> rows;
  if (!o.input.empty()) {
    rows = read_rows("--input", o.input);
  } else {
    std::mt19937_64 rng(0);
    std::uniform_int_distribution<int64_t> id(1, c.vocab_size - 1);
    rows.assign(o.random_batch, std::vector<int64_t>(o.random_seq));
    for (auto& r : rows)
      for (int64_t& t : r) t = id(rng);
  }
  Tokens t;
  t.batch = static_cast<int64_t>(rows.size());
  for (const auto& r : rows) t.seq = std::max<int64_t>(t.seq, r.size());
  t.ids = pad_rows(rows, t.seq, c.pad_token_id);
  t.mask.assign(t.batch * t.seq, 0);
  for (int64_t b = 0; b < t.batch; ++b)
    std::fill_n(t.mask.begin() + b * t.seq, rows[b].size(), uint8_t(1));
  if (!o.token_types.empty()) {
    const std::vector<std::vector<int64_t>> types = read_rows("--token-types", o.token_types);
    for (int64_t b = 0; b < t.batch; ++b)
      if (b >= static_cast<int64_t>(types.size()) || types[b].size() != rows[b].size())
        throw std::runtime_error("--token-types: line " + std::to_string(b + 1) +
                                 " must have as many entries as the same line of the ids");
    t.types = pad_rows(types, t.seq, 0);
  }
  return t;
}

// NumPy .npy v1.0, little-endian float32, C order.
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  size_t n = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ",";
    n *= static_cast<size_t>(d);
  }
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("--output: cannot write '" + path + "'");
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(reinterpret_cast<const char*>(magic), 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(len_le, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    if (!o.isa.empty()) mbk::set_isa(o.isa);
    const mbk::engine::MobileBertConfig cfg =
        mbk::engine::MobileBertConfig::from_json_file(o.model + "/config.json");
    const Tokens tok = read_tokens(o, cfg);
    const auto t_load = std::chrono::steady_clock::now();
    mbk::engine::MobileBert model(o.model, {tok.batch, tok.seq, o.threads});
    const double load_ms = std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - t_load).count();
    std::string head = o.head;
    if (head == "auto")
      head = model.has_mlm_head() ? "mlm" : model.has_classifier() ? "classify" : "hidden";
    std::printf("model: %s (%lld layers, hidden %lld, %s, %s), ISA %s, %d thread(s), load + pack "
                "%.1f ms, arena %.1f MiB\n",
                o.model.c_str(), (long long)cfg.num_hidden_layers, (long long)cfg.hidden_size,
                cfg.normalization_type.c_str(), cfg.attention_mode().c_str(),
                mbk::isa_name(mbk::active_isa()), o.threads, load_ms,
                model.arena_bytes() / 1048576.0);

    mbk::engine::Batch batch{tok.batch, tok.seq, tok.ids.data(),
                             tok.types.empty() ? nullptr : tok.types.data(), tok.mask.data()};
    const auto run = [&]() -> const float* {
      if (head == "mlm") return model.mlm_logits(batch);
      if (head == "classify") return model.sequence_logits(batch);
      return model.encode(batch);
    };
    const float* out = run();
    std::vector<int64_t> shape;
    if (head == "mlm") shape = {tok.batch, tok.seq, cfg.vocab_size};
    else if (head == "classify") shape = {tok.batch, cfg.num_labels};
    else shape = {tok.batch, tok.seq, cfg.hidden_size};
    const int64_t cols = shape.back();

    std::printf("head: %s, output [", head.c_str());
    for (size_t i = 0; i < shape.size(); ++i) std::printf(i ? ", %lld" : "%lld", (long long)shape[i]);
    std::printf("]\n");
    for (int64_t b = 0; b < tok.batch; ++b) {
      // Per sequence: the argmax of its first row (the label, or the MLM prediction at [CLS]).
      const float* row = out + (head == "classify" ? b : b * tok.seq) * cols;
      const int64_t best = std::max_element(row, row + cols) - row;
      std::printf("  sequence %lld: row 0 argmax %lld (%.6g), first values %.6g %.6g %.6g\n",
                  (long long)b, (long long)best, row[best], row[0], row[std::min<int64_t>(1, cols - 1)],
                  row[std::min<int64_t>(2, cols - 1)]);
    }
    if (!o.output.empty()) write_npy(o.output, out, shape);

    if (o.repeat > 0) {
      std::vector<double> ms;
      for (int i = 0; i < o.repeat; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      std::printf("latency: median %.3f ms, min %.3f ms over %d runs (batch %lld x seq %lld)\n",
                  ms[ms.size() / 2], ms.front(), o.repeat, (long long)tok.batch, (long long)tok.seq);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mobilebert_run: %s\n", e.what());
    return 1;
  }
  return 0;
}
