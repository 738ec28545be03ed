#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace kiln::log {

void setup(int rank, int world_size, bool all_ranks, Level level) {
  // stderr keeps stdout free for what verbs print as results (generate, version).
  auto logger = spdlog::get("kiln");
  if (!logger) logger = spdlog::stderr_color_mt("kiln");
  spdlog::set_default_logger(logger);
  std::string rank_tag = world_size > 1 ? fmt::format(" [rank {}]", rank) : "";
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$" + rank_tag + " %v");
  auto lv = level == Level::debug ? spdlog::level::debug
            : level == Level::info ? spdlog::level::info
            : level == Level::warn ? spdlog::level::warn
                                   : spdlog::level::err;
  // Other ranks still report their warnings and errors: a failure on rank 3 must not be silent.
  if (rank != 0 && !all_ranks && lv < spdlog::level::warn) lv = spdlog::level::warn;
  spdlog::set_level(lv);
  spdlog::flush_on(spdlog::level::info);
}

Level parse_level(const std::string& s) {
  if (s == "debug") return Level::debug;
  if (s == "info") return Level::info;
  if (s == "warn" || s == "warning") return Level::warn;
  if (s == "error") return Level::error;
  input_error("unknown log level `{}`: expected debug, info, warn or error", s);
}

}  // namespace kiln::log
