#include "core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kiln {

namespace fs = std::filesystem;

void write_failed(const std::string& path, int err) {
  throw InternalError(fmt::format("cannot write {}: {}", path, std::strerror(err)));
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) input_error("{}: cannot read: it is a folder", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) input_error("{}: cannot read: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) input_error("{}: read failed: {}", path, std::strerror(errno));
  return ss.str();
}

void sync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, [&](const PutBytes& put) { put(bytes.data(), bytes.size()); });
}

void write_file_atomic(const std::string& path, const std::function<void(const PutBytes& put)>& fill) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) write_failed(path, errno);
  auto fail = [&](int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    write_failed(path, err);
  };
  const PutBytes put = [&](const void* data, size_t size) {
    const auto* p = static_cast<const char*>(data);
    for (size_t done = 0; done < size;) {
      ssize_t n = ::write(fd, p + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) write_failed(path, n < 0 ? errno : ENOSPC);  // the catch below removes the temporary
      done += size_t(n);
    }
  };
  try {
    fill(put);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0) fail(errno);
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    write_failed(path, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    write_failed(path, err);
  }
  sync_dir(fs::path(path).parent_path().string());
}

void write_dir_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill) {
  fs::path final_dir = fs::path(dir).lexically_normal();
  if (final_dir.filename().empty()) final_dir = final_dir.parent_path();  // "out/"
  fs::path parent = final_dir.parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) write_failed(parent.string(), ec.value());
  const fs::path tmp = parent / (final_dir.filename().string() + ".partial");
  fs::remove_all(tmp, ec);  // what an earlier, killed attempt left
  fs::create_directory(tmp, ec);
  if (ec) write_failed(tmp.string(), ec.value());
  try {
    fill(tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  sync_dir(tmp.string());
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    fs::remove_all(tmp, ec);
    write_failed(final_dir.string(), err);
  }
  sync_dir(parent.string());
}

}  // namespace kiln
