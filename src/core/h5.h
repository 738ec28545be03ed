// The few HDF5 pieces that data stores and checkpoints share: an id that closes itself, string
// attributes, 1-D arrays of native types, and HDF5's own error printing turned off (our errors name
// the file instead). Kept out of other headers: <hdf5.h> is only included by .cpp files.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace kiln::h5 {

struct WriteFailure : InternalError {
  WriteFailure(std::string what, int e) : InternalError(std::move(what)), err(e) {}
  int err;  // 0: HDF5 named no system error
};

struct Handle {  // closes an HDF5 id with the matching call
  hid_t id;
  herr_t (*close)(hid_t);
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id >= 0) close(id);
  }
};

// Turns off HDF5's error stack printing (once per process).
void quiet();

// An HDF5 file complete under `path` or absent: refused first when the file system has less free
// space than `bytes_hint` (what the datasets hold) plus a margin; then `fill` writes into
// <path>.tmp (made with the file-creation properties `fcpl`, H5P_DEFAULT for none), which is
// flushed, closed, fsynced and renamed. Any failure, a full disk included, removes the temporary
// and throws one line naming `path` and the system's reason (core/files.h write_failed), exit 1.
// `after_close` (optional) runs on the closed temporary before it is fsynced and renamed.
void write_atomic(const std::string& path, uint64_t bytes_hint, hid_t fcpl, const std::function<void(hid_t file)>& fill,
                  const std::function<void(const std::string& tmp)>& after_close = {});

// Sealed files (checkpoints): the HDF5 user block, the first kSealBytes bytes that HDF5 leaves to
// the application, holds "kiln-seal 1\nsha256 <hex>\n", the digest of every byte after it. Readers
// check it before the HDF5 library parses anything: HDF5 1.10 can crash on damaged metadata (found
// by fuzzing, tests/fuzz), and one digest over the whole file turns any damage into a clean error.
constexpr size_t kSealBytes = 512;
void write_sealed(const std::string& path, uint64_t bytes_hint, const std::function<void(hid_t file)>& fill);
// "" when the seal is there and matches; else what is wrong ("no seal", "truncated", a mismatch).
std::string seal_problem(const std::string& path);

// What `fill` throws when an HDF5 call fails: call it right after the failed call, while HDF5's
// error stack still holds the system's reason (errno), which write_atomic then reports.
[[noreturn]] void write_error(const std::string& what);

// Attribute `name` of `obj` as a NUL-padded fixed-length string. write: InternalError on failure.
void write_string_attr(hid_t obj, const char* name, const std::string& s);
// false when the attribute is missing or is not a readable string.
bool read_string_attr(hid_t obj, const char* name, std::string& out);

// Native memory type of T (int32, int64, uint8, float, double).
template <typename T>
hid_t native_type();

// Writes a 1-D dataset without timestamps (the same content gives the same bytes). InternalError
// naming `path` on failure.
void write_array(hid_t file, const std::string& name, hid_t type, const void* data, size_t n, const std::string& path);
// Reads a 1-D dataset into `out` (resized). InputError naming `path` when it is not 1-D or unreadable.
void read_array(hid_t file, const std::string& name, hid_t type, size_t elem_size, std::vector<char>& out,
                const std::string& path);

template <typename T>
void write_vector(hid_t file, const std::string& name, const std::vector<T>& v, const std::string& path) {
  write_array(file, name, native_type<T>(), v.data(), v.size(), path);
}

template <typename T>
std::vector<T> read_vector(hid_t file, const std::string& name, const std::string& path) {
  std::vector<char> bytes;
  read_array(file, name, native_type<T>(), sizeof(T), bytes, path);
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(v.data()));
  return v;
}

bool exists(hid_t loc, const std::string& name);

}  // namespace kiln::h5
