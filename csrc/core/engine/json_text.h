// What the engine's JSON readers (config.json, the safetensors header) print of a value in an error.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mbk::engine {

// Scalars as their JSON text; arrays and objects by their type only: their text could be the whole
// file, and nlohmann's dump recurses once per level of nesting (a deeply nested value in a
// malformed file would overflow the stack while its error is being written).
inline std::string describe(const nlohmann::json& v) {
  return v.is_structured() ? std::string("an ") + v.type_name() : v.dump();
}

}  // namespace mbk::engine
