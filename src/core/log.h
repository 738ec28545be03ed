// Logging: spdlog underneath, rank 0 only unless --log-all-ranks. Every line carries a timestamp
// and, in multi-rank runs, the rank. Heavy headers stay out: callers use fmt-style formatting.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace kiln::log {

enum class Level { debug, info, warn, error };

// Call once after the rank is known. Ranks other than 0 log only warnings and errors unless all_ranks.
void setup(int rank, int world_size, bool all_ranks, Level level);
Level parse_level(const std::string& s);  // throws InputError naming the valid levels

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) { spdlog::debug(f, std::forward<Args>(a)...); }
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) { spdlog::info(f, std::forward<Args>(a)...); }
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) { spdlog::warn(f, std::forward<Args>(a)...); }
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... a) { spdlog::error(f, std::forward<Args>(a)...); }

}  // namespace kiln::log
